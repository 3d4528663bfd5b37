"""The webui's image verbs against the fake webui over real loopback HTTP, and through the
core: Upscale by /sdapi/v1/extra-single-image with the configured upscaler, Zoom out and Pan
as img2img on a padded canvas with a mask."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from bot.providers import edits
from bot.providers.automatic1111 import Automatic1111Provider, Automatic1111Settings
from bot.providers.base import GenerationRequest, ProviderUnavailable
from bot.providers.edit_types import Edit, pan, zoom_out
from tests.fakes.automatic1111 import Automatic1111Fake
from tests.test_provider_e2e import imagine, ledger, rig


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(out, "PNG")
    return out.getvalue()


def size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return img.size


def provider(fake: Automatic1111Fake, **section: object) -> Automatic1111Provider:
    settings = Automatic1111Settings.from_mapping(
        {"progress_interval_s": 0, **section}, {"AUTOMATIC1111_BASE_URL": fake.base_url}
    )
    return Automatic1111Provider(settings)


def request(edit: Edit, w: int = 512, h: int = 512) -> GenerationRequest:
    return GenerationRequest(
        prompt="a lake",
        negative_prompt="text",
        width=w,
        height=h,
        seed=5,
        init_image=png(w, h),
        edit=edit,
    )


async def test_upscale_uses_the_configured_upscaler_and_factor() -> None:
    async with Automatic1111Fake() as fake:
        p = provider(fake, upscaler="R-ESRGAN 4x+")
        try:
            assert p.capabilities.upscale == "model" and p.capabilities.outpaint
            result = await edits.perform(p, request(Edit("upscale", 2.0)))
        finally:
            await p.aclose()
        [call] = fake.requests_to("/extra-single-image")
        assert call.json["upscaler_1"] == "R-ESRGAN 4x+" and call.json["upscaling_resize"] == 2.0
        assert call.json["resize_mode"] == 0
        assert size(result.images[0].data) == (1024, 1024)


async def test_no_upscaler_configured_means_no_upscale_capability() -> None:
    async with Automatic1111Fake() as fake:
        p = provider(fake)
        assert p.capabilities.upscale == "none"
        await p.aclose()


async def test_an_upscaler_the_webui_lacks_is_a_failure_not_a_resize() -> None:
    async with Automatic1111Fake() as fake:
        p = provider(fake, upscaler="4x-UltraSharp")
        try:
            with pytest.raises(ProviderUnavailable):
                await edits.perform(p, request(Edit("upscale", 2.0)))
        finally:
            await p.aclose()


@pytest.mark.parametrize(
    "edit, out",
    [(zoom_out(512, 512, 1.5), (768, 768)), (pan(512, 512, "right", 0.5), (768, 512))],
)
async def test_outpaint_is_img2img_on_a_padded_canvas_with_a_mask(
    edit: Edit, out: tuple[int, int]
) -> None:
    async with Automatic1111Fake() as fake:
        p = provider(fake, outpaint_strength=0.9)
        try:
            result = await edits.perform(p, request(edit))
        finally:
            await p.aclose()
        [(mask_size, body)] = fake.masks
        assert mask_size == out and (body["width"], body["height"]) == out
        assert body["inpainting_fill"] == 1 and body["denoising_strength"] == 0.9
        canvas = Image.open(io.BytesIO(base64.b64decode(body["init_images"][0])))
        mask = Image.open(io.BytesIO(base64.b64decode(body["mask"]))).convert("L")
        assert canvas.size == out
        # Black (kept) over the original, white (painted) in the new area.
        cx, cy = edit.left + 256, edit.top + 256
        assert mask.getpixel((cx, cy)) == 0
        assert mask.getpixel((out[0] - 2, out[1] // 2)) == 255 or mask.getpixel((1, 1)) == 255
        assert result.images[0].seed == 5


async def test_through_the_core_upscale_and_zoom_out_on_the_webui(tmp_path: Path) -> None:
    section = {"upscaler": "R-ESRGAN 4x+"}
    overrides = {"actions": {"upscale_cost": {"automatic1111": 2}}}
    async with rig(tmp_path, "automatic1111", section=section, overrides=overrides) as r:
        chat = r.chat
        job = await imagine(chat, "a mill --n 2 --size 512x512 --seed 3")
        [pick] = await chat.click("alice", f"pick:{job}:2")
        assert [b.label for b in pick.buttons][:1] == ["Upscale"]
        sent = await chat.click("alice", f"upscale:{job}:2")
        up = sent[-1].job_id
        assert up is not None
        await chat.settle()
        result = chat.result(up)
        assert result.state == "done", result.text
        assert not (result.notice or "").startswith("Resized")  # a real upscaler ran
        assert await ledger(chat, up) == {"reserve": 2, "commit": 2, "refund": 0}
        sent = await chat.click("alice", f"zoom-out:{job}:1")
        zoomed = sent[-1].job_id
        assert zoomed is not None
        await chat.settle()
        assert chat.result(zoomed).state == "done"
        assert r.a1111.requests_to("/extra-single-image") and r.a1111.masks
