"""Cerebrium provider against a fake Cerebrium deployment, over real loopback HTTP."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from bot.errors import ConfigError
from bot.providers.base import (
    AuthFailed,
    GenerationRequest,
    InvalidRequest,
    NotFound,
    NotSupported,
    ProviderUnavailable,
    fit_request,
    generate_split,
)
from bot.providers.cerebrium import CerebriumProvider, CerebriumSettings, is_documented_host
from tests.conftest import REPO
from tests.fakes.cerebrium import CerebriumFake

KEY = "TEST-SENTINEL-cerebrium-jwt"


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture
async def fake() -> AsyncIterator[CerebriumFake]:
    async with CerebriumFake(api_key=KEY) as f:
        yield f


def make(fake: CerebriumFake, **section: object) -> CerebriumProvider:
    section = {"url": fake.url, "img2img_url": fake.img2img_url, **section}
    return CerebriumProvider(
        CerebriumSettings.from_mapping(section, {"CEREBRIUM_API_KEY": KEY}), sleep=no_sleep
    )


@pytest.fixture
async def cb(fake: CerebriumFake) -> AsyncIterator[CerebriumProvider]:
    p = make(fake)
    yield p
    await p.aclose()


def test_settings() -> None:
    with pytest.raises(ConfigError, match=r"providers\.cerebrium\.url"):
        CerebriumSettings.from_mapping({}, {})
    with pytest.raises(ConfigError, match=r"providers\.cerebrium\.auth_scheme"):
        CerebriumSettings.from_mapping({"url": "https://x/p", "auth_scheme": "digest"}, {})
    s = CerebriumSettings.from_mapping(
        {}, {"CEREBRIUM_API_BASE_URL": "https://api.x/v4/p/a", "CEREBRIUM_API_KEY": KEY}
    )
    assert s.url == "https://api.x/v4/p/a" and KEY not in repr(s) and s.img2img_url is None


async def test_txt2img_fields_and_seeds(fake: CerebriumFake, cb: CerebriumProvider) -> None:
    req = GenerationRequest(
        prompt="a boat",
        negative_prompt="rain",
        n=2,
        width=768,
        height=512,
        seed=4242,
        steps=30,
        cfg=7.5,
    )
    res = await cb.generate(req)
    assert fake.violations == []
    rec = fake.requests[0]
    assert rec.headers["Authorization"] == f"Bearer {KEY}"
    assert rec.json == {
        "prompt": "a boat",
        "negative_prompt": "rain",
        "height": 512,
        "width": 768,
        "num_images_per_prompt": 2,
        "seed": 4242,
        "num_inference_steps": 30,
        "guidance_scale": 7.5,
    }
    assert [i.seed for i in res.images] == [4242, 4243] and res.request_id


async def test_img2img_uses_second_endpoint(fake: CerebriumFake, cb: CerebriumProvider) -> None:
    res = await cb.generate(GenerationRequest(prompt="x", init_image=b"init-bytes", seed=1))
    assert fake.violations == []
    rec = fake.requests[0]
    assert rec.path.endswith("/sd-img-2-img/predict")
    assert base64.b64decode(rec.json["image"]) == b"init-bytes"
    assert res.images[0].seed == 1


async def test_no_img2img_endpoint_means_no_capability(fake: CerebriumFake) -> None:
    p = CerebriumProvider(CerebriumSettings.from_mapping({"url": fake.url}, {}))
    with pytest.raises(NotSupported):
        fit_request(GenerationRequest(prompt="x", init_image=b"i"), p.capabilities, p.label)
    await p.aclose()


async def test_split_and_single_string_result() -> None:
    async with CerebriumFake(api_key=KEY, bearer=False, single_string=True) as fake:
        p = make(fake, auth_scheme="plain", max_n_per_call=1)
        res = await generate_split(p, GenerationRequest(prompt="x", n=3, seed=10), parallel=3)
        await p.aclose()
    assert fake.violations == [] and len(fake.requests) == 3
    assert fake.requests[0].headers["Authorization"] == KEY
    assert sorted(i.seed or 0 for i in res.images) == [10, 11, 12]
    assert sorted(r.json["seed"] for r in fake.requests) == [10, 11, 12]


@pytest.mark.parametrize(
    ("status", "exc", "calls"),
    [
        (401, AuthFailed, 1),
        (403, AuthFailed, 1),
        (404, NotFound, 1),
        (422, InvalidRequest, 1),
        # Cerebrium: "errors result in a status code of 500" - the function ran and was billed,
        # so a generation is never sent twice; other 5xx are undocumented, so neither.
        (500, ProviderUnavailable, 1),
        (502, ProviderUnavailable, 1),
        (503, ProviderUnavailable, 1),
    ],
)
async def test_errors(
    fake: CerebriumFake, cb: CerebriumProvider, status: int, exc: type[Exception], calls: int
) -> None:
    fake.fail_next(status, json={"run_id": "r", "message": "failed", "result": None}, times=2)
    with pytest.raises(exc):
        await cb.generate(GenerationRequest(prompt="x"))
    assert len(fake.requests) == calls


async def test_200_without_result_is_unavailable(
    fake: CerebriumFake, cb: CerebriumProvider
) -> None:
    fake.fail_next(200, json={"run_id": "r", "message": "CUDA error", "result": None})
    with pytest.raises(ProviderUnavailable, match="no images"):
        await cb.generate(GenerationRequest(prompt="x"))
    assert len(fake.requests) == 1


async def test_wrong_key(fake: CerebriumFake) -> None:
    p = CerebriumProvider(
        CerebriumSettings.from_mapping({"url": fake.url}, {"CEREBRIUM_API_KEY": "wrong"})
    )
    with pytest.raises(AuthFailed):
        await p.generate(GenerationRequest(prompt="x"))
    await p.aclose()


def test_the_example_endpoint_is_on_a_documented_host() -> None:
    # The endpoint admins copy from default.toml must be one Cerebrium documents.
    text = (REPO / "config" / "default.toml").read_text()
    section = text[text.index("[providers.cerebrium]") :]
    [url] = re.findall(r'^# url = "([^"]+)"', section, re.M)[:1]
    host = httpx.URL(url).host
    assert is_documented_host(host), host
    assert re.fullmatch(r"/v4/p-[0-9a-z]+/[\w-]+/[\w-]+", httpx.URL(url).path)
    assert not is_documented_host("api.cerebrium.ai")  # the old example: not in the docs
    assert is_documented_host("api.aws.eu-west-2.cerebrium.ai")


async def test_check_warns_about_an_undocumented_host() -> None:
    p = CerebriumProvider(
        CerebriumSettings.from_mapping({"url": "https://api.cerebrium.ai/v4/p-1/app/predict"}, {})
    )
    facts = await p.check()
    await p.aclose()
    assert "api.cerebrium.ai" in facts["warning"] and "api.aws.us-east-1" in facts["warning"]
