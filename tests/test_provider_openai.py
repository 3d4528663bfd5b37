"""OpenAI Images provider against the fake OpenAI server, over real loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.errors import ConfigError
from bot.providers.base import (
    AuthFailed,
    ContentFiltered,
    GenerationRequest,
    InvalidRequest,
    NotFound,
    NotSupported,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
    fit_request,
    generate_split,
)
from bot.providers.openai import OpenAIProvider, OpenAISettings
from tests.fakes.openai import OpenAIFake

KEY = "sk-TEST-SENTINEL-openai-abcdef"


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture
async def fake() -> AsyncIterator[OpenAIFake]:
    async with OpenAIFake(api_key=KEY) as f:
        yield f


def make(fake: OpenAIFake, **section: object) -> OpenAIProvider:
    env = {"OPENAI_API_KEY": KEY, "OPENAI_API_BASE_URL": fake.api_url}
    return OpenAIProvider(OpenAISettings.from_mapping(section, env), sleep=no_sleep)


@pytest.fixture
async def gpt(fake: OpenAIFake) -> AsyncIterator[OpenAIProvider]:
    p = make(fake)
    yield p
    await p.aclose()


def test_settings() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAISettings.from_mapping({}, {})
    env = {"OPENAI_API_KEY": KEY}
    with pytest.raises(ConfigError, match=r"providers\.openai\.quality"):
        OpenAISettings.from_mapping({"model": "dall-e-3", "quality": "high"}, env)
    with pytest.raises(ConfigError, match=r"providers\.openai\.model"):
        OpenAISettings.from_mapping({"model": "midjourney"}, env)
    assert KEY not in repr(OpenAISettings.from_mapping({}, env))


async def test_gpt_image_generation(fake: OpenAIFake, gpt: OpenAIProvider) -> None:
    req = GenerationRequest(prompt="a lighthouse", negative_prompt="people", n=3, width=1600,
                            height=1000, steps=30, user_ref="slack:T1:U1")
    fitted = fit_request(req, gpt.capabilities, gpt.label)
    assert fitted.request.negative_prompt is None and fitted.request.steps is None
    assert (fitted.request.width, fitted.request.height) == (1536, 1024)
    assert len(fitted.notes) == 3  # size, --no, --steps: the user hears about each
    res = await gpt.generate(fitted.request)
    assert fake.violations == []
    rec = fake.requests[0]
    assert rec.path == "/v1/images/generations"
    assert rec.headers["Authorization"] == f"Bearer {KEY}"
    assert rec.json == {"model": "gpt-image-1", "prompt": "a lighthouse", "n": 3,
                        "size": "1536x1024", "quality": "auto", "user": rec.json["user"]}
    assert "slack" not in rec.json["user"]
    assert len(res.images) == 3 and all(i.seed is None for i in res.images)


async def test_gpt_image_edit_multipart(fake: OpenAIFake, gpt: OpenAIProvider) -> None:
    res = await gpt.generate(GenerationRequest(prompt="make it night", n=2,
                                               init_image=b"\x89PNG-init"))
    assert fake.violations == []
    rec = fake.requests[0]
    assert rec.path == "/v1/images/edits" and rec.content_type == "multipart/form-data"
    assert rec.files["image"][1] == b"\x89PNG-init" and rec.form["n"] == "2"
    assert len(res.images) == 2


async def test_dalle3_one_per_call_split_and_b64(fake: OpenAIFake) -> None:
    p = make(fake, model="dall-e-3", quality="hd")
    assert p.capabilities.max_n_per_call == 1 and not p.capabilities.img2img
    with pytest.raises(NotSupported):
        fit_request(GenerationRequest(prompt="x", init_image=b"i"), p.capabilities, p.label)
    res = await generate_split(p, GenerationRequest(prompt="x", n=3, width=1792, height=1024),
                               parallel=3)
    await p.aclose()
    assert fake.violations == []
    assert len(fake.requests) == 3 and len(res.images) == 3
    assert {r.json["response_format"] for r in fake.requests} == {"b64_json"}
    assert {r.json["size"] for r in fake.requests} == {"1792x1024"}


@pytest.mark.parametrize(("status", "kind", "code", "exc", "calls"), [
    (400, "image_generation_user_error", "moderation_blocked", ContentFiltered, 1),
    (400, "invalid_request_error", "content_policy_violation", ContentFiltered, 1),
    (400, "invalid_request_error", None, InvalidRequest, 1),
    (401, "invalid_request_error", "invalid_api_key", AuthFailed, 1),
    (403, "invalid_request_error", None, AuthFailed, 1),
    (404, "invalid_request_error", "model_not_found", NotFound, 1),
    (429, "insufficient_quota", "insufficient_quota", QuotaExhausted, 1),
    (503, "server_error", None, ProviderUnavailable, 2),
])
async def test_errors(fake: OpenAIFake, gpt: OpenAIProvider, status: int, kind: str,
                      code: str | None, exc: type[Exception], calls: int) -> None:
    body = {"error": {"message": "nope", "type": kind, "param": None, "code": code}}
    fake.fail_next(status, json=body, times=2)
    with pytest.raises(exc) as info:
        await gpt.generate(GenerationRequest(prompt="x"))
    assert len(fake.requests) == calls
    assert KEY not in str(info.value)


async def test_rate_limit_http_date_retry_after(fake: OpenAIFake) -> None:
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    env = {"OPENAI_API_KEY": KEY, "OPENAI_API_BASE_URL": fake.api_url}
    p = OpenAIProvider(OpenAISettings.from_mapping({"rate_limit_retries": 1}, env),
                       sleep=sleep)
    err = {"error": {"message": "Rate limit", "type": "requests", "param": None,
                     "code": "rate_limit_exceeded"}}
    fake.fail_next(429, json=err, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    fake.fail_next(429, json=err, headers={"Retry-After": "1"})
    with pytest.raises(RateLimited):
        await p.generate(GenerationRequest(prompt="x"))
    await p.aclose()
    # A date in the past means "now"; then the retry budget (1) is spent.
    assert waits == [0.0] and len(fake.requests) == 2


async def test_wrong_key(fake: OpenAIFake) -> None:
    env = {"OPENAI_API_KEY": "sk-wrong", "OPENAI_API_BASE_URL": fake.api_url}
    p = OpenAIProvider(OpenAISettings.from_mapping({}, env))
    with pytest.raises(AuthFailed):
        await p.generate(GenerationRequest(prompt="x"))
    await p.aclose()


async def test_check(fake: OpenAIFake, gpt: OpenAIProvider) -> None:
    facts = await gpt.check()
    assert facts["model"] == "gpt-image-1 (available)"
