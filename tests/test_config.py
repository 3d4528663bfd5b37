"""Settings: embedded defaults, the shipped TOML, env overrides, clear errors, no secret leaks."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from bot.config import Settings, load_settings
from bot.errors import ConfigError
from tests.conftest import REPO


def test_shipped_default_toml_matches_the_embedded_defaults() -> None:
    from_file = load_settings(REPO / "config" / "default.toml", env={})
    embedded = load_settings(None, env={})
    for section in ("bot", "grammar", "quota", "jobs", "images", "actions", "web"):
        assert getattr(from_file, section) == getattr(embedded, section), section
    assert from_file.providers.default == embedded.providers.default == "auto"


def test_every_setting_in_default_toml_is_commented() -> None:
    lines = (REPO / "config" / "default.toml").read_text().splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.lstrip().startswith("#"):
            above = lines[i - 1].strip()
            assert above.startswith(("#", "[")) or "=" in above, f"uncommented: {line}"
    tomllib.loads("\n".join(lines))


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[quota]\nuser_daly = 5\n", "Unknown setting quota.user_daly"),
        ("[quota]\nuser_daily = \"ten\"\n", "quota.user_daily must be a whole number"),
        ("[quota]\ntimezone = \"Mars/Olympus\"\n", "quota.timezone"),
        ("[grammar]\nmax_images = 50\n", "grammar.max_images"),
        ("[web]\nport = 70000\n", "web.port"),
        ("[nonsense]\nx = 1\n", "Unknown config section [nonsense]"),
        ("[bot]\nadmins = [\"alice\"]\n", "bot.admins"),
        ("not toml at all [", "not valid TOML"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_settings(path, env={})


def test_env_overrides_and_types(tmp_path: Path) -> None:
    s = load_settings(None, env={"IMAGINE_QUOTA__USER_DAILY": "7",
                                 "IMAGINE_BOT__DATA_DIR": "/srv/imagine data",
                                 "IMAGINE_WEB__CHANNELS": '["a", "b"]',
                                 "IMAGINE_PROVIDERS__OFFLINE__LATENCY_MS": "25"})
    assert s.quota.user_daily == 7
    assert s.data_dir == Path("/srv/imagine data")
    assert s.web.channels == ("a", "b")
    assert s.providers.sections["offline"]["latency_ms"] == 25


def test_secrets_never_appear_in_repr() -> None:
    s = load_settings(None, env={"STABILITY_API_KEY": "sk-SENTINEL-123456",
                                 "WEB_ACCESS_TOKEN": "tok-SENTINEL-654321"})
    assert s.web.access_token == "tok-SENTINEL-654321"
    assert s.secret("STABILITY_API_KEY") == "sk-SENTINEL-123456"
    text = repr(s) + str(s) + repr(s.web)
    assert "SENTINEL" not in text


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.quota = None  # type: ignore[misc]
