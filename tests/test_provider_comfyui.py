"""ComfyUI provider against the fake ComfyUI server, over real loopback HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.providers.base import (
    GenerationRequest,
    InvalidRequest,
    NotSupported,
    ProviderUnavailable,
    fit_request,
    generate_split,
)
from bot.providers.comfyui import ComfyUIProvider, ComfyUISettings
from tests.fakes.comfyui import IMG2IMG_WORKFLOW, TXT2IMG_WORKFLOW, ComfyUIFake


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture
def workflows(tmp_path: Path) -> dict[str, str]:
    t = tmp_path / "t2i.json"
    t.write_text(json.dumps(TXT2IMG_WORKFLOW))
    i = tmp_path / "i2i.json"
    i.write_text(json.dumps(IMG2IMG_WORKFLOW))
    return {"workflow": str(t), "img2img_workflow": str(i)}


@pytest.fixture
async def fake() -> AsyncIterator[ComfyUIFake]:
    async with ComfyUIFake(pending_polls=2) as f:
        yield f


@pytest.fixture
async def comfy(fake: ComfyUIFake, workflows: dict[str, str]
                ) -> AsyncIterator[ComfyUIProvider]:
    p = ComfyUIProvider(ComfyUISettings.from_mapping(
        workflows, {"COMFYUI_BASE_URL": fake.base_url}), sleep=no_sleep)
    yield p
    await p.aclose()


def test_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"providers\.comfyui\.workflow"):
        ComfyUISettings.from_mapping({}, {})
    bad = tmp_path / "ui.json"
    bad.write_text(json.dumps({"nodes": [], "links": []}))
    with pytest.raises(ConfigError, match="API-format"):
        ComfyUISettings.from_mapping({"workflow": str(bad)}, {})
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"1": {"class_type": "X", "inputs": {"t": "{{promt}}"}}}))
    with pytest.raises(ConfigError, match="promt"):
        ComfyUISettings.from_mapping({"workflow": str(typo)}, {})


async def test_txt2img_fills_typed_placeholders_and_polls(
        fake: ComfyUIFake, comfy: ComfyUIProvider) -> None:
    progress: list[float] = []
    req = GenerationRequest(prompt="a tower", negative_prompt="fog", n=2, width=768,
                            height=512, seed=99, steps=12, cfg=5.5)
    res = await comfy.generate(req, progress.append)
    assert fake.violations == []
    wf = fake.requests_to("/prompt")[0].json["prompt"]
    assert wf["3"]["inputs"]["seed"] == 99 and wf["3"]["inputs"]["steps"] == 12
    assert wf["3"]["inputs"]["cfg"] == 5.5 and wf["3"]["inputs"]["denoise"] == 1.0
    assert wf["5"]["inputs"] == {"width": 768, "height": 512, "batch_size": 2}
    assert wf["6"]["inputs"]["text"] == "a tower" and wf["7"]["inputs"]["text"] == "fog"
    assert len(fake.requests_to("/history/")) == 3 and progress
    assert len(fake.requests_to("/view")) == 2
    assert [i.seed for i in res.images] == [99, 100]
    assert all(i.data.startswith(b"\x89PNG") for i in res.images)


async def test_img2img_uploads_then_references(fake: ComfyUIFake,
                                               comfy: ComfyUIProvider) -> None:
    res = await comfy.generate(GenerationRequest(prompt="x", init_image=b"\x89PNGinit",
                                                 strength=0.4, seed=3))
    assert fake.violations == []
    (name,) = fake.uploads
    assert fake.uploads[name] == b"\x89PNGinit"
    wf = fake.requests_to("/prompt")[0].json["prompt"]
    assert wf["10"]["inputs"]["image"] == name and wf["3"]["inputs"]["denoise"] == 0.4
    assert res.images[0].seed == 3


async def test_split_n3_with_batch_limit(fake: ComfyUIFake, workflows: dict[str, str]) -> None:
    p = ComfyUIProvider(ComfyUISettings.from_mapping(
        {**workflows, "max_n_per_call": 2}, {"COMFYUI_BASE_URL": fake.base_url}),
        sleep=no_sleep)
    res = await generate_split(p, GenerationRequest(prompt="x", n=3, seed=7), parallel=2)
    await p.aclose()
    assert sorted(r.json["prompt"]["5"]["inputs"]["batch_size"]
                  for r in fake.requests_to("/prompt")) == [1, 2]
    assert sorted(i.seed or 0 for i in res.images) == [7, 8, 9]


async def test_validation_error_is_invalid_request(fake: ComfyUIFake,
                                                   comfy: ComfyUIProvider) -> None:
    fake.fail_next(400, path="/prompt", json={
        "error": {"type": "prompt_outputs_failed_validation", "message": "failed",
                  "details": "", "extra_info": {}},
        "node_errors": {"4": {"errors": [{"type": "value_not_in_list",
                                          "message": "Value not in list",
                                          "details": "ckpt_name: 'x' not in []"}],
                              "dependent_outputs": ["9"], "class_type": "Ckpt"}}})
    with pytest.raises(InvalidRequest, match="ckpt_name"):
        await comfy.generate(GenerationRequest(prompt="x"))
    assert len(fake.requests_to("/prompt")) == 1


async def test_execution_error_is_unavailable(fake: ComfyUIFake,
                                              comfy: ComfyUIProvider) -> None:
    fake.fail_execution = "CUDA out of memory"
    with pytest.raises(ProviderUnavailable, match="CUDA"):
        await comfy.generate(GenerationRequest(prompt="x"))


async def test_history_500_is_retried(fake: ComfyUIFake, comfy: ComfyUIProvider) -> None:
    fake.fail_next(500, path="/history/", body=b"Internal Server Error")
    res = await comfy.generate(GenerationRequest(prompt="x", seed=1))
    assert len(res.images) == 1 and len(fake.requests_to("/prompt")) == 1


async def test_never_finishing_job_hits_deadline(workflows: dict[str, str]) -> None:
    async with ComfyUIFake(pending_polls=10**9) as fake:
        p = ComfyUIProvider(ComfyUISettings.from_mapping(
            {**workflows, "deadline_s": 0.3, "poll_interval_s": 0.01},
            {"COMFYUI_BASE_URL": fake.base_url}))
        with pytest.raises(ProviderUnavailable, match="in time"):
            await p.generate(GenerationRequest(prompt="x"))
        await p.aclose()
    assert len(fake.requests_to("/prompt")) == 1


async def test_txt2img_only_without_img2img_workflow(fake: ComfyUIFake,
                                                     workflows: dict[str, str]) -> None:
    p = ComfyUIProvider(ComfyUISettings.from_mapping(
        {"workflow": workflows["workflow"]}, {"COMFYUI_BASE_URL": fake.base_url}))
    with pytest.raises(NotSupported):
        fit_request(GenerationRequest(prompt="x", init_image=b"i"), p.capabilities, p.label)
    facts = await p.check()
    assert facts["version"] == "0.3.40"
    await p.aclose()
