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
    assert default_provider_name({"STABILITY_API_KEY": "sk-x"}, "automatic1111") == \
        "automatic1111"
    assert default_provider_name({"STABILITY_API_KEY": " "}, "auto") == "offline"


async def test_build_each_remote_provider(tmp_path: Path) -> None:
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(TXT2IMG_WORKFLOW))
    env = {"STABILITY_API_KEY": "sk-a", "OPENAI_API_KEY": "sk-b", "CEREBRIUM_API_KEY": "c"}
    sections: dict[str, dict[str, object]] = {
        "stability": {}, "automatic1111": {}, "openai": {},
        "cerebrium": {"url": "https://api.aws.us-east-1.cerebrium.ai/v4/p-1/app/predict"},
        "comfyui": {"workflow": str(wf)},
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


@pytest.mark.parametrize(("name", "section"), [
    ("stability", {"modle": "core"}),
    ("automatic1111", {"samplr": "Euler"}),
    ("openai", {"qualty": "high"}),
    ("cerebrium", {"url": "https://api.aws.us-east-1.cerebrium.ai/v4/p-1/app/predict",
                   "img2imgurl": "x"}),
    ("comfyui", {"workflow": "wf.json", "timeout": 3}),
])
def test_a_typo_in_a_provider_table_names_the_key(name: str, section: dict[str, object]) -> None:
    env = {"STABILITY_API_KEY": "sk-a", "OPENAI_API_KEY": "sk-b"}
    typo = next(k for k in section if k not in ("url", "workflow"))
    with pytest.raises(ConfigError, match=f"providers.{name}.{typo}"):
        build_provider(name, section, env)


def test_shared_http_keys_are_accepted_by_every_remote_provider() -> None:
    env = {"STABILITY_API_KEY": "sk-a", "OPENAI_API_KEY": "sk-b"}
    for name in ("stability", "automatic1111", "openai"):
        assert build_provider(name, {"deadline_s": 30, "breaker_threshold": 3}, env).name == name
