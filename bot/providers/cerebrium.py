"""Cerebrium: a deployed stable-diffusion function behind a configurable endpoint URL.

The default payload follows Cerebrium's stable-diffusion and sd-img-2-img prebuilts
(``prompt``, ``negative_prompt``, ``height``, ``width``, ``num_inference_steps``,
``guidance_scale``, ``num_images_per_prompt``, ``seed``, ``image`` as base64) and the answer
``{"run_id", "run_time_ms", "result": [<base64>, ...]}`` (a single string is accepted too, as
some prebuilts return one). We always send an explicit seed (the core picks one when the user
did not), so image *i* has seed ``seed + i`` and can be reproduced.

Auth: ``Authorization: Bearer <key>`` for current (v4) endpoints; ``auth_scheme = "plain"``
sends the bare key as the 2023 prebuilt docs did. The prebuilt img2img has no strength input.

Retries: Cerebrium documents 200 for success and 500 for any error, and a 500 means the
function ran, so it was billed: a generation POST is never sent twice (other 5xx are not
documented, so neither). Endpoints live on ``api.aws.<region>.cerebrium.ai`` (the docs'
example is ``api.aws.us-east-1.cerebrium.ai``) or the older ``api.cortex.cerebrium.ai``;
``check()`` warns about any other host.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from bot.errors import ConfigError
from bot.providers.base import (
    Capabilities,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    ProgressCallback,
    ProviderUnavailable,
)
from bot.providers.http import (
    HttpClient,
    HttpPolicy,
    RetryPolicy,
    Sleep,
    b64decode_many,
    default_classifier,
    get_int,
    get_secret,
    get_str,
    get_url,
    reject_unknown,
)

PREFIX = "providers.cerebrium"
# The keys of this provider's config table (plus the shared HTTP ones).
SETTING_KEYS = frozenset(
    {
        "auth_scheme",
        "img2img_url",
        "max_concurrency",
        "max_n_per_call",
        "max_side",
        "url",
    }
)
RETRY = RetryPolicy.never_post()
DOCUMENTED_EXAMPLE_HOST = "api.aws.us-east-1.cerebrium.ai"
_DOCUMENTED_HOST = re.compile(
    r"api\.aws\.[a-z]{2}-[a-z]+-\d\.cerebrium\.ai|"
    r"api\.cortex\.cerebrium\.ai"
)


def is_documented_host(host: str) -> bool:
    """A host Cerebrium's inference docs name: a regional ``api.aws.<region>`` one or the
    older ``api.cortex`` one."""
    return _DOCUMENTED_HOST.fullmatch(host.lower()) is not None


def _is_local(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass(frozen=True)
class CerebriumSettings:
    url: str
    img2img_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    auth_scheme: str = "bearer"
    max_n_per_call: int = 4
    max_side: int = 1024
    max_concurrency: int = 2
    policy: HttpPolicy = field(default_factory=lambda: HttpPolicy(retry=RETRY))

    @classmethod
    def from_mapping(
        cls, section: Mapping[str, object], env: Mapping[str, str]
    ) -> CerebriumSettings:
        reject_unknown(section, PREFIX, SETTING_KEYS)
        if not (env.get("CEREBRIUM_API_BASE_URL") or section.get("url")):
            raise ConfigError(
                f"{PREFIX}.url is required (the endpoint of your deployed "
                "function), or set CEREBRIUM_API_BASE_URL"
            )
        img2img = section.get("img2img_url")
        scheme = get_str(section, "auth_scheme", "bearer", PREFIX).strip().lower()
        if scheme not in ("bearer", "plain"):
            raise ConfigError(f"{PREFIX}.auth_scheme must be bearer or plain")
        return cls(
            url=get_url(section, "url", "", PREFIX, env, "CEREBRIUM_API_BASE_URL"),
            img2img_url=get_url(section, "img2img_url", "", PREFIX, env, None) if img2img else None,
            api_key=get_secret(section, env, "CEREBRIUM_API_KEY", PREFIX, required=False),
            auth_scheme=scheme,
            max_n_per_call=get_int(section, "max_n_per_call", 4, PREFIX, lo=1, hi=16),
            max_side=get_int(section, "max_side", 1024, PREFIX, lo=256, hi=4096),
            max_concurrency=get_int(section, "max_concurrency", 2, PREFIX, lo=1, hi=64),
            policy=HttpPolicy.from_mapping(section, PREFIX, retry=RETRY),
        )


class CerebriumProvider:
    name = "cerebrium"

    def __init__(
        self,
        settings: CerebriumSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.label = "Cerebrium"
        headers: dict[str, str] = {}
        if settings.api_key:
            headers["Authorization"] = (
                f"Bearer {settings.api_key}"
                if settings.auth_scheme == "bearer"
                else settings.api_key
            )
        url = httpx.URL(settings.url)
        # Endpoints are absolute URLs; the base only pins the connection pool's origin.
        self._http = HttpClient(
            label=self.label,
            base_url=f"{url.scheme}://{url.netloc.decode()}",
            policy=settings.policy,
            headers=headers,
            classify=default_classifier,
            transport=transport,
            sleep=sleep,
        )
        self._caps = Capabilities(
            img2img=settings.img2img_url is not None,
            max_n_per_call=settings.max_n_per_call,
            size_mode="exact",
            size_multiple=8,
            min_side=256,
            max_side=settings.max_side,
            max_pixels=settings.max_side * settings.max_side,
            steps_range=(1, 150),
            cfg_range=(0.0, 20.0),
            seed_max=2**32 - 1,
            samplers=(),
            negative_prompt=True,
            max_concurrency=settings.max_concurrency,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    async def aclose(self) -> None:
        await self._http.aclose()

    async def check(self) -> dict[str, str]:
        # A deployed function has no free health route; say what is configured, without a
        # paid call.
        facts = {
            "provider": self.label,
            "endpoint": self.settings.url,
            "img2img_endpoint": self.settings.img2img_url or "none",
            "auth": "configured" if self.settings.api_key else "none",
        }
        hosts = {httpx.URL(u).host for u in (self.settings.url, self.settings.img2img_url) if u}
        odd = sorted(h for h in hosts if not is_documented_host(h) and not _is_local(h))
        if odd:
            facts["warning"] = (
                f"{', '.join(odd)} is not a host Cerebrium documents; "
                f"endpoints look like https://{DOCUMENTED_EXAMPLE_HOST}"
                "/v4/p-<project>/<app>/<function>"
            )
        return facts

    async def generate(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        body: dict[str, Any] = {
            "prompt": req.prompt,
            "negative_prompt": req.negative_prompt or "",
            "height": req.height,
            "width": req.width,
            "num_images_per_prompt": max(1, req.n),
            "seed": req.seed,
        }
        if req.steps is not None:
            body["num_inference_steps"] = req.steps
        if req.cfg is not None:
            body["guidance_scale"] = req.cfg
        url = self.settings.url
        if req.init_image is not None:
            if self.settings.img2img_url is None:
                raise ProviderUnavailable("no img2img endpoint configured")
            url = self.settings.img2img_url
            body["image"] = base64.b64encode(req.init_image).decode("ascii")
        resp = await self._http.request("POST", url, json_body=body, idempotent=False)
        data = await resp.json()
        result = data.get("result") if isinstance(data, dict) else None
        if isinstance(result, dict):
            result = result.get("images") or result.get("result")
        if isinstance(result, str):
            result = [result]
        if (
            not isinstance(result, list)
            or not result
            or not all(isinstance(s, str) for s in result)
        ):
            message = data.get("message") if isinstance(data, dict) else None
            raise ProviderUnavailable(f"Cerebrium answer has no images ({message!s:.200})")
        blobs = await b64decode_many([_strip_data_url(s) for s in result])
        run_id = data.get("run_id") if isinstance(data, dict) else None
        return GenerationResult(
            images=tuple(GeneratedImage(data=b, seed=req.seed + i) for i, b in enumerate(blobs)),
            request_id=str(run_id) if run_id else None,
        )


def _strip_data_url(s: str) -> str:
    return s.split(",", 1)[1] if s.startswith("data:") and "," in s else s
