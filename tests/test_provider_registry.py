"""Provider registry: names, the default choice, building from config sections."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.providers.registry import PROVIDER_NAMES, build_provider, default_provider_name
from tests.fakes.comfyui import TXT2IMG_WORKFLOW


def test_default_provider_name() -> None:
    assert default_provider_name({}, "auto") == "offline"
    assert default_provider_name({"STABILITY_API_KEY": "sk-x"}, "auto") == "stability"
    assert default_provider_name({"STABILITY_API_KEY": "sk-x"}, "automatic1111") == "automatic1111"
    assert default_provider_name({"STABILITY_API_KEY": " "}, "auto") == "offline"


async def test_build_each_remote_provider(tmp_path: Path) -> None:
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(TXT2IMG_WORKFLOW))
    env = {"STABILITY_API_KEY": "sk-a", "OPENAI_API_KEY": "sk-b", "CEREBRIUM_API_KEY": "c"}
    sections: dict[str, dict[str, object]] = {
        "stability": {},
        "automatic1111": {},
        "openai": {},
        "cerebrium": {"url": "https://api.aws.us-east-1.cerebrium.ai/v4/p-1/app/predict"},
        "comfyui": {"workflow": str(wf)},
        "horde": {},
    }
    for name, section in sections.items():
        provider = build_provider(name, section, env)
        assert provider.name == name and provider.capabilities.max_n_per_call >= 1
        await provider.aclose()
    assert set(sections) | {"offline"} == set(PROVIDER_NAMES)


def test_unknown_and_missing_key() -> None:
    with pytest.raises(ConfigError, match="unknown provider"):
        build_provider("midjourney", {}, {})
    with pytest.raises(ConfigError, match="STABILITY_API_KEY"):
        build_provider("stability", {}, {})


@pytest.mark.parametrize(
    ("name", "section"),
    [
        ("stability", {"modle": "core"}),
        ("automatic1111", {"samplr": "Euler"}),
        ("openai", {"qualty": "high"}),
        (
            "cerebrium",
            {"url": "https://api.aws.us-east-1.cerebrium.ai/v4/p-1/app/predict", "img2imgurl": "x"},
        ),
        ("comfyui", {"workflow": "wf.json", "timeout": 3}),
        ("horde", {"model": "Deliberate"}),
    ],
)
def test_a_typo_in_a_provider_table_names_the_key(name: str, section: dict[str, object]) -> None:
    env = {"STABILITY_API_KEY": "sk-a", "OPENAI_API_KEY": "sk-b"}
    typo = next(k for k in section if k not in ("url", "workflow"))
    with pytest.raises(ConfigError, match=f"providers.{name}.{typo}"):
        build_provider(name, section, env)


def test_shared_http_keys_are_accepted_by_every_remote_provider() -> None:
    env = {"STABILITY_API_KEY": "sk-a", "OPENAI_API_KEY": "sk-b"}
    for name in ("stability", "automatic1111", "openai"):
        assert build_provider(name, {"deadline_s": 30, "breaker_threshold": 3}, env).name == name


def test_every_provider_setting_is_documented_in_default_toml() -> None:
    import importlib

    from bot.providers.http import POLICY_KEYS
    from tests.conftest import REPO

    text = (REPO / "config" / "default.toml").read_text()
    for key in POLICY_KEYS:
        assert f"{key} =" in text, key
    for name in PROVIDER_NAMES:
        if name == "offline":
            continue
        module = importlib.import_module(f"bot.providers.{name}")
        start = text.index(f"# [providers.{name}]")
        end = text.find("# [providers.", start + 1)
        section = text[start : end if end != -1 else len(text)]
        for key in module.SETTING_KEYS - {"base_url"}:
            assert f"# {key} =" in section, f"providers.{name}.{key}"


@pytest.mark.parametrize(("default", "fallback"), [("openai", ""), ("offline", "openai")])
async def test_the_hub_collects_start_up_warnings(default: str, fallback: str) -> None:
    from bot.config import ProviderSettings
    from bot.providers.hub import ProviderHub
    from tests.fakes.openai import OpenAIFake

    async with OpenAIFake(api_key="sk-x") as fake:
        fake.shutdown_dates["gpt-image-2.6-flare"] = "2027-06-01"
        settings = ProviderSettings(default=default, fallback=fallback, sections={"openai": {}})
        env = {"OPENAI_API_KEY": "sk-x", "OPENAI_API_BASE_URL": fake.api_url}
        async with ProviderHub.open(settings, env) as hub:
            [warning] = hub.warnings()
    assert warning.startswith("openai: ") and "2027-06-01" in warning


async def test_build_each_reports_a_missing_key_and_builds_the_rest() -> None:
    from bot.providers.registry import ENV_SETTINGS, build_each

    built = build_each("openai", "horde", {"automatic1111": {}}, {})
    names = [n for n, _ in built]
    assert names == ["openai", "horde", "automatic1111"]
    assert isinstance(built[0][1], ConfigError) and "OPENAI_API_KEY" in str(built[0][1])
    for _, provider in built[1:]:
        assert not isinstance(provider, ConfigError)
        await provider.aclose()
    assert set(ENV_SETTINGS) == set(PROVIDER_NAMES)
    assert ("AUTOMATIC1111_BASE_URL", False) in ENV_SETTINGS["automatic1111"]
