"""AUTOMATIC1111 / Forge provider against the fake webui, over real loopback HTTP."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest

from bot.errors import ConfigError
from bot.providers.automatic1111 import Automatic1111Provider, Automatic1111Settings
from bot.providers.base import (
    AuthFailed,
    GenerationRequest,
    InvalidRequest,
    NotSupported,
    ProviderUnavailable,
    fit_request,
    generate_split,
)
from tests.fakes.automatic1111 import Automatic1111Fake

USER, PASSWORD = "bot", "TEST-SENTINEL-a1111-password"


async def no_sleep(_: float) -> None:
    return None


def make(fake: Automatic1111Fake, env_extra: dict[str, str] | None = None,
         **section: object) -> Automatic1111Provider:
    env = {"AUTOMATIC1111_BASE_URL": fake.base_url, **(env_extra or {})}
    return Automatic1111Provider(Automatic1111Settings.from_mapping(section, env),
                                 sleep=no_sleep)


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
        {}, {"AUTOMATIC1111_USER": USER, "AUTOMATIC1111_PASSWORD": PASSWORD})
    assert PASSWORD not in repr(s) and s.base_url == "http://127.0.0.1:7860"


async def test_txt2img_fields_auth_and_seeds(fake: Automatic1111Fake,
                                             webui: Automatic1111Provider) -> None:
    req = GenerationRequest(prompt="a cat", negative_prompt="dog", n=3, width=640, height=512,
                            seed=77, steps=25, cfg=6.5, sampler="Euler a",
                            model="sd_xl_base_1.0")
    res = await webui.generate(req)
    assert fake.violations == []
    rec = fake.requests[0]
    assert rec.path == "/sdapi/v1/txt2img"
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


async def test_img2img_sends_base64_and_denoise(fake: Automatic1111Fake,
                                                webui: Automatic1111Provider) -> None:
    init = b"\x89PNG\r\n\x1a\nfake"
    res = await webui.generate(GenerationRequest(prompt="x", init_image=init, strength=0.3,
                                                 seed=1))
    assert fake.violations == []
    rec = fake.requests[0]
    assert rec.path == "/sdapi/v1/img2img"
    assert base64.b64decode(rec.json["init_images"][0]) == init
    assert rec.json["denoising_strength"] == 0.3
    assert res.images[0].seed == 1


async def test_refresh_reads_samplers_and_models(fake: Automatic1111Fake,
                                                 webui: Automatic1111Provider) -> None:
    assert webui.capabilities.samplers is None  # usable before refresh: pass-through
    facts = await webui.check()
    caps = webui.capabilities
    assert caps.samplers is not None and "DPM++ 2M Karras" in caps.samplers
    assert "sd_xl_base_1.0" in caps.models
    assert PASSWORD not in str(facts)
    fitted = fit_request(GenerationRequest(prompt="x", sampler="euler a"), caps, webui.label)
    assert fitted.request.sampler == "Euler a"
    with pytest.raises(NotSupported):
        fit_request(GenerationRequest(prompt="x", sampler="nope"), caps, webui.label)


async def test_split_n6_in_calls_of_four(fake: Automatic1111Fake,
                                         webui: Automatic1111Provider) -> None:
    res = await generate_split(webui, GenerationRequest(prompt="x", n=6, seed=10), parallel=1)
    assert [r.json["batch_size"] for r in fake.requests] == [4, 2]
    assert [i.seed for i in res.images] == [10, 11, 12, 13, 14, 15]


async def test_wrong_password_is_auth_failed(fake: Automatic1111Fake) -> None:
    p = make(fake, {"AUTOMATIC1111_USER": USER, "AUTOMATIC1111_PASSWORD": "wrong"})
    with pytest.raises(AuthFailed) as info:
        await p.generate(GenerationRequest(prompt="x"))
    await p.aclose()
    assert info.value.global_failure and len(fake.requests) == 1


async def test_unknown_sampler_is_invalid_request(fake: Automatic1111Fake,
                                                  webui: Automatic1111Provider) -> None:
    with pytest.raises(InvalidRequest):
        await webui.generate(GenerationRequest(prompt="x", sampler="Bogus"))
    assert len(fake.requests) == 1 and fake.violations == ["POST /sdapi/v1/txt2img: "
                                                           "Sampler not found"]


async def test_422_validation_is_invalid_request(fake: Automatic1111Fake,
                                                 webui: Automatic1111Provider) -> None:
    fake.fail_next(422, json={"detail": [{"loc": ["body", "steps"],
                                          "msg": "value is not a valid integer",
                                          "type": "type_error.integer"}]})
    with pytest.raises(InvalidRequest, match="valid integer"):
        await webui.generate(GenerationRequest(prompt="x"))


async def test_out_of_memory_500_retried_once(fake: Automatic1111Fake,
                                              webui: Automatic1111Provider) -> None:
    oom = {"error": "OutOfMemoryError", "detail": "", "body": "",
           "errors": "CUDA out of memory. Tried to allocate 2.00 GiB"}
    fake.fail_next(500, json=oom, times=2)
    with pytest.raises(ProviderUnavailable):
        await webui.generate(GenerationRequest(prompt="x"))
    assert len(fake.requests) == 2


async def test_connection_refused_is_unavailable() -> None:
    async with Automatic1111Fake() as fake:
        url = fake.base_url
    p = Automatic1111Provider(Automatic1111Settings.from_mapping(
        {"connect_retries": 0}, {"AUTOMATIC1111_BASE_URL": url}), sleep=no_sleep)
    with pytest.raises(ProviderUnavailable, match="cannot reach"):
        await p.generate(GenerationRequest(prompt="x"))
    await p.aclose()


async def test_hang_hits_read_timeout_without_retry(fake: Automatic1111Fake) -> None:
    p = make(fake, {"AUTOMATIC1111_USER": USER, "AUTOMATIC1111_PASSWORD": PASSWORD},
             timeout_s=0.3)
    fake.fail_next(mode="hang")
    with pytest.raises(ProviderUnavailable, match="timed out"):
        await p.generate(GenerationRequest(prompt="x"))
    await p.aclose()
    assert len(fake.requests) == 1  # the webui may still be rendering it: no second job
