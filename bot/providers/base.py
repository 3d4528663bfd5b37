"""The provider protocol: what every image provider takes, returns, declares and raises.

Providers never know about chat. They take a :class:`GenerationRequest` and return a
:class:`GenerationResult`, or raise one of the typed errors below::

    ProviderError                 base; ``user_message`` is fit to show
    ├── AuthFailed                bad or missing key (global: admins are alerted)
    ├── QuotaExhausted            the provider account is out of credits (global)
    ├── ContentFiltered           the provider refused the prompt or input image
    ├── InvalidRequest            the provider rejected a parameter
    ├── NotFound                  unknown model / engine / endpoint
    ├── RateLimited               429; ``retry_after`` seconds when the provider said so
    ├── ProviderUnavailable       5xx, timeouts, connection errors, malformed answers
    └── NotSupported              the provider lacks a capability

A filtered *output* image is not an error: it comes back with ``filtered=True`` and the core
refunds it without posting it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

ProgressCallback = Callable[[float], None]


# --------------------------------------------------------------------------------------- errors
class ProviderError(Exception):
    """Base of every provider failure. ``message`` is for logs (never holds a secret)."""

    user_message = "The image service failed. Your quota was refunded."
    global_failure = False  # true when every request will fail until an admin acts

    def __init__(self, message: str = "", *, status: int | None = None, code: str | None = None):
        super().__init__(message or self.user_message)
        self.message = message or self.user_message
        self.status = status
        self.code = code


class AuthFailed(ProviderError):
    user_message = (
        "The image service rejected the bot's credentials. The admins have been told; "
        "your quota was refunded."
    )
    global_failure = True


class QuotaExhausted(ProviderError):
    user_message = (
        "The image service account is out of credits. The admins have been told; "
        "your quota was refunded."
    )
    global_failure = True


class ContentFiltered(ProviderError):
    user_message = (
        "The image service declined this prompt or image under its content policy. "
        "Your quota was refunded; try rewording it."
    )


class InvalidRequest(ProviderError):
    user_message = "The image service rejected one of the settings. Your quota was refunded."


class NotFound(ProviderError):
    user_message = (
        "The image service does not know that model or endpoint. Your quota was refunded."
    )


class RateLimited(ProviderError):
    user_message = "The image service is busy right now. Your quota was refunded; try again soon."

    def __init__(
        self,
        message: str = "",
        *,
        retry_after: float | None = None,
        status: int | None = 429,
        code: str | None = None,
    ):
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after


class ProviderUnavailable(ProviderError):
    user_message = (
        "The image service is unavailable right now. Your quota was refunded; try again later."
    )


class NotSupported(ProviderError):
    user_message = "This image service cannot do that. Your quota was refunded."


# ---------------------------------------------------------------------------------------- types
@dataclass(frozen=True)
class WeightedPrompt:
    text: str
    weight: float = 1.0


@dataclass(frozen=True)
class GenerationRequest:
    """One call's worth of work, already validated against the provider's capabilities.

    ``seed`` is always set by the core (so every image is reproducible and recorded); a
    provider without seed support ignores it. ``strength`` follows the denoise convention:
    0 keeps the init image, 1 ignores it.
    """

    prompt: str
    negative_prompt: str | None = None
    weighted_prompts: tuple[WeightedPrompt, ...] = ()
    n: int = 1
    width: int = 1024
    height: int = 1024
    seed: int = 0
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    style: str | None = None
    model: str | None = None
    init_image: bytes | None = None
    strength: float | None = None
    user_ref: str | None = None

    @property
    def mode(self) -> Literal["txt2img", "img2img"]:
        return "img2img" if self.init_image is not None else "txt2img"


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    seed: int | None = None
    filtered: bool = False


@dataclass(frozen=True)
class GenerationResult:
    images: tuple[GeneratedImage, ...]
    model: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do; the core checks requests against it before spending quota.

    ``size_mode``: ``exact`` (any size within the bounds and multiple), ``preset`` (one of
    ``sizes``), ``aspect`` (one of ``aspect_ratios``; the provider picks the pixels).
    """

    txt2img: bool = True
    img2img: bool = True
    max_n_per_call: int = 1
    size_mode: Literal["exact", "preset", "aspect"] = "exact"
    sizes: tuple[tuple[int, int], ...] = ()
    aspect_ratios: tuple[str, ...] = ()
    size_multiple: int = 8
    min_side: int = 64
    max_side: int = 2048
    max_pixels: int = 2048 * 2048
    steps_range: tuple[int, int] | None = (10, 50)
    cfg_range: tuple[float, float] | None = (0.0, 35.0)
    seed_max: int | None = 4294967295
    samplers: tuple[str, ...] | None = None  # None: any name is passed through
    native_styles: tuple[str, ...] = ()  # styles the provider applies itself
    negative_prompt: bool = True
    weighted_prompts: bool = False
    models: tuple[str, ...] = ()
    max_concurrency: int = 2


class Provider(Protocol):
    """An image provider. Implementations hold one long-lived HTTP client and close it in
    :meth:`aclose`."""

    name: str
    label: str  # shown to users, e.g. "Stability AI (core)" or "offline preview renderer"

    @property
    def capabilities(self) -> Capabilities: ...

    async def generate(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        """Text-to-image, or image-to-image when ``req.init_image`` is set. Returns at most
        ``capabilities.max_n_per_call`` images (the core splits larger requests)."""
        ...

    async def check(self) -> dict[str, str]:
        """Reachability and account facts for ``doctor``. Never includes a secret."""
        ...

    async def aclose(self) -> None: ...


# ------------------------------------------------------------------------- capability fitting
@dataclass(frozen=True)
class Fitted:
    request: GenerationRequest
    notes: tuple[str, ...] = field(default_factory=tuple)


def _ratio(ar: str) -> float:
    w, h = ar.split(":")
    return int(w) / int(h)


def nearest_size(width: int, height: int, caps: Capabilities) -> tuple[int, int]:
    """Map a wanted size to the closest one the provider accepts (aspect first, then area)."""
    want_ratio = width / height
    if caps.size_mode == "preset" and caps.sizes:
        return min(
            caps.sizes,
            key=lambda s: (abs(math.log((s[0] / s[1]) / want_ratio)),
                           abs(s[0] * s[1] - width * height)),
        )
    m = max(1, caps.size_multiple)
    scale = 1.0
    if width * height > caps.max_pixels:
        scale = math.sqrt(caps.max_pixels / (width * height))
    w, h = width * scale, height * scale
    big = max(w, h)
    if big > caps.max_side:
        w, h = w * caps.max_side / big, h * caps.max_side / big
    small = min(w, h)
    if small < caps.min_side:
        w, h = w * caps.min_side / small, h * caps.min_side / small
    fw = max(caps.min_side, min(caps.max_side, int(w // m) * m or m))
    fh = max(caps.min_side, min(caps.max_side, int(h // m) * m or m))
    while fw * fh > caps.max_pixels and fw > caps.min_side and fh > caps.min_side:
        if fw >= fh:
            fw -= m
        else:
            fh -= m
    return fw, fh


def nearest_aspect(width: int, height: int, caps: Capabilities) -> str:
    want = width / height
    return min(caps.aspect_ratios, key=lambda ar: abs(math.log(_ratio(ar) / want)))


def fit_request(req: GenerationRequest, caps: Capabilities, provider_label: str) -> Fitted:
    """Check ``req`` against ``caps``; adjust what can be adjusted (size, clamp) and say so.

    Raises :class:`NotSupported` for what cannot be adjusted (e.g. img2img on a txt2img-only
    provider); the core turns that into a user message before any quota is reserved.
    """
    notes: list[str] = []
    if req.mode == "img2img" and not caps.img2img:
        raise NotSupported(f"{provider_label} cannot refine an existing image (no img2img).")
    if req.mode == "txt2img" and not caps.txt2img:
        raise NotSupported(f"{provider_label} needs an input image.")
    changes: dict[str, object] = {}
    if caps.size_mode == "aspect" and caps.aspect_ratios:
        ar = nearest_aspect(req.width, req.height, caps)
        aw, ah = (int(x) for x in ar.split(":"))
        if aw * req.height != ah * req.width:
            notes.append(f"{provider_label} supports fixed aspect ratios; using {ar}.")
    else:
        w, h = nearest_size(req.width, req.height, caps)
        if (w, h) != (req.width, req.height):
            notes.append(f"Size {req.width}x{req.height} is not available on {provider_label}; "
                         f"using {w}x{h}.")
            changes["width"], changes["height"] = w, h
    if req.steps is not None:
        if caps.steps_range is None:
            notes.append(f"{provider_label} does not take --steps; ignored.")
            changes["steps"] = None
        elif not caps.steps_range[0] <= req.steps <= caps.steps_range[1]:
            lo, hi = caps.steps_range
            changes["steps"] = min(hi, max(lo, req.steps))
            notes.append(f"--steps must be {lo}..{hi} on {provider_label}; "
                         f"using {changes['steps']}.")
    if req.cfg is not None:
        if caps.cfg_range is None:
            notes.append(f"{provider_label} does not take --cfg; ignored.")
            changes["cfg"] = None
        elif not caps.cfg_range[0] <= req.cfg <= caps.cfg_range[1]:
            lo_c, hi_c = caps.cfg_range
            changes["cfg"] = min(hi_c, max(lo_c, req.cfg))
            notes.append(f"--cfg must be {lo_c:g}..{hi_c:g} on {provider_label}; "
                         f"using {changes['cfg']:g}.")
    if req.sampler is not None and caps.samplers is not None:
        by_lower = {s.lower(): s for s in caps.samplers}
        if req.sampler.lower() not in by_lower:
            raise NotSupported(
                f"{provider_label} has no sampler '{req.sampler}'. Available: "
                + ", ".join(caps.samplers[:20])
            )
        changes["sampler"] = by_lower[req.sampler.lower()]
    if caps.seed_max is not None and req.seed > caps.seed_max:
        changes["seed"] = req.seed % (caps.seed_max + 1)
    if req.negative_prompt and not caps.negative_prompt:
        notes.append(f"{provider_label} has no negative prompt; --no was ignored.")
        changes["negative_prompt"] = None
    if req.model and caps.models and req.model not in caps.models:
        raise NotSupported(
            f"{provider_label} has no model '{req.model}'. Available: " + ", ".join(caps.models)
        )
    return Fitted(replace(req, **changes) if changes else req, tuple(notes))  # type: ignore[arg-type]


def split_counts(n: int, per_call: int) -> list[int]:
    per_call = max(1, per_call)
    return [min(per_call, n - i) for i in range(0, n, per_call)]


async def generate_split(
    provider: Provider,
    req: GenerationRequest,
    *,
    parallel: int,
    progress: ProgressCallback | None = None,
) -> GenerationResult:
    """Run ``req`` as bounded parallel calls of at most ``max_n_per_call`` images each.

    Call k starts at seed ``req.seed + offset`` so the images of one job never repeat a seed.
    If any call fails, the others are cancelled and the error propagates (the core refunds the
    whole job: no partial charge for a failed job).
    """
    counts = split_counts(req.n, provider.capabilities.max_n_per_call)
    if len(counts) == 1:
        return await provider.generate(req, progress)
    seed_mod = (provider.capabilities.seed_max or 4294967295) + 1
    sem = asyncio.Semaphore(max(1, parallel))
    done = [0.0] * len(counts)

    def part_progress(i: int) -> ProgressCallback:
        def cb(p: float) -> None:
            done[i] = p
            if progress is not None:
                progress(sum(done) / len(done))

        return cb

    async def one(i: int, count: int, offset: int) -> GenerationResult:
        async with sem:
            part = replace(req, n=count, seed=(req.seed + offset) % seed_mod)
            res = await provider.generate(part, part_progress(i))
            part_progress(i)(1.0)
            return res

    offsets = [sum(counts[:i]) for i in range(len(counts))]
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(one(i, c, o))
                for i, (c, o) in enumerate(zip(counts, offsets, strict=True))
            ]
    except BaseExceptionGroup as group:
        # Surface the first real failure as itself, so callers see one typed error.
        raise group.exceptions[0] from None
    results: Sequence[GenerationResult] = [t.result() for t in tasks]
    images = tuple(img for r in results for img in r.images)
    return GenerationResult(images=images, model=results[0].model, request_id=results[0].request_id)
