"""AUTOMATIC1111 / Forge provider against the fake webui, over real loopback HTTP."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest

from bot.errors import ConfigError
from bot.providers.automatic1111 import Automatic1111Provider, Automatic1111Settings
from bot.providers.base import (
    AuthFailed,
    CheckFailed,
    GenerationRequest,
    InvalidRequest,
    ModelUnavailable,
    NotSupported,
    ProviderUnavailable,
    fit_request,
    generate_split,
)
from tests.fakes.automatic1111 import Automatic1111Fake

USER, PASSWORD = "bot", "TEST-SENTINEL-a1111-password"


async def no_sleep(_: float) -> None:
    return None


def make(
    fake: Automatic1111Fake, env_extra: dict[str, str] | None = None, **section: object
) -> Automatic1111Provider:
    env = {"AUTOMATIC1111_BASE_URL": fake.base_url, **(env_extra or {})}
    return Automatic1111Provider(Automatic1111Settings.from_mapping(section, env), sleep=no_sleep)


@pytest.fixture
async def fake() -> AsyncIterator[Automatic1111Fake]:
    async with Automatic1111Fake(auth=(USER, PASSWORD)) as f:
        yield f


@pytest.fixture
async def webui(fake: Automatic1111Fake) -> AsyncIterator[Automatic1111Provider]:
    p = make(fake, {"AUTOMATIC1111_USER": USER, "AUTOMATIC1111_PASSWORD": PASSWORD})
    yield p
    await p.aclose()


def test_settings() -> None:
    with pytest.raises(ConfigError, match="AUTOMATIC1111_PASSWORD"):
        Automatic1111Settings.from_mapping({}, {"AUTOMATIC1111_USER": "u"})
    with pytest.raises(ConfigError, match=r"providers\.automatic1111\.max_n_per_call"):
        Automatic1111Settings.from_mapping({"max_n_per_call": 0}, {})
    s = Automatic1111Settings.from_mapping(
        {}, {"AUTOMATIC1111_USER": USER, "AUTOMATIC1111_PASSWORD": PASSWORD}
    )
    assert PASSWORD not in repr(s) and s.base_url == "http://127.0.0.1:7860"


async def test_txt2img_fields_auth_and_seeds(
    fake: Automatic1111Fake, webui: Automatic1111Provider
) -> None:
    req = GenerationRequest(
        prompt="a cat",
        negative_prompt="dog",
        n=3,
        width=640,
        height=512,
        seed=77,
        steps=25,
        cfg=6.5,
        sampler="Euler a",
        model="sd_xl_base_1.0",
    )
    res = await webui.generate(req)
    assert fake.violations == [] and fake.fallbacks == []
    [rec] = fake.requests_to("/txt2img")
    assert rec.headers["Authorization"].startswith("Basic ")
    assert rec.json["batch_size"] == 3 and rec.json["n_iter"] == 1
    assert rec.json["sampler_name"] == "Euler a" and rec.json["cfg_scale"] == 6.5
    assert rec.json["override_settings"] == {"sd_model_checkpoint": "sd_xl_base_1.0"}
    assert [img.seed for img in res.images] == [77, 78, 79]
    assert res.model == "sd_xl_base_1.0"


async def test_seed_random_read_back_and_grid_skipped() -> None:
    async with Automatic1111Fake(return_grid=True) as fake:
        p = make(fake)
        res = await p.generate(GenerationRequest(prompt="x", n=2, seed=0))
        fake.next_random_seed = 5
        res2 = await p.generate(GenerationRequest(prompt="x", n=2, seed=-1))
        await p.aclose()
    assert len(res.images) == 2 and all(b"grid" not in i.data for i in res.images)
    assert [i.seed for i in res2.images] == [5, 6]


async def test_img2img_sends_base64_and_denoise(
    fake: Automatic1111Fake, webui: Automatic1111Provider
) -> None:
    init = b"\x89PNG\r\n\x1a\nfake"
    res = await webui.generate(GenerationRequest(prompt="x", init_image=init, strength=0.3, seed=1))
    assert fake.violations == []
    rec = fake.requests[0]
    assert rec.path == "/sdapi/v1/img2img"
    assert base64.b64decode(rec.json["init_images"][0]) == init
    assert rec.json["denoising_strength"] == 0.3
    assert res.images[0].seed == 1


async def test_refresh_reads_samplers_schedulers_and_models(
    fake: Automatic1111Fake, webui: Automatic1111Provider
) -> None:
    assert webui.capabilities.samplers is None  # nothing read yet
    facts = await webui.check()
    caps = webui.capabilities
    assert caps.samplers is not None and "DPM++ 2M" in caps.samplers
    assert caps.schedulers is not None and "Karras" in caps.schedulers
    assert "sd_xl_base_1.0" in caps.models
    assert PASSWORD not in str(facts) and "Karras" in facts["schedulers"]
    fitted = fit_request(GenerationRequest(prompt="x", sampler="euler a"), caps, webui.label)
    assert fitted.request.sampler == "Euler a"
    fitted = fit_request(GenerationRequest(prompt="x", sampler="k_dpmpp_2m"), caps, webui.label)
    assert fitted.request.sampler == "DPM++ 2M"
    fitted = fit_request(
        GenerationRequest(prompt="x", sampler="dpm++ 2m karras"), caps, webui.label
    )
    assert fitted.request.sampler == "DPM++ 2M Karras"  # split when the webui is called
    with pytest.raises(NotSupported, match="Did you mean 'Euler a'"):
        fit_request(GenerationRequest(prompt="x", sampler="euler_a"), caps, webui.label)


async def test_split_n6_in_calls_of_four(
    fake: Automatic1111Fake, webui: Automatic1111Provider
) -> None:
    res = await generate_split(webui, GenerationRequest(prompt="x", n=6, seed=10), parallel=1)
    assert [r.json["batch_size"] for r in fake.requests] == [4, 2]
    assert [i.seed for i in res.images] == [10, 11, 12, 13, 14, 15]


async def test_wrong_password_is_auth_failed(fake: Automatic1111Fake) -> None:
    p = make(fake, {"AUTOMATIC1111_USER": USER, "AUTOMATIC1111_PASSWORD": "wrong"})
    with pytest.raises(AuthFailed) as info:
        await p.generate(GenerationRequest(prompt="x"))
    await p.aclose()
    assert info.value.global_failure and len(fake.requests) == 1


async def test_an_unknown_sampler_is_refused_not_silently_replaced(
    fake: Automatic1111Fake, webui: Automatic1111Provider
) -> None:
    # webui 1.9+ would run its default sampler instead; we refuse before calling it.
    with pytest.raises(InvalidRequest) as info:
        await webui.generate(GenerationRequest(prompt="x", sampler="Eulr a"))
    assert "no sampler 'Eulr a'. Did you mean 'Euler a'?" in info.value.user_message
    assert fake.requests_to("2img") == [] and fake.fallbacks == []
    assert fake.requests_to("/sdapi/v1/samplers")  # it read the list to know


async def test_the_sampler_list_is_cached(
    fake: Automatic1111Fake, webui: Automatic1111Provider
) -> None:
    for _ in range(3):
        await webui.generate(GenerationRequest(prompt="x", sampler="Euler a"))
    assert len(fake.requests_to("/sdapi/v1/samplers")) == 1
    assert [r.json["sampler_name"] for r in fake.requests_to("/txt2img")] == ["Euler a"] * 3
    assert fake.fallbacks == []


async def test_a_stale_list_is_read_again(fake: Automatic1111Fake) -> None:
    p = make(
        fake, {"AUTOMATIC1111_USER": USER, "AUTOMATIC1111_PASSWORD": PASSWORD}, catalog_ttl_s=0
    )
    await p.generate(GenerationRequest(prompt="x", sampler="Euler"))
    await p.generate(GenerationRequest(prompt="x", sampler="Euler"))
    await p.aclose()
    assert len(fake.requests_to("/sdapi/v1/samplers")) == 2


async def test_a_combined_name_is_sent_as_sampler_and_scheduler(
    fake: Automatic1111Fake, webui: Automatic1111Provider
) -> None:
    await webui.generate(GenerationRequest(prompt="x", sampler="DPM++ 2M Karras"))
    [call] = fake.requests_to("/txt2img")
    assert (call.json["sampler_name"], call.json["scheduler"]) == ("DPM++ 2M", "karras")
    assert fake.fallbacks == [] and fake.violations == []


async def test_the_scheduler_field_from_the_request_or_the_setting(fake: Automatic1111Fake) -> None:
    env = {"AUTOMATIC1111_USER": USER, "AUTOMATIC1111_PASSWORD": PASSWORD}
    p = make(fake, env, sampler="Euler", scheduler="SGM Uniform")
    await p.generate(GenerationRequest(prompt="x"))
    await p.generate(GenerationRequest(prompt="x", scheduler="exponential"))
    with pytest.raises(InvalidRequest) as info:
        await p.generate(GenerationRequest(prompt="x", scheduler="karas"))
    assert "Did you mean 'Karras'?" in info.value.user_message
    await p.aclose()
    calls = fake.requests_to("/txt2img")
    assert [c.json["scheduler"] for c in calls] == ["sgm_uniform", "exponential"]
    assert fake.fallbacks == []


async def test_check_warns_about_a_misspelt_default_sampler(fake: Automatic1111Fake) -> None:
    env = {"AUTOMATIC1111_USER": USER, "AUTOMATIC1111_PASSWORD": PASSWORD}
    p = make(fake, env, sampler="DPM++ 2M Karas")
    facts = await p.check()
    await p.aclose()
    assert "providers.automatic1111.sampler" in facts["warning"]
    assert "Did you mean" in facts["warning"]


async def test_a_webui_before_1_9_has_no_schedulers() -> None:
    async with Automatic1111Fake(webui="1.8") as fake:
        p = make(fake)
        await p.generate(GenerationRequest(prompt="x", sampler="DPM++ 2M Karras"))
        with pytest.raises(InvalidRequest, match="no schedulers"):
            await p.generate(GenerationRequest(prompt="x", scheduler="Karras"))
        with pytest.raises(InvalidRequest):
            await p.generate(GenerationRequest(prompt="x", sampler="Bogus"))
        await p.aclose()
        [call] = fake.requests_to("/txt2img")
        assert call.json["sampler_name"] == "DPM++ 2M Karras" and "scheduler" not in call.json
        assert p.capabilities.schedulers is None and fake.violations == []


async def test_check_failures_name_the_url_and_cause() -> None:
    async with Automatic1111Fake() as fake:
        url = fake.base_url
    p = make_url(url)
    with pytest.raises(CheckFailed) as info:
        await p.check()
    await p.aclose()
    assert info.value.url.startswith(url + "/sdapi/v1/")
    assert "cannot reach" in info.value.cause and "ConnectError" in info.value.cause


def make_url(url: str) -> Automatic1111Provider:
    return Automatic1111Provider(
        Automatic1111Settings.from_mapping({"connect_retries": 0}, {"AUTOMATIC1111_BASE_URL": url}),
        sleep=no_sleep,
    )


async def test_422_validation_is_invalid_request(
    fake: Automatic1111Fake, webui: Automatic1111Provider
) -> None:
    fake.fail_next(
        422,
        json={
            "detail": [
                {
                    "loc": ["body", "steps"],
                    "msg": "value is not a valid integer",
                    "type": "type_error.integer",
                }
            ]
        },
    )
    with pytest.raises(InvalidRequest, match="valid integer"):
        await webui.generate(GenerationRequest(prompt="x"))


async def test_out_of_memory_500_retried_once(
    fake: Automatic1111Fake, webui: Automatic1111Provider
) -> None:
    oom = {
        "error": "OutOfMemoryError",
        "detail": "",
        "body": "",
        "errors": "CUDA out of memory. Tried to allocate 2.00 GiB",
    }
    fake.fail_next(500, json=oom, times=2)
    with pytest.raises(ProviderUnavailable):
        await webui.generate(GenerationRequest(prompt="x"))
    assert len(fake.requests) == 2


async def test_connection_refused_is_unavailable() -> None:
    async with Automatic1111Fake() as fake:
        url = fake.base_url
    p = Automatic1111Provider(
        Automatic1111Settings.from_mapping({"connect_retries": 0}, {"AUTOMATIC1111_BASE_URL": url}),
        sleep=no_sleep,
    )
    with pytest.raises(ProviderUnavailable, match="cannot reach"):
        await p.generate(GenerationRequest(prompt="x"))
    await p.aclose()


async def test_hang_hits_read_timeout_without_retry(fake: Automatic1111Fake) -> None:
    p = make(fake, {"AUTOMATIC1111_USER": USER, "AUTOMATIC1111_PASSWORD": PASSWORD}, timeout_s=0.3)
    fake.fail_next(mode="hang")
    with pytest.raises(ProviderUnavailable, match="timed out"):
        await p.generate(GenerationRequest(prompt="x"))
    await p.aclose()
    assert len(fake.requests) == 1  # the webui may still be rendering it: no second job


async def test_a_configured_checkpoint_the_webui_lacks_alerts_with_the_setting(
    fake: Automatic1111Fake,
) -> None:
    env = {"AUTOMATIC1111_USER": USER, "AUTOMATIC1111_PASSWORD": PASSWORD}
    p = make(fake, env, checkpoint="sd_xl_turbo_1.0")
    with pytest.raises(ModelUnavailable) as info:
        await p.generate(GenerationRequest(prompt="x"))
    assert info.value.setting == "providers.automatic1111.checkpoint"
    assert fake.requests_to("2img") == []
    ok = make(fake, env, checkpoint="v1-5-pruned-emaonly.safetensors [6ce0161689]")
    await ok.generate(GenerationRequest(prompt="x"))
    await p.aclose()
    await ok.aclose()
    assert fake.violations == []
