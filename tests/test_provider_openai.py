"""OpenAI Images provider against the fake OpenAI server, over real loopback HTTP."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import httpx
import pytest

from bot.errors import ConfigError
from bot.providers.base import (
    AuthFailed,
    CheckFailed,
    ContentFiltered,
    GenerationRequest,
    InvalidRequest,
    ModelRetired,
    ModelUnavailable,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
    fit_request,
    generate_split,
)
from bot.providers.openai import OpenAIProvider, OpenAISettings
from tests.fakes.openai import CURRENT_MODELS, OpenAIFake

KEY = "sk-TEST-SENTINEL-openai-abcdef"
TODAY = dt.date(2026, 12, 1)


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture
async def fake() -> AsyncIterator[OpenAIFake]:
    async with OpenAIFake(api_key=KEY) as f:
        yield f


def make(fake: OpenAIFake, **section: object) -> OpenAIProvider:
    env = {"OPENAI_API_KEY": KEY, "OPENAI_API_BASE_URL": fake.api_url}
    return OpenAIProvider(
        OpenAISettings.from_mapping(section, env), sleep=no_sleep, today=lambda: TODAY
    )


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
        OpenAISettings.from_mapping({"model": "gpt-image-2", "quality": "xhigh"}, env)
    with pytest.raises(ConfigError, match=r"providers\.openai\.model"):
        OpenAISettings.from_mapping({"model": "midjourney"}, env)
    assert KEY not in repr(OpenAISettings.from_mapping({}, env))
    assert (
        OpenAISettings.from_mapping(
            {"model": "gpt-image-2.6-sunburst", "quality": "max"}, env
        ).quality
        == "max"
    )


def test_the_default_is_the_current_model_family() -> None:
    settings = OpenAISettings.from_mapping({}, {"OPENAI_API_KEY": KEY})
    assert settings.model == "gpt-image-2.6-flare"
    assert settings.model in CURRENT_MODELS


@pytest.mark.parametrize(
    ("model", "date"),
    [
        ("gpt-image-1", "2026-10-23"),
        ("dall-e-3", "2026-05-12"),
        ("dall-e-2", "2026-05-12"),
        ("gpt-image-1-mini", "2026-12-01"),
        ("gpt-image-1.5", "2026-12-01"),
        ("chatgpt-image-latest", "2026-12-01"),
    ],
)
def test_retired_models_are_refused_with_their_date_and_a_replacement(
    model: str, date: str
) -> None:
    with pytest.raises(ConfigError) as info:
        OpenAISettings.from_mapping({"model": model}, {"OPENAI_API_KEY": KEY})
    assert "providers.openai.model" in str(info.value) and date in str(info.value)
    assert "gpt-image-2.6-flare" in str(info.value)


async def test_generation_takes_free_sizes_in_multiples_of_16(
    fake: OpenAIFake, gpt: OpenAIProvider
) -> None:
    req = GenerationRequest(
        prompt="a lighthouse",
        negative_prompt="people",
        n=3,
        width=1600,
        height=1000,
        steps=30,
        user_ref="slack:T1:U1",
    )
    fitted = fit_request(req, gpt.capabilities, gpt.label)
    assert fitted.request.negative_prompt is None and fitted.request.steps is None
    assert (fitted.request.width, fitted.request.height) == (1600, 992)
    assert len(fitted.notes) == 3  # size, --no, --steps: the user hears about each
    res = await gpt.generate(fitted.request)
    assert fake.violations == []
    rec = fake.requests[0]
    assert rec.path == "/v1/images/generations"
    assert rec.headers["Authorization"] == f"Bearer {KEY}"
    assert rec.json == {
        "model": "gpt-image-2.6-flare",
        "prompt": "a lighthouse",
        "n": 3,
        "size": "1600x992",
        "quality": "auto",
        "user": rec.json["user"],
    }
    assert "slack" not in rec.json["user"]
    assert len(res.images) == 3 and all(i.seed is None for i in res.images)


@pytest.mark.parametrize(
    ("want", "sent"),
    [
        ((1024, 1024), "1024x1024"),
        ((512, 512), "816x816"),
        ((1344, 768), "1344x768"),
        ((4000, 1000), "3312x1104"),
        ((3840, 2160), "2560x1440"),
    ],
)
async def test_every_size_we_send_is_one_the_fake_accepts(
    fake: OpenAIFake, gpt: OpenAIProvider, want: tuple[int, int], sent: str
) -> None:
    fitted = fit_request(
        GenerationRequest(prompt="x", width=want[0], height=want[1]), gpt.capabilities, gpt.label
    )
    await gpt.generate(fitted.request)
    assert fake.requests[-1].json["size"] == sent and fake.violations == []


async def test_the_fake_refuses_what_openai_refuses(fake: OpenAIFake) -> None:
    async with httpx.AsyncClient(
        base_url=fake.api_url, headers={"Authorization": f"Bearer {KEY}"}
    ) as c:
        for size in ("1000x1000", "4000x1000", "512x512", "4096x2304"):
            r = await c.post(
                "/images/generations", json={"model": "gpt-image-2", "prompt": "x", "size": size}
            )
            assert r.status_code == 400, size
        r = await c.post(
            "/images/generations", json={"model": "gpt-image-2", "prompt": "x", "quality": "max"}
        )
        assert r.status_code == 400  # gpt-image-2 stops at "high"
        r = await c.post(
            "/images/generations",
            json={"model": "dall-e-3", "prompt": "x", "response_format": "b64_json"},
        )
        assert r.status_code == 400  # response_format is gone with DALL-E
        r = await c.post("/images/generations", json={"model": "gpt-image-1", "prompt": "x"})
        assert r.status_code == 404 and "deprecated" in r.json()["error"]["message"]
        assert r.json()["error"]["code"] == "model_not_found"
        listed = (await c.get("/models")).json()["data"]
        assert sorted(m["id"] for m in listed) == sorted(CURRENT_MODELS)
        assert all("shutdown_date" in m for m in listed)


async def test_gpt_image_edit_multipart(fake: OpenAIFake, gpt: OpenAIProvider) -> None:
    res = await gpt.generate(
        GenerationRequest(prompt="make it night", n=2, init_image=b"\x89PNG-init")
    )
    assert fake.violations == []
    rec = fake.requests[0]
    assert rec.path == "/v1/images/edits" and rec.content_type == "multipart/form-data"
    assert rec.files["image"][1] == b"\x89PNG-init" and rec.form["n"] == "2"
    assert rec.form["size"] == "1024x1024"
    assert len(res.images) == 2


async def test_more_images_than_one_call_takes_are_split(fake: OpenAIFake) -> None:
    p = make(fake, max_n_per_call=2)
    assert p.capabilities.max_n_per_call == 2
    res = await generate_split(p, GenerationRequest(prompt="x", n=5), parallel=3)
    await p.aclose()
    assert sorted(r.json["n"] for r in fake.requests) == [1, 2, 2] and len(res.images) == 5
    assert fake.violations == []


async def test_a_retired_model_raises_model_retired_naming_the_setting(
    fake: OpenAIFake, gpt: OpenAIProvider
) -> None:
    fake.retire("gpt-image-2.6-flare")
    with pytest.raises(ModelRetired) as info:
        await gpt.generate(GenerationRequest(prompt="x"))
    err = info.value
    assert err.global_failure and err.setting == "providers.openai.model"
    assert "providers.openai.model" in err.user_message
    assert len(fake.requests) == 1


async def test_an_unknown_model_raises_model_unavailable(fake: OpenAIFake) -> None:
    p = make(fake, model="gpt-image-9")
    with pytest.raises(ModelUnavailable) as info:
        await p.generate(GenerationRequest(prompt="x"))
    assert not isinstance(info.value, ModelRetired)
    await p.aclose()


@pytest.mark.parametrize(
    ("status", "kind", "code", "exc", "calls"),
    [
        (400, "image_generation_user_error", "moderation_blocked", ContentFiltered, 1),
        (400, "invalid_request_error", "content_policy_violation", ContentFiltered, 1),
        (400, "invalid_request_error", None, InvalidRequest, 1),
        (401, "invalid_request_error", "invalid_api_key", AuthFailed, 1),
        (403, "invalid_request_error", None, AuthFailed, 1),
        (404, "invalid_request_error", "model_not_found", ModelUnavailable, 1),
        (429, "insufficient_quota", "insufficient_quota", QuotaExhausted, 1),
        (503, "server_error", None, ProviderUnavailable, 2),
    ],
)
async def test_errors(
    fake: OpenAIFake,
    gpt: OpenAIProvider,
    status: int,
    kind: str,
    code: str | None,
    exc: type[Exception],
    calls: int,
) -> None:
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
    p = OpenAIProvider(OpenAISettings.from_mapping({"rate_limit_retries": 1}, env), sleep=sleep)
    err = {
        "error": {
            "message": "Rate limit",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
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


async def test_check_reads_the_model_and_no_warning_without_a_shutdown_date(
    fake: OpenAIFake, gpt: OpenAIProvider
) -> None:
    facts = await gpt.check()
    assert facts["model"] == "gpt-image-2.6-flare (available)"
    assert "warning" not in facts
    assert fake.requests[-1].path == "/v1/models/gpt-image-2.6-flare"


async def test_check_warns_ahead_of_a_shutdown_date(fake: OpenAIFake, gpt: OpenAIProvider) -> None:
    fake.shutdown_dates["gpt-image-2.6-flare"] = "2027-03-02"
    facts = await gpt.check()
    warning = facts["warning"]
    assert "2027-03-02" in warning and "in 91 days" in warning
    assert "providers.openai.model" in warning


async def test_startup_refresh_logs_the_shutdown_warning(
    fake: OpenAIFake, gpt: OpenAIProvider, caplog: pytest.LogCaptureFixture
) -> None:
    fake.shutdown_dates["gpt-image-2.6-flare"] = "2026-12-20"
    await gpt.refresh()
    assert any("2026-12-20" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    assert gpt.warnings and "in 19 days" in gpt.warnings[0]


async def test_check_of_a_model_openai_no_longer_knows_names_the_setting(fake: OpenAIFake) -> None:
    p = make(fake, model="gpt-image-9")
    with pytest.raises(CheckFailed) as info:
        await p.check()
    assert info.value.url.endswith("/v1/models/gpt-image-9")
    assert "providers.openai.model" in info.value.cause
    await p.aclose()
