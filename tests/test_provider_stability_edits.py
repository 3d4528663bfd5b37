"""Stability's image verbs (v2beta upscale fast/conservative/creative, outpaint) against the
fake Stability server over real loopback HTTP, and through the whole core."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from bot.errors import ConfigError
from bot.providers import edits
from bot.providers.base import GenerationRequest, InvalidRequest, NotFound
from bot.providers.edit_types import Edit, pan, zoom_out
from bot.providers.stability import StabilityProvider, StabilitySettings
from tests.fakes.stability import StabilityFake
from tests.test_provider_e2e import imagine, ledger, rig

KEY = "sk-TEST-SENTINEL-stability-0123456789"


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 90, 160)).save(out, "PNG")
    return out.getvalue()


def size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return img.size


@pytest.fixture
async def fake() -> AsyncIterator[StabilityFake]:
    async with StabilityFake(api_key=KEY) as f:
        yield f


slept: list[float] = []


async def record_sleep(seconds: float) -> None:
    slept.append(seconds)


def make(fake: StabilityFake, **section: object) -> StabilityProvider:
    env = {"STABILITY_API_KEY": KEY, "STABILITY_API_BASE_URL": fake.base_url}
    return StabilityProvider(StabilitySettings.from_mapping(section, env), sleep=record_sleep)


def request(edit: Edit, w: int = 512, h: int = 512) -> GenerationRequest:
    return GenerationRequest(
        prompt="a harbour at dusk",
        negative_prompt="blur",
        width=w,
        height=h,
        seed=77,
        init_image=png(w, h),
        edit=edit,
    )


async def test_fast_upscale_sends_only_the_image_and_is_brought_to_the_factor(
    fake: StabilityFake,
) -> None:
    p = make(fake)
    try:
        assert p.capabilities.upscale == "model" and p.capabilities.outpaint
        result = await edits.perform(p, request(Edit("upscale", 2.0)))
    finally:
        await p.aclose()
    [call] = fake.requests_to("/upscale/")
    assert call.path == "/v2beta/stable-image/upscale/fast"
    assert set(call.form_keys) == {"image", "output_format"}
    assert call.headers["Accept"] == "image/*"
    # Stability's fast upscaler is 4x; the job asked for 2x, so 2048 comes back as 1024.
    assert size(result.images[0].data) == (1024, 1024)
    assert result.model == "upscale-fast"


async def test_creative_upscale_is_polled_until_ready(fake: StabilityFake) -> None:
    slept.clear()
    p = make(fake, upscaler="creative", upscale_creativity=0.25, poll_s=10.0)
    try:
        result = await edits.perform(p, request(Edit("upscale", 2.0)))
    finally:
        await p.aclose()
    [start] = fake.requests_to("/upscale/creative")
    assert start.form["prompt"] == "a harbour at dusk" and start.form["creativity"] == "0.25"
    assert start.form["negative_prompt"] == "blur" and start.form["seed"] == "77"
    polls = fake.requests_to("/v2beta/results/")
    assert len(polls) == 3  # 202, 202, then the image
    assert slept == [10.0, 10.0, 10.0]  # never faster than Stability asks
    assert size(result.images[0].data) == (1024, 1024) and result.images[0].seed == 77


async def test_a_result_gone_while_polling_is_not_found(fake: StabilityFake) -> None:
    """Results are kept 24 h and only for the key that asked: the poll answers 404."""
    env = {"STABILITY_API_KEY": KEY, "STABILITY_API_BASE_URL": fake.base_url}

    async def expire(_: float) -> None:
        fake.pending.clear()

    settings = StabilitySettings.from_mapping({"upscaler": "creative"}, env)
    p = StabilityProvider(settings, sleep=expire)
    try:
        with pytest.raises(NotFound):
            await edits.perform(p, request(Edit("upscale", 2.0)))
    finally:
        await p.aclose()
    assert len(fake.requests_to("/v2beta/results/")) == 1


async def test_conservative_creativity_is_checked_at_startup(fake: StabilityFake) -> None:
    with pytest.raises(ConfigError, match="upscale_creativity"):
        make(fake, upscaler="conservative", upscale_creativity=0.1)
    with pytest.raises(ConfigError, match="upscaler"):
        make(fake, upscaler="esrgan")


async def test_fast_upscale_of_a_too_large_image_is_refused_by_the_service(
    fake: StabilityFake,
) -> None:
    p = make(fake)
    try:
        with pytest.raises(InvalidRequest):
            await edits.perform(p, request(Edit("upscale", 2.0), 1600, 1024))
    finally:
        await p.aclose()


@pytest.mark.parametrize(
    "edit, fields",
    [
        (zoom_out(512, 512, 2.0), {"left": "256", "right": "256", "up": "256", "down": "256"}),
        (pan(512, 512, "left", 0.5), {"left": "256"}),
        (pan(512, 512, "down", 0.5), {"down": "256"}),
    ],
)
async def test_outpaint_sends_the_padding_per_side(
    fake: StabilityFake, edit: Edit, fields: dict[str, str]
) -> None:
    p = make(fake)
    try:
        result = await edits.perform(p, request(edit))
    finally:
        await p.aclose()
    [call] = fake.requests_to("/edit/outpaint")
    sides = {k: v for k, v in call.form.items() if k in ("left", "right", "up", "down")}
    assert sides == fields
    assert "negative_prompt" not in call.form and call.form["prompt"] == "a harbour at dusk"
    assert size(result.images[0].data) == edit.out_size(512, 512)


async def test_through_the_core_pan_works_and_a_refused_upscale_is_refunded(
    tmp_path: Path,
) -> None:
    # The fake's generations are 8x8 pictures: too small for the fast upscaler (32 px a side),
    # which Stability refuses; the job fails and its 2 units come back.
    async with rig(tmp_path, "stability-sdxl") as r:
        chat = r.chat
        job = await imagine(chat, "a fjord --n 1 --seed 5")
        [pick] = await chat.click("bob", f"pick:{job}:1")
        assert {"Upscale", "Pan left", "Zoom out 2x"} <= {b.label for b in pick.buttons}
        sent = await chat.click("bob", f"upscale:{job}:1")
        up = sent[-1].job_id
        assert up is not None
        await chat.settle()
        failed = chat.result(up)
        assert failed.state == "failed" and "refunded" in failed.text
        assert await ledger(chat, up) == {"reserve": 2, "commit": 0, "refund": 2}
        sent = await chat.click("bob", f"pan-left:{job}:1")
        panned = sent[-1].job_id
        assert panned is not None
        await chat.settle()
        assert chat.result(panned).state == "done", chat.result(panned).text
        assert await ledger(chat, panned) == {"reserve": 1, "commit": 1, "refund": 0}
        [call] = r.stability.requests_to("/edit/outpaint")
        assert call.form["left"] == "8"  # half of 8 px, at least the multiple of 8


async def test_an_upscale_larger_than_the_upscaler_takes_is_refused_before_charging(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path, "stability-sdxl") as r:
        chat = r.chat
        job = await imagine(chat, "a glacier --n 1 --seed 5")
        # An earlier upscale made a 2048 px picture: Stability's fast upscaler takes 1 MP.
        await chat.app.store.execute(
            "UPDATE images SET width = 2048, height = 2048 WHERE job_id = ?", (job,)
        )
        [reply] = await chat.click("bob", f"upscale:{job}:1")
        assert reply.ephemeral and "2048x2048" in reply.text and "Nothing was charged" in reply.text
        assert "50 of 50" in (await chat.say("bob", "/quota"))[0].text
        assert r.stability.requests_to("/upscale/") == []
