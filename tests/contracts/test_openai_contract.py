"""What our OpenAI provider sends, and what the fake answers, against OpenAI's own schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bot.providers.base import GenerationRequest, fit_request
from bot.providers.openai import EXTENDED_QUALITIES, OpenAIProvider, OpenAISettings
from tests.contracts import errors
from tests.fakes.openai import OpenAIFake

KEY = "sk-TEST-contract-openai"
DOC = "openai/images.openapi.json"
# OpenAI's docs are ahead of the snapshot here; see README.md.
_QUALITY: dict[str, Any] = {
    "quality": {"type": "string", "enum": ["standard", "hd", *EXTENDED_QUALITIES]}
}
QUALITY_PATCH = {"CreateImageRequest": _QUALITY, "CreateImageEditRequest": _QUALITY}


@pytest.fixture
async def fake() -> AsyncIterator[OpenAIFake]:
    async with OpenAIFake(api_key=KEY) as f:
        yield f


def provider(fake: OpenAIFake, **section: object) -> OpenAIProvider:
    env = {"OPENAI_API_KEY": KEY, "OPENAI_API_BASE_URL": fake.api_url}
    return OpenAIProvider(OpenAISettings.from_mapping(section, env))


def form_instance(form: dict[str, str], files: dict[str, Any]) -> dict[str, object]:
    """A multipart form as the typed object the schema describes."""
    out: dict[str, object] = {
        k: int(v) if k in ("n", "output_compression") else v for k, v in form.items()
    }
    out.update({k: "<binary>" for k in files})
    return out


@pytest.mark.parametrize(
    ("section", "req"),
    [
        ({}, GenerationRequest("a lighthouse", n=3, width=1600, height=1000, user_ref="web:u1")),
        (
            {"model": "gpt-image-2.6-sunburst", "quality": "max"},
            GenerationRequest("a fox", width=512, height=2048),
        ),
        ({"model": "gpt-image-2", "quality": "high"}, GenerationRequest("a fox", n=2)),
    ],
)
async def test_generation_bodies_validate(
    fake: OpenAIFake, section: dict[str, object], req: GenerationRequest
) -> None:
    p = provider(fake, **section)
    await p.generate(fit_request(req, p.capabilities, p.label).request)
    await p.aclose()
    [call] = fake.requests
    assert errors(DOC, "CreateImageRequest", call.json, QUALITY_PATCH) == []


async def test_edit_forms_validate(fake: OpenAIFake) -> None:
    p = provider(fake)
    await p.generate(GenerationRequest("night", n=2, init_image=b"\x89PNG", user_ref="u"))
    await p.aclose()
    [call] = fake.requests
    instance = form_instance(call.form, call.files)
    assert errors(DOC, "CreateImageEditRequest", instance, QUALITY_PATCH) == []


def test_the_validator_does_catch_a_broken_body() -> None:
    assert errors(DOC, "CreateImageRequest", {"prompt": "x", "n": 0})
    assert errors(DOC, "CreateImageRequest", {"n": 1})  # no prompt
    assert errors(DOC, "CreateImageRequest", {"prompt": "x", "quality": "max"})  # unpatched


async def test_the_fakes_answers_follow_the_schema(fake: OpenAIFake) -> None:
    fake.shutdown_dates["gpt-image-2"] = "2027-04-21"
    async with httpx.AsyncClient(
        base_url=fake.api_url, headers={"Authorization": f"Bearer {KEY}"}
    ) as c:
        ok = await c.post("/images/generations", json={"model": "gpt-image-2", "prompt": "x"})
        assert errors(DOC, "ImagesResponse", ok.json()) == []
        model = await c.get("/models/gpt-image-2")
        assert errors(DOC, "Model", model.json()) == []
        assert model.json()["shutdown_date"] == "2027-04-21"
        for bad in (
            await c.post("/images/generations", json={"model": "dall-e-3", "prompt": "x"}),
            await c.post(
                "/images/generations", json={"prompt": "x", "n": 99, "model": "gpt-image-2"}
            ),
            await c.get("/models/gpt-image-1"),
        ):
            assert bad.status_code >= 400
            assert errors(DOC, "ErrorResponse", bad.json()) == []
