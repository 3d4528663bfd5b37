"""What our Stability provider sends to v1, and what the fake answers, against Stability's
own v1 OpenAPI schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bot.providers.base import GenerationRequest, WeightedPrompt, fit_request
from bot.providers.stability import STYLE_PRESETS, StabilityProvider, StabilitySettings
from tests.contracts import errors
from tests.fakes.stability import StabilityFake

KEY = "sk-TEST-contract-stability"
DOC = "stability/v1.openapi.json"
SDXL = "stable-diffusion-xl-1024-v1-0"
# Later official v1 specs added style_preset and narrowed steps (README.md).
LATER_SPEC: dict[str, dict[str, Any]] = {
    "GenerationRequestOptionalParams": {
        "style_preset": {"type": "string", "enum": list(STYLE_PRESETS)},
        "steps": {"type": "integer", "minimum": 10, "maximum": 50},
    }
}


@pytest.fixture
async def fake() -> AsyncIterator[StabilityFake]:
    async with StabilityFake(api_key=KEY) as f:
        yield f


def provider(fake: StabilityFake, model: str) -> StabilityProvider:
    env = {"STABILITY_API_KEY": KEY, "STABILITY_API_BASE_URL": fake.base_url}
    return StabilityProvider(StabilitySettings.from_mapping({"model": model}, env))


def typed_form(form: dict[str, str], files: dict[str, Any]) -> dict[str, object]:
    """The multipart fields as the object the schema describes (arrays folded back)."""
    out: dict[str, object] = {}
    prompts: dict[int, dict[str, object]] = {}
    for key, value in form.items():
        if key.startswith("text_prompts["):
            index, field = key[len("text_prompts[") :].rstrip("]").split("][")
            prompts.setdefault(int(index), {})[field] = float(value) if field == "weight" else value
        elif key in ("samples", "seed", "steps"):
            out[key] = int(value)
        elif key in ("cfg_scale", "image_strength"):
            out[key] = float(value)
        else:
            out[key] = value
    out["text_prompts"] = [prompts[i] for i in sorted(prompts)]
    out.update({k: "<binary>" for k in files})
    return out


@pytest.mark.parametrize(
    ("model", "req"),
    [
        (
            SDXL,
            GenerationRequest(
                "castle",
                negative_prompt="fog",
                n=3,
                width=1000,
                height=600,
                seed=4294967295,
                steps=30,
                cfg=8.0,
                sampler="k_euler",
                style="cinematic",
            ),
        ),
        (
            "stable-diffusion-v1-6",
            GenerationRequest(
                "a",
                weighted_prompts=(WeightedPrompt("red", 1.5), WeightedPrompt("blue", -0.5)),
                width=700,
                height=500,
            ),
        ),
    ],
)
async def test_text_to_image_bodies_validate(
    fake: StabilityFake, model: str, req: GenerationRequest
) -> None:
    p = provider(fake, model)
    await p.generate(fit_request(req, p.capabilities, p.label).request)
    await p.aclose()
    [call] = fake.requests
    assert errors(DOC, "TextToImageRequestBody", call.json, LATER_SPEC) == []


async def test_image_to_image_forms_validate(fake: StabilityFake) -> None:
    p = provider(fake, SDXL)
    await p.generate(
        GenerationRequest(
            "castle",
            negative_prompt="fog",
            n=2,
            seed=11,
            init_image=b"\x89PNG\r\n\x1a\nrest",
            strength=0.3,
            style="anime",
        )
    )
    await p.aclose()
    [call] = fake.requests
    assert (
        errors(
            DOC,
            "ImageToImageUsingImageStrengthRequestBody",
            typed_form(call.form, call.files),
            LATER_SPEC,
        )
        == []
    )


def test_the_validator_does_catch_a_broken_body() -> None:
    assert errors(DOC, "TextToImageRequestBody", {"text_prompts": []}, LATER_SPEC)
    assert errors(
        DOC,
        "TextToImageRequestBody",
        {"text_prompts": [{"text": "x"}], "seed": 4294967296},
        LATER_SPEC,
    )
    assert errors(
        DOC,
        "TextToImageRequestBody",
        {"text_prompts": [{"text": "x"}], "style_preset": "watercolor"},
        LATER_SPEC,
    )


async def test_the_fakes_v1_answers_follow_the_schema(fake: StabilityFake) -> None:
    async with httpx.AsyncClient(
        base_url=fake.base_url, headers={"Authorization": f"Bearer {KEY}"}
    ) as c:
        engines = (await c.get("/v1/engines/list")).json()
        assert errors(DOC, "ListEnginesResponseBody", engines) == []
        balance = (await c.get("/v1/user/balance")).json()
        assert errors(DOC, "BalanceResponseBody", balance) == []
        ok = (
            await c.post(
                f"/v1/generation/{SDXL}/text-to-image", json={"text_prompts": [{"text": "x"}]}
            )
        ).json()
        assert all(errors(DOC, "Image", art) == [] for art in ok["artifacts"])
        bad = await c.post(
            f"/v1/generation/{SDXL}/text-to-image",
            json={"text_prompts": [{"text": "x"}], "width": 1000},
        )
        assert bad.status_code == 400 and errors(DOC, "Error", bad.json()) == []
