"""What our Horde provider sends, and what the fake answers, against the Horde's own models
(transcribed from its flask-restx definitions; see horde/README.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bot.providers.base import GenerationRequest, WeightedPrompt, fit_request
from bot.providers.horde import HordeProvider, HordeSettings
from tests.contracts import errors
from tests.fakes.horde import ANONYMOUS_KEY, HordeFake

DOC = "horde/generation_input.schema.json"


async def _quick(_: float) -> None:
    return None


@pytest.fixture
async def fake() -> AsyncIterator[HordeFake]:
    async with HordeFake() as f:
        yield f


@pytest.mark.parametrize(
    "req",
    [
        GenerationRequest(
            "a fox",
            negative_prompt="blur",
            n=3,
            width=700,
            height=500,
            seed=7,
            steps=25,
            cfg=7.123,
            sampler="DPM++ 2M",
            scheduler="karras",
        ),
        GenerationRequest(
            "a", weighted_prompts=(WeightedPrompt("red", 1.5),), seed=4294967295, model="Deliberate"
        ),
        GenerationRequest("x", init_image=b"\x89PNG", strength=0.0, seed=0),
    ],
)
async def test_generation_bodies_validate(fake: HordeFake, req: GenerationRequest) -> None:
    p = HordeProvider(
        HordeSettings.from_mapping({}, {"AI_HORDE_BASE_URL": fake.api_url}), sleep=_quick
    )
    await p.refresh()
    await p.generate(fit_request(req, p.capabilities, p.label).request)
    await p.aclose()
    [call] = fake.requests_to("/generate/async")
    assert errors(DOC, "GenerationInputStable", call.json) == []
    assert fake.violations == []


def test_the_validator_does_catch_a_broken_body() -> None:
    assert errors(DOC, "GenerationInputStable", {"prompt": "x", "params": {"seed": 5}})
    assert errors(DOC, "GenerationInputStable", {"prompt": "x", "params": {"width": 500}})
    assert errors(DOC, "GenerationInputStable", {"params": {}})


async def test_the_fakes_answers_follow_the_models(fake: HordeFake) -> None:
    async with httpx.AsyncClient(
        base_url=fake.api_url,
        headers={"apikey": ANONYMOUS_KEY, "Client-Agent": "contract-test:1:none"},
    ) as c:
        queued = await c.post(
            "/v2/generate/async", json={"prompt": "x", "params": {"n": 2}, "r2": False}
        )
        assert queued.status_code == 202 and errors(DOC, "RequestAsync", queued.json()) == []
        wp = queued.json()["id"]
        for _ in range(3):
            lite = await c.get(f"/v2/generate/check/{wp}")
            assert errors(DOC, "RequestStatusCheck", lite.json()) == []
        full = await c.get(f"/v2/generate/status/{wp}")
        assert errors(DOC, "RequestStatusStable", full.json()) == []
        assert len(full.json()["generations"]) == 2
        models = (await c.get("/v2/status/models", params={"type": "image"})).json()
        assert all(errors(DOC, "ActiveModel", m) == [] for m in models)
        for bad in (
            await c.post("/v2/generate/async", json={"prompt": "x", "params": {"width": 500}}),
            await c.get("/v2/generate/check/nope"),
            await c.post("/v2/generate/async", json={"prompt": "x"}, headers={"apikey": "wrong"}),
        ):
            assert bad.status_code >= 400 and errors(DOC, "RequestError", bad.json()) == []
