"""ComfyUI's Upscale slot: a configured upscale workflow (LoadImage -> upscale model -> scale
by the factor -> SaveImage) run on the picked image, against the fake ComfyUI server."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from bot.errors import ConfigError
from bot.providers import edits
from bot.providers.base import GenerationRequest, InvalidRequest, ModelUnavailable
from bot.providers.comfyui import ComfyUIProvider, ComfyUISettings
from bot.providers.edit_types import Edit
from tests.fakes.comfyui import TXT2IMG_WORKFLOW, UPSCALE_WORKFLOW, ComfyUIFake


async def no_sleep(_: float) -> None:
    return None


def write(tmp_path: Path, name: str, workflow: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(workflow))
    return str(path)


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(out, "PNG")
    return out.getvalue()


def settings(tmp_path: Path, fake: ComfyUIFake, upscale: object | None) -> ComfyUISettings:
    section = {"workflow": write(tmp_path, "t2i.json", TXT2IMG_WORKFLOW), "poll_interval_s": 0.0}
    if upscale is not None:
        section["upscale_workflow"] = write(tmp_path, "up.json", upscale)
    return ComfyUISettings.from_mapping(section, {"COMFYUI_BASE_URL": fake.base_url})


async def test_the_upscale_workflow_runs_on_the_picked_image(tmp_path: Path) -> None:
    async with ComfyUIFake(pending_polls=1) as fake:
        p = ComfyUIProvider(settings(tmp_path, fake, UPSCALE_WORKFLOW), sleep=no_sleep)
        try:
            assert p.capabilities.upscale == "model"
            req = GenerationRequest(
                prompt="a pier",
                seed=9,
                width=64,
                height=64,
                init_image=png(),
                edit=Edit("upscale", 2.0),
            )
            result = await edits.perform(p, req)
        finally:
            await p.aclose()
        [call] = fake.requests_to("/prompt")
        wf = call.json["prompt"]
        assert wf["4"]["inputs"]["scale_by"] == 2.0  # the factor, typed
        assert wf["1"]["inputs"]["image"] in fake.uploads  # the picked image, uploaded
        assert result.images and result.images[0].data.startswith(b"\x89PNG")


async def test_without_an_upscale_workflow_there_is_no_upscaler(tmp_path: Path) -> None:
    async with ComfyUIFake() as fake:
        p = ComfyUIProvider(settings(tmp_path, fake, None), sleep=no_sleep)
        assert p.capabilities.upscale == "none"
        await p.aclose()


async def test_an_upscale_model_the_server_lacks_is_named(tmp_path: Path) -> None:
    wf = json.loads(json.dumps(UPSCALE_WORKFLOW))
    wf["2"]["inputs"]["model_name"] = "missing.pth"
    async with ComfyUIFake() as fake:
        p = ComfyUIProvider(settings(tmp_path, fake, wf), sleep=no_sleep)
        try:
            req = GenerationRequest(
                prompt="x", init_image=png(), width=64, height=64, edit=Edit("upscale", 2.0)
            )
            with pytest.raises((ModelUnavailable, InvalidRequest)) as err:
                await edits.perform(p, req)
            assert "missing.pth" in err.value.user_message or "model_name" in err.value.message
        finally:
            await p.aclose()


def test_an_upscale_workflow_needs_the_init_image(tmp_path: Path) -> None:
    wf = {k: v for k, v in UPSCALE_WORKFLOW.items() if k != "1"}
    wf["3"] = {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["2", 0]}}
    section = {
        "workflow": write(tmp_path, "t2i.json", TXT2IMG_WORKFLOW),
        "upscale_workflow": write(tmp_path, "up.json", wf),
    }
    with pytest.raises(ConfigError, match="init_image"):
        ComfyUISettings.from_mapping(section, {})
