"""Stability AI provider against the fake Stability server, over real loopback HTTP."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest

from bot.errors import ConfigError
from bot.providers.base import (
    AuthFailed,
    CheckFailed,
    ContentFiltered,
    GenerationRequest,
    InvalidRequest,
    ModelUnavailable,
    NotFound,
    NotSupported,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
    WeightedPrompt,
    fit_request,
    generate_split,
)
from bot.providers.stability import StabilityProvider, StabilitySettings
from tests.fakes.stability import StabilityFake

KEY = "sk-TEST-SENTINEL-stability-0123456789"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture
async def fake() -> AsyncIterator[StabilityFake]:
    async with StabilityFake(api_key=KEY) as f:
        yield f


def make(fake: StabilityFake, **section: object) -> StabilityProvider:
    env = {"STABILITY_API_KEY": KEY, "STABILITY_API_BASE_URL": fake.base_url}
    return StabilityProvider(StabilitySettings.from_mapping(section, env), sleep=no_sleep)


@pytest.fixture
async def core(fake: StabilityFake) -> AsyncIterator[StabilityProvider]:
    p = make(fake, model="core")
    yield p
    await p.aclose()


@pytest.fixture
async def sdxl(fake: StabilityFake) -> AsyncIterator[StabilityProvider]:
    p = make(fake, model="stable-diffusion-xl-1024-v1-0")
    yield p
    await p.aclose()


# ----------------------------------------------------------------------------------- settings
def test_settings_need_key_and_hide_it() -> None:
    with pytest.raises(ConfigError, match="STABILITY_API_KEY"):
        StabilitySettings.from_mapping({}, {})
    s = StabilitySettings.from_mapping({}, {"STABILITY_API_KEY": KEY})
    assert KEY not in repr(s)
    assert s.base_url == "https://api.stability.ai"


def test_settings_errors_name_the_key() -> None:
    env = {"STABILITY_API_KEY": KEY}
    with pytest.raises(ConfigError, match=r"providers\.stability\.timeout_s"):
        StabilitySettings.from_mapping({"timeout_s": "slow"}, env)
    with pytest.raises(ConfigError, match=r"providers\.stability\.api_key"):
        StabilitySettings.from_mapping({"api_key": "sk-in-file"}, env)
    with pytest.raises(ConfigError, match=r"providers\.stability\.base_url"):
        StabilitySettings.from_mapping({"base_url": "ftp://x"}, env)
    with pytest.raises(ConfigError, match=r"providers\.stability\.base_url"):
        StabilitySettings.from_mapping({"base_url": "https://u:p@host"}, env)


# ------------------------------------------------------------------------------------- v2beta
async def test_core_txt2img_multipart_aspect_and_seed(
    fake: StabilityFake, core: StabilityProvider
) -> None:
    req = GenerationRequest(
        prompt="a red fox",
        negative_prompt="blurry",
        width=1344,
        height=768,
        seed=1234,
        style="anime",
        user_ref="discord:g:u",
    )
    fitted = fit_request(req, core.capabilities, core.label)
    res = await core.generate(fitted.request)
    assert fake.violations == []
    (rec,) = fake.requests
    assert rec.method == "POST" and rec.path == "/v2beta/stable-image/generate/core"
    assert rec.headers["Authorization"] == f"Bearer {KEY}"
    assert rec.headers["Accept"] == "image/*"
    assert rec.form["aspect_ratio"] == "16:9"
    assert rec.form["style_preset"] == "anime"
    assert rec.form["negative_prompt"] == "blurry"
    assert rec.form["seed"] == "1234"
    assert "discord" not in rec.headers["Stability-Client-User-ID"]
    (img,) = res.images
    assert img.data.startswith(PNG_MAGIC) and img.seed == 1234 and not img.filtered


async def test_core_has_no_img2img_and_aspect_only(core: StabilityProvider) -> None:
    caps = core.capabilities
    assert caps.size_mode == "aspect" and caps.max_n_per_call == 1
    with pytest.raises(NotSupported):
        fit_request(GenerationRequest(prompt="x", init_image=b"img"), caps, core.label)
    with pytest.raises(NotSupported):
        fit_request(GenerationRequest(prompt="x", sampler="K_EULER"), caps, core.label)


async def test_core_json_accept_reads_seed_and_filter(fake: StabilityFake) -> None:
    p = make(fake, model="core", accept_json=True)
    fake.filtered = {0}
    res = await p.generate(GenerationRequest(prompt="x", seed=0))
    await p.aclose()
    assert fake.requests[0].headers["Accept"] == "application/json"
    (img,) = res.images
    assert img.filtered and img.seed is not None and img.seed > 0  # read back, not ours


async def test_v2_filtered_header_marks_image(fake: StabilityFake, core: StabilityProvider) -> None:
    fake.filtered = {0}
    res = await core.generate(GenerationRequest(prompt="x", seed=5))
    assert res.images[0].filtered


async def test_sd3_img2img_sends_strength_and_mode(fake: StabilityFake) -> None:
    p = make(fake, model="sd3.5-large")
    req = GenerationRequest(
        prompt="x", init_image=PNG_MAGIC + b"rest", strength=0.4, seed=7, cfg=5.0
    )
    res = await p.generate(req)
    await p.aclose()
    assert fake.violations == []
    rec = fake.requests[0]
    assert rec.path.endswith("/sd3")
    assert rec.form["mode"] == "image-to-image" and rec.form["model"] == "sd3.5-large"
    assert rec.form["strength"] == "0.4" and "aspect_ratio" not in rec.form
    assert rec.files["image"][1] == PNG_MAGIC + b"rest"
    assert res.images[0].seed == 7


async def test_ultra_split_n4_into_parallel_calls_with_distinct_seeds(fake: StabilityFake) -> None:
    p = make(fake, model="ultra")
    res = await generate_split(p, GenerationRequest(prompt="x", n=4, seed=100), parallel=2)
    await p.aclose()
    assert len(fake.requests) == 4
    assert sorted(img.seed or 0 for img in res.images) == [100, 101, 102, 103]


async def test_v2_content_moderation_403_is_content_filtered(
    fake: StabilityFake, core: StabilityProvider
) -> None:
    fake.fail_next(
        403,
        json={
            "id": "a1",
            "name": "content_moderation",
            "errors": ["Your request was flagged by our content moderation system."],
        },
    )
    with pytest.raises(ContentFiltered):
        await core.generate(GenerationRequest(prompt="x"))
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("status", "body", "exc"),
    [
        (
            400,
            {"id": "1", "name": "bad_request", "errors": ["prompt: is required"]},
            InvalidRequest,
        ),
        (401, {"id": "1", "name": "unauthorized", "errors": ["bad key"]}, AuthFailed),
        (402, {"id": "1", "name": "payment_required", "errors": ["lacks credits"]}, QuotaExhausted),
        (404, {"id": "1", "name": "not_found", "errors": ["nope"]}, NotFound),
        (413, {"id": "1", "name": "payload_too_large", "errors": ["too big"]}, InvalidRequest),
        (422, {"id": "1", "name": "invalid_language", "errors": ["English only"]}, InvalidRequest),
    ],
)
async def test_v2_errors_map_and_are_not_retried(
    fake: StabilityFake, core: StabilityProvider, status: int, body: object, exc: type[Exception]
) -> None:
    fake.fail_next(status, json=body)
    with pytest.raises(exc) as info:
        await core.generate(GenerationRequest(prompt="x"))
    assert len(fake.requests) == 1
    assert KEY not in str(info.value)


async def test_v2_429_waits_retry_after_then_succeeds(fake: StabilityFake) -> None:
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    env = {"STABILITY_API_KEY": KEY, "STABILITY_API_BASE_URL": fake.base_url}
    p = StabilityProvider(StabilitySettings.from_mapping({}, env), sleep=sleep)
    fake.fail_next(
        429,
        json={"id": "1", "name": "rate_limit_exceeded", "errors": ["slow down"]},
        headers={"Retry-After": "3"},
    )
    res = await p.generate(GenerationRequest(prompt="x", seed=9))
    await p.aclose()
    assert waits == [3.0] and len(fake.requests) == 2 and res.images[0].seed == 9


async def test_v2_429_beyond_cap_fails_fast(fake: StabilityFake, core: StabilityProvider) -> None:
    fake.fail_next(
        429,
        json={"id": "1", "name": "rate_limit_exceeded", "errors": ["x"]},
        headers={"Retry-After": "600"},
    )
    with pytest.raises(RateLimited) as info:
        await core.generate(GenerationRequest(prompt="x"))
    assert info.value.retry_after == 600.0 and len(fake.requests) == 1


# ----------------------------------------------------------------------------------------- v1
async def test_v1_sdxl_txt2img_weighted_prompts_and_fields(
    fake: StabilityFake, sdxl: StabilityProvider
) -> None:
    req = GenerationRequest(
        prompt="castle",
        negative_prompt="fog",
        n=3,
        width=1000,
        height=600,
        seed=50,
        steps=30,
        cfg=8.0,
        sampler="k_euler",
        style="cinematic",
        weighted_prompts=(WeightedPrompt("castle", 2.0), WeightedPrompt("moat", 0.5)),
    )
    fitted = fit_request(req, sdxl.capabilities, sdxl.label)
    assert (fitted.request.width, fitted.request.height) in {(1216, 832), (1344, 768)}
    assert fitted.notes  # the user is told the size changed
    res = await sdxl.generate(fitted.request)
    assert fake.violations == []
    rec = fake.requests[0]
    assert rec.path == "/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image"
    assert rec.json["text_prompts"] == [
        {"text": "castle", "weight": 2.0},
        {"text": "moat", "weight": 0.5},
        {"text": "fog", "weight": -1.0},
    ]
    assert rec.json["samples"] == 3 and rec.json["sampler"] == "K_EULER"
    assert rec.json["style_preset"] == "cinematic" and rec.json["steps"] == 30
    assert [img.seed for img in res.images] == [50, 51, 52]


async def test_v1_sdxl_rejects_free_sizes_in_fake(
    fake: StabilityFake, sdxl: StabilityProvider
) -> None:
    # Proves the fake really checks SDXL sizes: a hand-made bad body gets the real 400.
    import httpx

    async with httpx.AsyncClient(base_url=fake.base_url) as c:
        r = await c.post(
            "/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image",
            json={"text_prompts": [{"text": "x"}], "width": 1000, "height": 600},
            headers={"Authorization": f"Bearer {KEY}"},
        )
    assert r.status_code == 400 and r.json()["name"] == "invalid_sdxl_v1_dimensions"


async def test_v1_img2img_multipart_and_inverted_strength(
    fake: StabilityFake, sdxl: StabilityProvider
) -> None:
    req = GenerationRequest(
        prompt="castle",
        negative_prompt="fog",
        n=2,
        seed=11,
        init_image=PNG_MAGIC + b"x",
        strength=0.25,
        steps=20,
    )
    res = await sdxl.generate(req)
    assert fake.violations == []
    rec = fake.requests[0]
    assert rec.path.endswith("/image-to-image") and rec.content_type == "multipart/form-data"
    assert rec.form["text_prompts[0][text]"] == "castle"
    assert rec.form["text_prompts[1][weight]"] == "-1"
    assert rec.form["init_image_mode"] == "IMAGE_STRENGTH"
    assert rec.form["image_strength"] == "0.75"  # denoise 0.25 keeps 75 % of the image
    assert rec.files["init_image"][1] == PNG_MAGIC + b"x"
    assert [img.seed for img in res.images] == [11, 12]


async def test_v1_split_n12_runs_two_calls(fake: StabilityFake, sdxl: StabilityProvider) -> None:
    res = await generate_split(sdxl, GenerationRequest(prompt="x", n=12, seed=1), parallel=2)
    assert [r.json["samples"] for r in fake.requests] == [10, 2] or sorted(
        r.json["samples"] for r in fake.requests
    ) == [2, 10]
    assert sorted(img.seed or 0 for img in res.images) == list(range(1, 13))


async def test_v1_content_filtered_artifact(fake: StabilityFake, sdxl: StabilityProvider) -> None:
    fake.filtered = {1}
    res = await sdxl.generate(GenerationRequest(prompt="x", n=3, seed=3))
    assert [img.filtered for img in res.images] == [False, True, False]


async def test_v1_seed_zero_reads_real_seed_back(
    fake: StabilityFake, sdxl: StabilityProvider
) -> None:
    res = await sdxl.generate(GenerationRequest(prompt="x", n=2, seed=0))
    seeds = [img.seed for img in res.images]
    assert all(s is not None and s > 0 for s in seeds) and seeds[0] != seeds[1]


@pytest.mark.parametrize(
    ("status", "name", "exc"),
    [
        (400, "invalid_prompts", ContentFiltered),
        (400, "invalid_samples", InvalidRequest),
        (401, "unauthorized", AuthFailed),
        (403, "permission_denied", AuthFailed),
        (404, "not_found", NotFound),
    ],
)
async def test_v1_errors(
    fake: StabilityFake, sdxl: StabilityProvider, status: int, name: str, exc: type[Exception]
) -> None:
    fake.fail_next(status, json={"id": "x", "name": name, "message": "msg"})
    with pytest.raises(exc):
        await sdxl.generate(GenerationRequest(prompt="x"))
    assert len(fake.requests) == 1


async def test_v1_unknown_engine_is_not_found(fake: StabilityFake) -> None:
    p = make(fake, model="stable-diffusion-v1-6")
    with pytest.raises(NotFound):
        await p.generate(
            GenerationRequest(prompt="x", model="no-such-engine", width=512, height=512)
        )
    await p.aclose()
    assert fake.violations == []


async def test_v1_500_retried_once_then_ok(fake: StabilityFake, sdxl: StabilityProvider) -> None:
    fake.fail_next(
        500,
        json={"id": "x", "name": "server_error", "message": "An unexpected server error occurred"},
    )
    res = await sdxl.generate(GenerationRequest(prompt="x", seed=4))
    assert len(fake.requests) == 2 and res.images[0].seed == 4


async def test_v1_500_twice_is_unavailable_after_two_calls(
    fake: StabilityFake, sdxl: StabilityProvider
) -> None:
    fake.fail_next(500, json={"id": "x", "name": "server_error", "message": "boom"}, times=3)
    with pytest.raises(ProviderUnavailable):
        await sdxl.generate(GenerationRequest(prompt="x"))
    assert len(fake.requests) == 2


@pytest.mark.parametrize("mode", ["malformed", "truncated"])
async def test_v1_broken_bodies_are_unavailable_without_retry(
    fake: StabilityFake, sdxl: StabilityProvider, mode: str
) -> None:
    fake.fail_next(mode=mode)  # type: ignore[arg-type]
    with pytest.raises(ProviderUnavailable):
        await sdxl.generate(GenerationRequest(prompt="x"))
    # A POST whose answer was cut off may have been billed: never sent twice.
    assert len(fake.requests) == 1


async def test_v1_garbage_base64_is_provider_fault(
    fake: StabilityFake, sdxl: StabilityProvider
) -> None:
    fake.fail_next(
        200, json={"artifacts": [{"base64": "not*base64!", "seed": 1, "finishReason": "SUCCESS"}]}
    )
    with pytest.raises(ProviderUnavailable):
        await sdxl.generate(GenerationRequest(prompt="x"))


async def test_endless_body_hits_deadline(fake: StabilityFake) -> None:
    p = make(fake, model="stable-diffusion-xl-1024-v1-0", deadline_s=0.5)
    fake.fail_next(mode="endless")
    with pytest.raises(ProviderUnavailable):
        await p.generate(GenerationRequest(prompt="x"))
    await p.aclose()
    assert len(fake.requests) == 1


async def test_check_reports_balance_and_engines_for_a_v1_user(
    fake: StabilityFake, sdxl: StabilityProvider
) -> None:
    facts = await sdxl.check()
    assert facts["balance"] == "42.50 credits"
    assert "stable-diffusion-xl-1024-v1-0" in facts["engines"]
    assert "stable-diffusion-v1-6" in sdxl.capabilities.models
    assert all(KEY not in v for v in facts.values())


async def test_check_for_a_v2beta_user_does_not_depend_on_the_v1_engines_list(
    fake: StabilityFake, core: StabilityProvider
) -> None:
    fake.engines_list_gone = True  # as if Stability retired /v1/engines/list
    facts = await core.check()
    assert facts["balance"] == "42.50 credits" and facts["model"] == "core"
    assert "engines" not in facts
    assert fake.requests_to("/v1/engines") == []
    await core.refresh()  # start-up: nothing to read for a v2beta model
    assert fake.requests_to("/v1/engines") == []


async def test_check_failures_name_the_url_and_cause(fake: StabilityFake) -> None:
    env = {"STABILITY_API_KEY": "sk-wrong", "STABILITY_API_BASE_URL": fake.base_url}
    p = StabilityProvider(StabilitySettings.from_mapping({}, env))
    with pytest.raises(CheckFailed) as info:
        await p.check()
    assert info.value.url == f"{fake.base_url}/v1/user/balance"
    assert "401" in info.value.cause and isinstance(info.value.error, AuthFailed)
    await p.aclose()


# ------------------------------------------------------------------- the vendor's current API
@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("sd3-large", "sd3.5-large"),
        ("sd3-large-turbo", "sd3.5-large-turbo"),
        ("sd3-medium", "sd3.5-medium"),
    ],
)
def test_the_removed_sd3_0_models_are_refused_with_their_successor(old: str, new: str) -> None:
    with pytest.raises(ConfigError, match=rf"providers\.stability\.model.*{new}"):
        StabilitySettings.from_mapping({"model": old}, {"STABILITY_API_KEY": KEY})


async def test_sd3_0_is_neither_offered_nor_accepted(
    fake: StabilityFake, core: StabilityProvider
) -> None:
    assert not any(m.startswith("sd3-") for m in core.capabilities.models)
    assert "sd3.5-flash" in core.capabilities.models
    with pytest.raises(NotSupported, match=r"no model 'sd3-large'\. Did you mean"):
        fit_request(GenerationRequest(prompt="x", model="sd3-large"), core.capabilities, core.label)
    # ... and the fake refuses it as Stability does now.
    async with httpx.AsyncClient(
        base_url=fake.base_url, headers={"Authorization": f"Bearer {KEY}"}
    ) as c:
        r = await c.post(
            "/v2beta/stable-image/generate/sd3",
            files={"prompt": (None, "x"), "model": (None, "sd3-large")},
        )
    assert r.status_code == 400 and r.json()["name"] == "bad_request"


@pytest.mark.parametrize(
    "model", ["core", "ultra", "sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium", "sd3.5-flash"]
)
async def test_style_preset_goes_to_every_generate_model(fake: StabilityFake, model: str) -> None:
    p = make(fake, model=model)
    assert "anime" in p.capabilities.native_styles
    await p.generate(GenerationRequest(prompt="x", style="anime", seed=3))
    await p.aclose()
    [call] = fake.requests
    assert call.form["style_preset"] == "anime" and fake.violations == []


async def test_sd3_5_flash_takes_no_negative_prompt(fake: StabilityFake) -> None:
    p = make(fake, model="sd3.5-flash")
    assert not p.capabilities.negative_prompt
    await p.generate(GenerationRequest(prompt="x", negative_prompt="fog", seed=3))
    await p.aclose()
    assert "negative_prompt" not in fake.requests[0].form and fake.violations == []


@pytest.mark.parametrize("model", ["core", "sd3.5-large"])
async def test_the_largest_seed_never_becomes_zero_which_means_random(
    fake: StabilityFake, model: str
) -> None:
    p = make(fake, model=model)
    fitted = fit_request(GenerationRequest(prompt="x", seed=4294967295), p.capabilities, p.label)
    await p.generate(fitted.request)
    await p.aclose()
    sent = int(fake.requests[0].form["seed"])
    assert sent != 0 and sent == fitted.request.seed
    assert fake.violations == []


async def test_a_configured_engine_stability_no_longer_knows_alerts_with_the_setting(
    fake: StabilityFake,
) -> None:
    fake.retire_engine("stable-diffusion-xl-1024-v1-0")
    p = make(fake, model="stable-diffusion-xl-1024-v1-0")
    with pytest.raises(ModelUnavailable) as info:
        await p.generate(GenerationRequest(prompt="x"))
    assert info.value.setting == "providers.stability.model" and info.value.global_failure
    # An engine the *user* picked with --model is their own problem, not an admin's.
    with pytest.raises(NotFound) as user_pick:
        await p.generate(
            GenerationRequest(prompt="x", model="stable-diffusion-v1-5", width=512, height=512)
        )
    assert not isinstance(user_pick.value, ModelUnavailable)
    await p.aclose()


async def test_a_v2beta_model_the_vendor_removed_alerts_with_the_setting(
    fake: StabilityFake,
) -> None:
    fake.sd3_models.discard("sd3.5-medium")
    p = make(fake, model="sd3.5-medium")
    with pytest.raises(ModelUnavailable) as info:
        await p.generate(GenerationRequest(prompt="x"))
    assert "'sd3.5-medium'" in info.value.user_message
    await p.aclose()


async def test_key_never_logged(
    fake: StabilityFake, sdxl: StabilityProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.fail_next(500, json={"id": "x", "name": "server_error", "message": "boom"}, times=2)
    with pytest.raises(ProviderUnavailable) as info:
        await sdxl.generate(GenerationRequest(prompt="x"))
    await sdxl.generate(GenerationRequest(prompt="x"))
    assert KEY not in caplog.text and KEY not in str(info.value)
    assert KEY not in info.value.user_message


async def test_model_override_uses_other_api(fake: StabilityFake, core: StabilityProvider) -> None:
    req = replace(
        GenerationRequest(prompt="x", seed=2, width=1024, height=1024),
        model="stable-diffusion-xl-1024-v1-0",
    )
    res = await core.generate(req)
    assert fake.requests[0].path.startswith("/v1/generation/stable-diffusion-xl-1024-v1-0")
    assert res.images[0].seed == 2
