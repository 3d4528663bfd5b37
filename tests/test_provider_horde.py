"""The AI Horde provider against the strict Horde fake, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator

import pytest
from PIL import Image

from bot.errors import ConfigError
from bot.providers.base import (
    AuthFailed,
    CheckFailed,
    ContentFiltered,
    GenerationRequest,
    InvalidRequest,
    ModelUnavailable,
    NotSupported,
    ProviderUnavailable,
    RateLimited,
    WeightedPrompt,
    fit_request,
    generate_split,
    progress_note,
)
from bot.providers.horde import ANONYMOUS_KEY, HordeProvider, HordeSettings, horde_prompt
from tests.fakes.horde import HordeFake

KEY = "TEST-SENTINEL-horde-key-4f2a"


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, s: float) -> None:
        self.waits.append(s)
        await asyncio.sleep(0)


@pytest.fixture
async def fake() -> AsyncIterator[HordeFake]:
    async with HordeFake(keys={KEY: "imagine#4242"}) as f:
        yield f


def make(
    fake: HordeFake, key: str | None = None, sleep: Sleeps | None = None, **section: object
) -> HordeProvider:
    env = {"AI_HORDE_BASE_URL": fake.api_url, **({"AI_HORDE_API_KEY": key} if key else {})}
    return HordeProvider(HordeSettings.from_mapping(section, env), sleep=sleep or Sleeps())


@pytest.fixture
async def horde(fake: HordeFake) -> AsyncIterator[HordeProvider]:
    p = make(fake)
    yield p
    await p.aclose()


# ----------------------------------------------------------------------------------- settings
def test_settings() -> None:
    anon = HordeSettings.from_mapping({}, {})
    assert anon.api_key == ANONYMOUS_KEY and anon.anonymous
    assert anon.base_url == "https://aihorde.net/api"
    keyed = HordeSettings.from_mapping({"models": ["Deliberate"]}, {"AI_HORDE_API_KEY": KEY})
    assert not keyed.anonymous and KEY not in repr(keyed) and keyed.models == ("Deliberate",)
    assert keyed.client_agent.startswith("imagine-bot:") and keyed.client_agent.count(":") == 2
    with pytest.raises(ConfigError, match=r"providers\.horde\.poll_interval_s"):
        HordeSettings.from_mapping({"poll_interval_s": 0.2}, {})  # faster than the Horde allows
    with pytest.raises(ConfigError, match=r"providers\.horde\.models"):
        HordeSettings.from_mapping({"models": "Deliberate"}, {})
    with pytest.raises(ConfigError, match=r"providers\.horde\.api_key"):
        HordeSettings.from_mapping({"api_key": KEY}, {})
    with pytest.raises(ConfigError, match=r"providers\.horde\.max_side"):
        HordeSettings.from_mapping({"max_side": 1000}, {})


def test_the_prompt_carries_weights_and_the_negative_after_the_separator() -> None:
    req = GenerationRequest(
        "a fox",
        negative_prompt="blur",
        weighted_prompts=(
            WeightedPrompt("a fox", 1.0),
            WeightedPrompt("snow", 1.5),
            WeightedPrompt("dogs", -1),
        ),
    )
    assert horde_prompt(req) == "a fox, (snow:1.5) ### blur, dogs"
    assert horde_prompt(GenerationRequest("a ### b")) == "a # b"


# ------------------------------------------------------------------------------- generating
async def test_a_request_is_submitted_polled_and_read_once(fake: HordeFake) -> None:
    sleeps = Sleeps()
    p = make(fake, sleep=sleeps)
    progress: list[float] = []
    fitted = fit_request(
        GenerationRequest(
            "a lighthouse",
            negative_prompt="people",
            n=2,
            width=768,
            height=512,
            seed=41,
            steps=30,
            cfg=6.55,
            sampler="euler a",
        ),
        p.capabilities,
        p.label,
    )
    res = await p.generate(fitted.request, progress.append)
    await p.aclose()
    assert fake.violations == []
    [submit] = fake.requests_to("/generate/async")
    assert submit.headers["apikey"] == ANONYMOUS_KEY
    assert submit.json["prompt"] == "a lighthouse ### people"
    assert submit.json["r2"] is False and submit.json["shared"] is False
    assert submit.json["params"] == {
        "width": 768,
        "height": 512,
        "n": 2,
        "seed": "41",
        "seed_variation": 1,
        "steps": 30,
        "cfg_scale": 6.55,
        "sampler_name": "k_euler_a",
    }
    assert "models" not in submit.json  # any model a worker has
    # Polled the light check until done, read the full status once, never faster than 1 s.
    assert len(fake.requests_to("/generate/check/")) == 3
    assert len(fake.requests_to("/generate/status/")) == 1
    assert sleeps.waits == [3.0, 3.0]
    assert all(a.startswith("imagine-bot:") and a.count(":") == 2 for a in fake.client_agents)
    assert [i.seed for i in res.images] == [41, 42] and not any(i.filtered for i in res.images)
    with Image.open(__import__("io").BytesIO(res.images[0].data)) as im:
        assert im.format == "WEBP"
    assert res.model == "AlbedoBase XL (SDXL)" and res.request_id
    # The queue position and wait time came with the progress.
    notes = [progress_note(x) for x in progress]
    assert "#12 in the Horde's queue, about 40 s" in notes
    assert "a Horde worker is on it, about 8 s" in notes


async def test_a_registered_key_and_chosen_models(fake: HordeFake) -> None:
    p = make(fake, key=KEY, models=["Deliberate"], contact="ops@example.org")
    assert p.label == "the AI Horde"
    await p.generate(GenerationRequest("x", seed=1))
    await p.generate(GenerationRequest("x", seed=1, model="Flux.1-Schnell fp8 (Compact)"))
    await p.aclose()
    first, second = fake.requests_to("/generate/async")
    assert first.headers["apikey"] == KEY and first.json["models"] == ["Deliberate"]
    assert second.json["models"] == ["Flux.1-Schnell fp8 (Compact)"]
    assert first.headers["Client-Agent"].endswith(":ops@example.org")


async def test_refresh_offers_the_models_workers_serve(
    fake: HordeFake, horde: HordeProvider
) -> None:
    await horde.refresh()
    assert "Deliberate" in horde.capabilities.models
    with pytest.raises(NotSupported, match="Did you mean 'Deliberate'"):
        fit_request(GenerationRequest("x", model="Deliberat"), horde.capabilities, horde.label)


async def test_img2img_sends_the_source_image_and_denoise(
    fake: HordeFake, horde: HordeProvider
) -> None:
    await horde.generate(GenerationRequest("x", init_image=b"\x89PNGinit", strength=0.35, seed=9))
    [submit] = fake.requests_to("/generate/async")
    assert base64.b64decode(submit.json["source_image"]) == b"\x89PNGinit"
    assert submit.json["source_processing"] == "img2img"
    assert submit.json["params"]["denoising_strength"] == 0.35 and fake.violations == []


async def test_censored_images_come_back_filtered(fake: HordeFake, horde: HordeProvider) -> None:
    fake.censor = {1}
    res = await horde.generate(GenerationRequest("x", n=3, seed=5))
    assert [i.filtered for i in res.images] == [False, True, False]


async def test_an_image_link_is_never_downloaded(fake: HordeFake) -> None:
    p = make(fake)
    body = p._body
    p._body = lambda req: {**body(req), "r2": True}  # type: ignore[method-assign]
    with pytest.raises(ProviderUnavailable, match="link"):
        await p.generate(GenerationRequest("x", seed=1))
    await p.aclose()
    # Nothing but the Horde's own routes was requested.
    assert all(r.path.startswith("/api/v2/") for r in fake.requests)


async def test_split_calls_keep_seeds_distinct(fake: HordeFake) -> None:
    p = make(fake, max_n_per_call=2)
    res = await generate_split(p, GenerationRequest("x", n=5, seed=100), parallel=3)
    await p.aclose()
    assert sorted(i.seed or 0 for i in res.images) == [100, 101, 102, 103, 104]


# ---------------------------------------------------------------------------------- failures
async def test_a_faulted_request_is_a_clear_error_and_is_cancelled(
    fake: HordeFake, horde: HordeProvider
) -> None:
    fake.faulted = True
    with pytest.raises(ProviderUnavailable) as info:
        await horde.generate(GenerationRequest("x"))
    assert "reported a fault" in info.value.user_message
    assert len(fake.cancelled) == 1


async def test_an_impossible_request_says_why(fake: HordeFake, horde: HordeProvider) -> None:
    fake.impossible = True
    with pytest.raises(ProviderUnavailable) as info:
        await horde.generate(GenerationRequest("x", width=1024, height=1024))
    assert "No AI Horde worker can make this right now" in info.value.user_message
    assert "1024x1024" in info.value.user_message
    assert len(fake.cancelled) == 1


async def test_configured_models_no_worker_serves_alert_the_admins(fake: HordeFake) -> None:
    p = make(fake, models=["Retired Model 1.0"])
    with pytest.raises(ModelUnavailable) as info:
        await p.generate(GenerationRequest("x"))
    await p.aclose()
    assert info.value.global_failure and info.value.setting == "providers.horde.models"
    assert "Retired Model 1.0" in info.value.user_message


async def test_the_deadline_cancels_the_request_on_the_horde(fake: HordeFake) -> None:
    fake.never_done = True
    # A provider that really sleeps between polls.
    p = HordeProvider(
        HordeSettings.from_mapping(
            {"deadline_s": 0.3, "poll_interval_s": 1.0}, {"AI_HORDE_BASE_URL": fake.api_url}
        )
    )
    with pytest.raises(ProviderUnavailable) as info:
        await p.generate(GenerationRequest("x"))
    await p.aclose()
    assert "did not finish in time" in info.value.user_message
    [wp] = fake.prompts
    assert fake.cancelled == [wp]
    assert fake.requests_to("/generate/status/")[-1].method == "DELETE"


async def test_a_cancelled_job_cancels_the_request_on_the_horde(fake: HordeFake) -> None:
    fake.never_done = True
    p = HordeProvider(
        HordeSettings.from_mapping({"poll_interval_s": 1.0}, {"AI_HORDE_BASE_URL": fake.api_url})
    )
    task = asyncio.create_task(p.generate(GenerationRequest("x")))
    await fake.checked.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await p.aclose()  # waits for the DELETE
    assert len(fake.cancelled) == 1


@pytest.mark.parametrize(
    ("section", "req", "exc", "text"),
    [
        ({}, GenerationRequest("x", width=1536, height=1536), InvalidRequest, "kudos up front"),
        ({}, GenerationRequest("x", steps=80), InvalidRequest, "kudos up front"),
    ],
)
async def test_anonymous_limits_are_explained(
    fake: HordeFake,
    section: dict[str, object],
    req: GenerationRequest,
    exc: type[Exception],
    text: str,
) -> None:
    p = make(fake, max_side=2048, max_steps=100, **section)
    with pytest.raises(InvalidRequest) as info:
        await p.generate(req)
    await p.aclose()
    assert text in info.value.user_message and "AI_HORDE_API_KEY" in info.value.user_message
    assert fake.prompts == {}


async def test_the_default_capabilities_keep_anonymous_requests_acceptable(
    fake: HordeFake, horde: HordeProvider
) -> None:
    fitted = fit_request(
        GenerationRequest("x", width=1536, height=1536, steps=80), horde.capabilities, horde.label
    )
    await horde.generate(fitted.request)
    assert (fitted.request.width, fitted.request.height, fitted.request.steps) == (1024, 1024, 50)
    assert fake.violations == [] and len(fake.prompts) == 1


async def test_too_many_requests_is_rate_limited(fake: HordeFake) -> None:
    fake.never_done = True
    fake.max_waiting = 1
    p = make(fake, deadline_s=5)
    first = asyncio.create_task(p.generate(GenerationRequest("x")))
    await fake.submitted.wait()
    with pytest.raises(RateLimited) as info:
        await p.generate(GenerationRequest("y"))
    assert "as many requests from this bot" in info.value.user_message
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    await p.aclose()


@pytest.mark.parametrize(
    ("status", "rc", "exc"),
    [
        (401, "InvalidAPIKey", AuthFailed),
        (400, "CorruptPrompt", ContentFiltered),
        (400, "MaintenanceMode", ProviderUnavailable),
        (403, "TimeoutIP", ProviderUnavailable),
        (500, "InternalServerError", ProviderUnavailable),
    ],
)
async def test_error_codes(
    fake: HordeFake, horde: HordeProvider, status: int, rc: str, exc: type[Exception]
) -> None:
    fake.fail_next(status, path="/generate/async", json={"message": "no", "rc": rc}, times=2)
    with pytest.raises(exc):
        await horde.generate(GenerationRequest("x"))
    # A 500 may have queued the request: never submitted twice.
    assert len(fake.requests_to("/generate/async")) == 1


async def test_a_wrong_key_is_auth_failed(fake: HordeFake) -> None:
    p = make(fake, key="not-a-key")
    with pytest.raises(AuthFailed):
        await p.generate(GenerationRequest("x"))
    await p.aclose()


async def test_check_reports_account_models_and_failures(
    fake: HordeFake, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    p = make(fake, key=KEY, models=["Deliberate", "Gone XL"])
    facts = await p.check()
    await p.aclose()
    assert facts["account"] == "imagine#4242, 1234.5 kudos"
    assert "AlbedoBase XL (SDXL) (14 workers)" in facts["models"]
    assert "Gone XL" in facts["warning"] and "providers.horde.models" in facts["warning"]
    assert KEY not in str(facts) and KEY not in caplog.text
    anon = make(fake)
    assert "anonymous" in (await anon.check())["key"]
    await anon.aclose()
    async with HordeFake() as gone:
        url = gone.api_url
    dead = HordeProvider(
        HordeSettings.from_mapping({"connect_retries": 0}, {"AI_HORDE_BASE_URL": url})
    )
    with pytest.raises(CheckFailed) as info:
        await dead.check()
    await dead.aclose()
    assert info.value.url == f"{url}/v2/find_user" and "ConnectError" in info.value.cause
