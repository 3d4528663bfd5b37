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
    for section in (
        "bot",
        "grammar",
        "quota",
        "jobs",
        "images",
        "actions",
        "web",
        "slack",
        "discord",
    ):
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
        ('[quota]\nuser_daily = "ten"\n', "quota.user_daily must be a whole number"),
        ('[quota]\ntimezone = "Mars/Olympus"\n', "quota.timezone"),
        ("[grammar]\nmax_images = 50\n", "grammar.max_images"),
        ("[web]\nport = 70000\n", "web.port"),
        ("[nonsense]\nx = 1\n", "Unknown config section [nonsense]"),
        ('[bot]\nadmins = ["alice"]\n', "bot.admins"),
        ("not toml at all [", "not valid TOML"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_settings(path, env={})


def test_env_overrides_and_types(tmp_path: Path) -> None:
    s = load_settings(
        None,
        env={
            "IMAGINE_QUOTA__USER_DAILY": "7",
            "IMAGINE_BOT__DATA_DIR": "/srv/imagine data",
            "IMAGINE_WEB__CHANNELS": '["a", "b"]',
            "IMAGINE_PROVIDERS__OFFLINE__LATENCY_MS": "25",
        },
    )
    assert s.quota.user_daily == 7
    assert s.data_dir == Path("/srv/imagine data")
    assert s.web.channels == ("a", "b")
    assert s.providers.sections["offline"]["latency_ms"] == 25


def test_secrets_never_appear_in_repr() -> None:
    s = load_settings(
        None,
        env={"STABILITY_API_KEY": "sk-SENTINEL-123456", "WEB_ACCESS_TOKEN": "tok-SENTINEL-654321"},
    )
    assert s.web.access_token == "tok-SENTINEL-654321"
    assert s.secret("STABILITY_API_KEY") == "sk-SENTINEL-123456"
    text = repr(s) + str(s) + repr(s.web)
    assert "SENTINEL" not in text


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.quota = None  # type: ignore[misc]


# ------------------------------------------------------------- unknown settings name their source
def _error(path: Path | None = None, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path, env=env or {})
    return str(info.value)


def test_a_misspelt_env_setting_names_the_variable_and_the_real_key() -> None:
    message = _error(env={"IMAGINE_QUOTA__USER_DAYLY": "5"})
    assert message.startswith(
        "Unknown setting quota.user_dayly (from the environment variable "
        "IMAGINE_QUOTA__USER_DAYLY). Did you mean quota.user_daily (IMAGINE_QUOTA__USER_DAILY)?"
    ), message
    assert "Known keys in [quota]: exempt_admins, roles," in message


def test_a_misspelt_file_setting_names_the_file_and_the_table(tmp_path: Path) -> None:
    path = tmp_path / "imagine.toml"
    path.write_text("[quota]\nuser_daily = 5\nuser_dayly = 5\n")
    message = _error(path)
    assert message.startswith(
        f"Unknown setting quota.user_dayly (in {path}: [quota] user_dayly). "
        "Did you mean quota.user_daily?"
    ), message


def test_a_file_setting_overridden_by_the_env_blames_the_env(tmp_path: Path) -> None:
    path = tmp_path / "imagine.toml"
    path.write_text("[web]\nport = 9000\n")
    message = _error(path, env={"IMAGINE_WEB__PORT": "70000"})
    assert message == (
        "Setting web.port must be 1..65535 (from the environment variable IMAGINE_WEB__PORT)."
    )
    path.write_text("[web]\nport = 70000\n")
    assert f"(in {path}: [web] port)" in _error(path)


@pytest.mark.parametrize(
    ("env", "start"),
    [
        (
            {"IMAGINE_QUTOA__USER_DAILY": "5"},
            "Unknown config section [qutoa] (from the environment variable "
            "IMAGINE_QUTOA__USER_DAILY). Did you mean [quota] (IMAGINE_QUOTA__USER_DAILY)? "
            "Known sections: actions, bot,",
        ),
        (
            {"IMAGINE_PROVIDERS__STABILTY__MODEL": "core"},
            "Unknown config section [providers.stabilty] (from the environment variable "
            "IMAGINE_PROVIDERS__STABILTY__MODEL). Did you mean [providers.stability] "
            "(IMAGINE_PROVIDERS__STABILITY__MODEL)? Known providers: automatic1111,",
        ),
        (
            {"IMAGINE_PROVIDERS__STABILITY__MODLE": "core"},
            "Unknown setting providers.stability.modle (from the environment variable "
            "IMAGINE_PROVIDERS__STABILITY__MODLE). Did you mean providers.stability.model "
            "(IMAGINE_PROVIDERS__STABILITY__MODEL)? Known keys in [providers.stability]:",
        ),
        (
            {"IMAGINE_PROVIDERS__OFFLINE__LATENCY": "5"},
            "Unknown setting providers.offline.latency (from the environment variable "
            "IMAGINE_PROVIDERS__OFFLINE__LATENCY). Did you mean providers.offline.latency_ms "
            "(IMAGINE_PROVIDERS__OFFLINE__LATENCY_MS)? Known keys in [providers.offline]: "
            "concurrency, latency_ms, max_n_per_call.",
        ),
        (
            {"IMAGINE_PROVIDERS__DEFUALT": "offline"},
            "Unknown setting providers.defualt (from the environment variable "
            "IMAGINE_PROVIDERS__DEFUALT). Did you mean providers.default "
            "(IMAGINE_PROVIDERS__DEFAULT)?",
        ),
        (
            {"IMAGINE_QUOTA__USER_DAILY": "ten"},
            "Setting quota.user_daily must be a whole number (got 'ten', from the environment "
            "variable IMAGINE_QUOTA__USER_DAILY).",
        ),
        (
            {"IMAGINE_ZZZ__Y": "1"},
            "Unknown config section [zzz] (from the environment variable IMAGINE_ZZZ__Y). "
            "Known sections:",
        ),
        (
            {"IMAGINE_QUOTA____USER_DAILY": "1"},
            "Environment variable IMAGINE_QUOTA____USER_DAILY is not IMAGINE_<SECTION>__<KEY>",
        ),
    ],
)
def test_env_mistakes_name_the_variable(env: dict[str, str], start: str) -> None:
    message = _error(env=env)
    assert message.startswith(start), message


@pytest.mark.parametrize(
    ("toml", "start"),
    [
        (
            "[qutoa]\nuser_daily = 5\n",
            "Unknown config section [qutoa] (in {path}: [qutoa] user_daily). Did you mean [quota]?",
        ),
        (
            "[nonsense]\n",
            "Unknown config section [nonsense] (in {path}: top-level nonsense). Known sections:",
        ),
        (
            '[providers.comfyu]\nworkflow = "w.json"\n',
            "Unknown config section [providers.comfyu] (in {path}: [providers.comfyu] workflow). "
            "Did you mean [providers.comfyui]?",
        ),
        (
            '[providers.stability]\nmodle = "core"\n',
            "Unknown setting providers.stability.modle (in {path}: [providers.stability] modle). "
            "Did you mean providers.stability.model? Known keys in [providers.stability]: "
            "accept_json, base_url, breaker_reset_s,",
        ),
        (
            "[providers.openai]\ntimeout = 5\n",
            "Unknown setting providers.openai.timeout (in {path}: [providers.openai] timeout). "
            "Did you mean providers.openai.timeout_s?",
        ),
        (
            "[providers]\nstability = 1\n",
            "Setting providers.stability must be a table (in {path}: [providers] stability).",
        ),
        (
            "[grammar]\nmax_imagse = 4\n[quota]\nuser_daily = 1\n",
            "Unknown setting grammar.max_imagse (in {path}: [grammar] max_imagse). "
            "Did you mean grammar.max_images?",
        ),
        ("[jobs]\nzzz = 1\n", "Unknown setting jobs.zzz (in {path}: [jobs] zzz). Known keys"),
    ],
)
def test_file_mistakes_name_the_file_and_table(tmp_path: Path, toml: str, start: str) -> None:
    path = tmp_path / "imagine.toml"
    path.write_text(toml)
    message = _error(path)
    assert message.startswith(start.format(path=path)), message
    assert "Did you mean" not in message or "?" in message


def test_a_token_is_never_echoed_in_a_message(tmp_path: Path) -> None:
    # From the environment, a token of digits is text, not a number: it is kept as typed.
    s = load_settings(None, env={"IMAGINE_WEB__ACCESS_TOKEN": "12345678901234"})
    assert s.web.access_token == "12345678901234"
    # From a file, a number is refused, without printing it back.
    path = tmp_path / "imagine.toml"
    path.write_text("[web]\naccess_token = 12345678901234\n")
    message = _error(path)
    assert message == (f"Setting web.access_token must be text (in {path}: [web] access_token).")
    assert "12345678901234" not in message


def test_env_text_settings_keep_their_text() -> None:
    s = load_settings(
        None,
        env={
            "IMAGINE_BOT__DATA_DIR": "2026",
            "IMAGINE_QUOTA__TIMEZONE": "UTC",
            "IMAGINE_WEB__HOST": "0.0.0.0",
        },
    )
    assert s.bot.data_dir == "2026"
    assert s.web.host == "0.0.0.0"
