"""Stability AI's image verbs: v2beta upscale (fast, conservative, creative) and outpaint.

Every call is multipart with the same headers, answers and error bodies as the generate
routes (``Accept: image/*`` -> the bytes with ``finish-reason`` and ``seed`` headers,
``application/json`` -> ``{image, finish_reason, seed}``):

- ``POST /v2beta/stable-image/upscale/fast``: ``image``, ``output_format``; 4x, synchronous.
- ``POST /v2beta/stable-image/upscale/conservative``: ``image``, ``prompt`` (required),
  ``negative_prompt``, ``seed``, ``creativity`` (0.2..0.5), ``output_format``; synchronous.
- ``POST /v2beta/stable-image/upscale/creative``: the same fields (``creativity`` 0.1..0.5),
  **asynchronous**: the answer is ``{"id": ...}``, and ``GET /v2beta/results/{id}`` says 202
  ``{id, status: "in-progress"}`` until the image is ready (200), kept 24 h, for the same key
  only (404 otherwise). Stability asks clients to poll at most every 10 seconds.
- ``POST /v2beta/stable-image/edit/outpaint``: ``image``, ``left``/``right``/``up``/``down``
  (0..2000 px each, at least one), ``prompt``, ``creativity`` (0..1), ``seed``,
  ``output_format``; synchronous.

The provider's methods (``StabilityProvider.upscale``/``outpaint``) call these with its one
HTTP client; the settings live in ``[providers.stability]`` (:data:`SETTING_KEYS`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from bot.errors import ConfigError
from bot.providers.base import (
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    ProgressCallback,
    ProviderUnavailable,
)
from bot.providers.http import FilePart, HttpClient, HttpResponse, b64decode_many
from bot.providers.policy import get_float, get_str

Upscaler = Literal["fast", "conservative", "creative"]
UPSCALERS: tuple[Upscaler, ...] = ("fast", "conservative", "creative")
SETTING_KEYS = frozenset({"upscaler", "upscale_creativity", "outpaint_creativity", "poll_s"})
UPSCALE_PATH = "/v2beta/stable-image/upscale/{kind}"
OUTPAINT_PATH = "/v2beta/stable-image/edit/outpaint"
RESULTS_PATH = "/v2beta/results/{id}"
MAX_PAD = 2000
CREATIVITY = {"conservative": (0.2, 0.5), "creative": (0.1, 0.5)}
# The largest input each upscaler takes (fast: also 1536 px a side); conservative: not known.
MAX_INPUT_PIXELS = {"fast": 1_048_576, "creative": 1_048_576}
POLL_TIMEOUT_S = 600.0

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class StabilityEditSettings:
    upscaler: Upscaler = "fast"
    upscale_creativity: float = 0.3
    outpaint_creativity: float = 0.5
    poll_s: float = 10.0  # Stability: poll a result at most once every 10 s

    @classmethod
    def from_mapping(cls, section: Mapping[str, object], prefix: str) -> StabilityEditSettings:
        upscaler = get_str(section, "upscaler", "fast", prefix).strip().lower()
        if upscaler not in UPSCALERS:
            raise ConfigError(f"{prefix}.upscaler must be one of {', '.join(UPSCALERS)}")
        lo, hi = CREATIVITY.get(upscaler, (0.0, 1.0))
        return cls(
            upscaler=upscaler,
            upscale_creativity=get_float(
                section, "upscale_creativity", min(hi, max(lo, 0.3)), prefix, lo=lo, hi=hi
            ),
            outpaint_creativity=get_float(
                section, "outpaint_creativity", 0.5, prefix, lo=0.0, hi=1.0
            ),
            poll_s=get_float(section, "poll_s", 10.0, prefix, lo=0.0, hi=60.0),
        )


def _prompt_fields(prompt: str, negative: str | None, seed: int) -> list[tuple[str, FilePart]]:
    fields: list[tuple[str, FilePart]] = [("prompt", (None, prompt[:10000]))]
    if negative:
        fields.append(("negative_prompt", (None, negative[:10000])))
    if seed:
        fields.append(("seed", (None, str(seed))))
    return fields


async def read_image(resp: HttpResponse, seed: int) -> GeneratedImage:
    """A v2beta image answer, raw (``image/*``) or JSON, as one image."""
    if resp.content_type.startswith("image/"):
        finish = resp.headers.get("finish-reason", "SUCCESS").upper()
        data = resp.content
        seed_out = resp.headers.get("seed")
    else:
        body = await resp.json()
        if not isinstance(body, dict) or not isinstance(body.get("image"), str):
            raise ProviderUnavailable("Stability's answer has no image")
        finish = str(body.get("finish_reason") or "SUCCESS").upper()
        data = (await b64decode_many([body["image"]]))[0]
        seed_out = body.get("seed")
    if finish == "ERROR":
        raise ProviderUnavailable("Stability reported an error making the image")
    if not data:
        raise ProviderUnavailable("Stability's answer has an empty image")
    got = str(seed_out).strip() if seed_out is not None else ""
    return GeneratedImage(
        data, seed=int(got) if got.isdigit() else seed, filtered=finish == "CONTENT_FILTERED"
    )


async def upscale(
    http: HttpClient,
    headers: Mapping[str, str],
    req: GenerationRequest,
    prompt: tuple[str, str | None],
    settings: StabilityEditSettings,
    sleep: Sleep = asyncio.sleep,
    progress: ProgressCallback | None = None,
) -> GenerationResult:
    assert req.init_image is not None
    kind = settings.upscaler
    fields: list[tuple[str, FilePart]] = [("image", ("image.png", req.init_image, "image/png"))]
    if kind != "fast":
        fields += _prompt_fields(*prompt, seed=req.seed)
        fields.append(("creativity", (None, f"{settings.upscale_creativity:g}")))
    fields.append(("output_format", (None, "png")))
    path = UPSCALE_PATH.format(kind=kind)
    if kind != "creative":
        resp = await http.request("POST", path, files=fields, headers=headers, idempotent=False)
        image = await read_image(resp, req.seed)
        return GenerationResult((image,), model=f"upscale-{kind}", request_id=_rid(resp))
    started = await http.request(
        "POST", path, files=fields, headers={**headers, "Accept": "application/json"}
    )
    body = await started.json()
    job = body.get("id") if isinstance(body, dict) else None
    if not isinstance(job, str) or not job:
        raise ProviderUnavailable("Stability's creative upscale answer has no id")
    image, resp = await _poll(http, headers, job, req.seed, settings.poll_s, sleep, progress)
    return GenerationResult((image,), model="upscale-creative", request_id=job)


async def _poll(
    http: HttpClient,
    headers: Mapping[str, str],
    job: str,
    seed: int,
    every_s: float,
    sleep: Sleep,
    progress: ProgressCallback | None,
) -> tuple[GeneratedImage, HttpResponse]:
    """``GET /v2beta/results/{id}`` until it is not 202 (the job's own timeout bounds it)."""
    began = time.monotonic()
    polls = 0
    while True:
        await sleep(every_s)
        resp = await http.request("GET", RESULTS_PATH.format(id=job), headers=headers)
        if resp.status != 202:
            return await read_image(resp, seed), resp
        polls += 1
        if progress is not None:
            progress(min(0.9, 0.1 * polls))
        if time.monotonic() - began > POLL_TIMEOUT_S:
            raise ProviderUnavailable(f"Stability's result {job} was not ready in time")


async def outpaint(
    http: HttpClient,
    headers: Mapping[str, str],
    req: GenerationRequest,
    prompt: tuple[str, str | None],
    settings: StabilityEditSettings,
) -> GenerationResult:
    edit, image = req.edit, req.init_image
    assert edit is not None and image is not None
    pads = {"left": edit.left, "right": edit.right, "up": edit.top, "down": edit.bottom}
    if max(pads.values()) > MAX_PAD:
        # Stability extends by at most 2000 px a side; a larger zoom is scaled to fit.
        shrink = MAX_PAD / max(pads.values())
        pads = {k: int(v * shrink) for k, v in pads.items()}
    fields: list[tuple[str, FilePart]] = [("image", ("image.png", image, "image/png"))]
    fields += [(side, (None, str(px))) for side, px in pads.items() if px]
    fields += _prompt_fields(prompt[0], None, seed=req.seed)  # outpaint takes no negative
    fields.append(("creativity", (None, f"{settings.outpaint_creativity:g}")))
    fields.append(("output_format", (None, "png")))
    resp = await http.request(
        "POST", OUTPAINT_PATH, files=fields, headers=headers, idempotent=False
    )
    return GenerationResult(
        (await read_image(resp, req.seed),), model="outpaint", request_id=_rid(resp)
    )


def _rid(resp: HttpResponse) -> str | None:
    rid = resp.headers.get("x-request-id")
    return str(rid) if rid else None


__all__ = [
    "SETTING_KEYS",
    "UPSCALERS",
    "StabilityEditSettings",
    "outpaint",
    "read_image",
    "upscale",
]
