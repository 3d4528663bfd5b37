"""The provider protocol: what every image provider takes, returns, declares and raises.

Providers never know about chat. They take a :class:`GenerationRequest` and return a
:class:`GenerationResult`, or raise one of the typed errors below::

    ProviderError                 base; ``user_message`` is fit to show
    ├── AuthFailed                bad or missing key (global: admins are alerted)
    ├── QuotaExhausted            the provider account is out of credits (global)
    ├── ContentFiltered           the provider refused the prompt or input image
    ├── InvalidRequest            the provider rejected a parameter
    ├── NotFound                  unknown model / engine / endpoint
    │   └── ModelUnavailable      the *configured* model is unknown to the service (global:
    │       │                     admins are alerted with the setting to change)
    │       └── ModelRetired      ... because the vendor shut it down
    ├── RateLimited               429; ``retry_after`` seconds when the provider said so
    ├── ProviderUnavailable       5xx, timeouts, connection errors, malformed answers
    ├── NotSupported              the provider lacks a capability
    └── CheckFailed               ``check()`` could not confirm the service: the URL it tried
                                  and the cause, for ``doctor`` (never raised by ``generate``)

``user_message`` is a class default; an instance may carry a more precise one (a did-you-mean,
the ComfyUI node that failed, the setting an admin must change). It never holds a secret.

A filtered *output* image is not an error: it comes back with ``filtered=True`` and the core
refunds it without posting it.

Progress: a provider reports a fraction 0..1 through :data:`ProgressCallback`. It may pass a
:class:`Progress` instead of a plain float: a ``float`` that also carries a short ``note`` for
people ("#12 in the Horde's queue, about 40 s"). Every existing callback keeps working, since a
``Progress`` *is* a float; a callback that wants the note reads :func:`progress_note`.
"""

from __future__ import annotations

import asyncio
import difflib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from bot.providers.edit_types import Edit

ProgressCallback = Callable[[float], None]


class Progress(float):
    """A progress fraction (0..1) with an optional note for people, e.g. a queue position.

    ``Progress(0.1, "#12 in the Horde's queue, about 40 s")`` compares, adds and formats like
    ``0.1``; only callbacks that look for it see the note (:func:`progress_note`)."""

    note: str | None

    def __new__(cls, fraction: float, note: str | None = None) -> Progress:
        obj = super().__new__(cls, fraction)
        obj.note = note
        return obj

    def __repr__(self) -> str:
        return f"Progress({float(self)!r}, {self.note!r})"


def progress_note(value: float) -> str | None:
    """The note a provider attached to a progress value, if any."""
    return value.note if isinstance(value, Progress) else None


# --------------------------------------------------------------------------------------- errors
class ProviderError(Exception):
    """Base of every provider failure. ``message`` is for logs (never holds a secret)."""

    user_message = "The image service failed. Your quota was refunded."
    global_failure = False  # true when every request will fail until an admin acts

    def __init__(
        self,
        message: str = "",
        *,
        status: int | None = None,
        code: str | None = None,
        user_message: str | None = None,
    ):
        if user_message is not None:
            self.user_message = user_message  # this instance's more precise wording
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


class ModelUnavailable(NotFound):
    """The model this deployment is configured to use is unknown to the service. Every request
    fails until an admin changes ``setting``, so it alerts like a bad key does."""

    user_message = (
        "The image service does not offer the model this bot is set to use. The admins have "
        "been told; your quota was refunded."
    )
    global_failure = True
    _verb = "does not offer"

    def __init__(
        self,
        message: str = "",
        *,
        model: str,
        setting: str,
        replacement: str | None = None,
        status: int | None = None,
        code: str | None = None,
    ):
        hint = f"; try {replacement}" if replacement else ""
        super().__init__(
            message or f"model {model!r} is unavailable",
            status=status,
            code=code,
            user_message=(
                f"The image service {self._verb} the model '{model}'. The admins "
                f"have been told to change the setting {setting}{hint}. Your quota "
                "was refunded."
            ),
        )
        self.model = model
        self.setting = setting
        self.replacement = replacement


class ModelRetired(ModelUnavailable):
    """The vendor shut the configured model down (or says it is past its shutdown date)."""

    user_message = (
        "The image service has retired the model this bot is set to use. The admins have been "
        "told; your quota was refunded."
    )
    _verb = "has retired"


class RateLimited(ProviderError):
    user_message = "The image service is busy right now. Your quota was refunded; try again soon."

    def __init__(
        self,
        message: str = "",
        *,
        retry_after: float | None = None,
        status: int | None = 429,
        code: str | None = None,
        user_message: str | None = None,
    ):
        super().__init__(message, status=status, code=code, user_message=user_message)
        self.retry_after = retry_after


class ProviderUnavailable(ProviderError):
    user_message = (
        "The image service is unavailable right now. Your quota was refunded; try again later."
    )


class NotSupported(ProviderError):
    user_message = "This image service cannot do that. Your quota was refunded."


class CheckFailed(ProviderError):
    """``check()`` could not confirm the service works. ``url`` is what it tried (never with
    credentials: base URLs refuse them) and ``cause`` why, both fit for ``doctor``'s output;
    ``error`` is the typed error underneath, when there was one."""

    user_message = "The image service check failed."

    def __init__(self, url: str, cause: str, *, error: ProviderError | None = None):
        super().__init__(
            f"{url}: {cause}",
            status=error.status if error else None,
            code=error.code if error else None,
            user_message=f"{url}: {cause}",
        )
        self.url = url
        self.cause = cause
        self.error = error


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
    scheduler: str | None = None  # the noise schedule, where the sampler and it are separate
    style: str | None = None
    model: str | None = None
    init_image: bytes | None = None
    strength: float | None = None
    user_ref: str | None = None
    edit: Edit | None = None  # upscale or outpaint the init image instead (bot.providers.edits)

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
    server: str | None = None  # which server of a pool made it (bot.providers.pool)


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do; the core checks requests against it before spending quota.

    ``size_mode``: ``exact`` (any size within the bounds and multiple), ``preset`` (one of
    ``sizes``), ``aspect`` (one of ``aspect_ratios``; the provider picks the pixels). ``exact``
    sizes may also need ``min_pixels`` and a long-to-short side ratio of at most
    ``max_aspect``. ``seed_zero_random``: the service reads seed 0 as "pick one", so a seed
    we choose or wrap must never land on 0. ``sampler_aliases`` maps other spellings to a
    name in ``samplers``; ``schedulers`` (None: not validated) lists the noise schedules.
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
    min_pixels: int = 0
    max_aspect: float | None = None
    steps_range: tuple[int, int] | None = (10, 50)
    cfg_range: tuple[float, float] | None = (0.0, 35.0)
    seed_max: int | None = 4294967295
    seed_zero_random: bool = False
    samplers: tuple[str, ...] | None = None  # None: any name is passed through
    sampler_aliases: tuple[tuple[str, str], ...] = ()
    schedulers: tuple[str, ...] | None = None
    native_styles: tuple[str, ...] = ()  # styles the provider applies itself
    negative_prompt: bool = True
    weighted_prompts: bool = False
    models: tuple[str, ...] = ()
    max_concurrency: int = 2
    # Image verbs (bot.providers.edits): "model" a real upscaler, "resize" a Pillow resize
    # labelled so, "none" hidden; outpaint: Zoom out and Pan.
    upscale: Literal["none", "model", "resize"] = "none"
    upscale_max_pixels: int = 0  # the largest image the upscaler takes (0: not known)
    outpaint: bool = False


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
            key=lambda s: (
                abs(math.log((s[0] / s[1]) / want_ratio)),
                abs(s[0] * s[1] - width * height),
            ),
        )
    m = max(1, caps.size_multiple)
    w, h = float(width), float(height)
    if caps.max_aspect is not None and max(w, h) / min(w, h) > caps.max_aspect:
        # Too long and thin: keep the area, bring the ratio to the limit.
        area, ratio = w * h, caps.max_aspect if w >= h else 1 / caps.max_aspect
        w, h = math.sqrt(area * ratio), math.sqrt(area / ratio)
    scale = 1.0
    if w * h > caps.max_pixels:
        scale = math.sqrt(caps.max_pixels / (w * h))
    elif caps.min_pixels and w * h < caps.min_pixels:
        scale = math.sqrt(caps.min_pixels / (w * h))
    w, h = w * scale, h * scale
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
    # Rounding down may leave it a little under the minimum area or over the ratio.
    while caps.min_pixels and fw * fh < caps.min_pixels:
        if fw <= fh and fw + m <= caps.max_side:
            fw += m
        elif fh + m <= caps.max_side:
            fh += m
        else:
            break
    if caps.max_aspect is not None:
        while max(fw, fh) / min(fw, fh) > caps.max_aspect:
            if fw > fh:
                fw -= m
            else:
                fh -= m
    return fw, fh


def nearest_aspect(width: int, height: int, caps: Capabilities) -> str:
    want = width / height
    return min(caps.aspect_ratios, key=lambda ar: abs(math.log(_ratio(ar) / want)))


def did_you_mean(wanted: str, known: Iterable[str] | Mapping[str, str]) -> str:
    """`` Did you mean 'X'?`` for the closest known name, or an empty string. With a mapping
    (spelling -> name, e.g. aliases), the spellings are matched and the name is suggested."""
    pairs = known.items() if isinstance(known, Mapping) else ((n, n) for n in known)
    by_lower = {spelling.lower(): name for spelling, name in pairs}
    close = difflib.get_close_matches(wanted.lower()[:60], list(by_lower), n=1, cutoff=0.5)
    return f" Did you mean '{by_lower[close[0]]}'?" if close else ""


def sampler_spellings(caps: Capabilities) -> dict[str, str]:
    """Every accepted spelling of a sampler -> the provider's name for it."""
    return {**{s: s for s in caps.samplers or ()}, **dict(caps.sampler_aliases)}


def wrap_seed(seed: int, caps: Capabilities) -> int:
    """A seed in the provider's range. Seeds above ``seed_max`` wrap around; where seed 0
    means "random" a wrapped seed skips 0, so a seed the user typed is never lost."""
    if caps.seed_max is None or 0 <= seed <= caps.seed_max:
        return seed
    if caps.seed_zero_random:
        return 1 + (seed - 1) % caps.seed_max
    return seed % (caps.seed_max + 1)


def resolve_sampler(name: str, caps: Capabilities) -> tuple[str, str | None] | None:
    """The provider's spelling of a sampler, and the scheduler folded into a combined name
    ("dpm++ 2m karras" -> ("DPM++ 2M", "Karras")) where samplers and schedulers are separate.
    None when the name is unknown."""
    samplers = caps.samplers or ()
    by_lower = {s.lower(): s for s in samplers}
    by_lower.update({a.lower(): s for a, s in caps.sampler_aliases})
    if name.lower() in by_lower:
        return by_lower[name.lower()], None
    for sched in caps.schedulers or ():
        suffix = " " + sched.lower()
        if name.lower().endswith(suffix):
            head = name[: -len(suffix)].lower()
            if head in by_lower:
                return by_lower[head], sched
    return None


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
            notes.append(
                f"Size {req.width}x{req.height} is not available on {provider_label}; "
                f"using {w}x{h}."
            )
            changes["width"], changes["height"] = w, h
    if req.steps is not None:
        if caps.steps_range is None:
            notes.append(f"{provider_label} does not take --steps; ignored.")
            changes["steps"] = None
        elif not caps.steps_range[0] <= req.steps <= caps.steps_range[1]:
            lo, hi = caps.steps_range
            changes["steps"] = min(hi, max(lo, req.steps))
            notes.append(
                f"--steps must be {lo}..{hi} on {provider_label}; using {changes['steps']}."
            )
    if req.cfg is not None:
        if caps.cfg_range is None:
            notes.append(f"{provider_label} does not take --cfg; ignored.")
            changes["cfg"] = None
        elif not caps.cfg_range[0] <= req.cfg <= caps.cfg_range[1]:
            lo_c, hi_c = caps.cfg_range
            changes["cfg"] = min(hi_c, max(lo_c, req.cfg))
            notes.append(
                f"--cfg must be {lo_c:g}..{hi_c:g} on {provider_label}; using {changes['cfg']:g}."
            )
    if req.sampler is not None and caps.samplers is not None:
        resolved = resolve_sampler(req.sampler, caps)
        if resolved is None:
            raise NotSupported(
                f"{provider_label} has no sampler '{req.sampler}'."
                + did_you_mean(req.sampler, sampler_spellings(caps))
                + " Available: "
                + ", ".join(caps.samplers[:20])
            )
        # A combined name ("DPM++ 2M Karras") stays combined, in the provider's spelling of
        # both parts: the job stores only the sampler, and the provider splits it when it
        # calls the service.
        changes["sampler"] = resolved[0] if resolved[1] is None else f"{resolved[0]} {resolved[1]}"
    if req.scheduler is not None and caps.schedulers is not None:
        by_lower = {s.lower(): s for s in caps.schedulers}
        if req.scheduler.lower() not in by_lower:
            raise NotSupported(
                f"{provider_label} has no scheduler '{req.scheduler}'."
                + did_you_mean(req.scheduler, caps.schedulers)
                + " Available: "
                + ", ".join(caps.schedulers[:20])
            )
        changes["scheduler"] = by_lower[req.scheduler.lower()]
    seed = wrap_seed(req.seed, caps)
    if seed != req.seed:
        changes["seed"] = seed
    if req.negative_prompt and not caps.negative_prompt:
        notes.append(f"{provider_label} has no negative prompt; --no was ignored.")
        changes["negative_prompt"] = None
    if req.model and caps.models and req.model not in caps.models:
        raise NotSupported(
            f"{provider_label} has no model '{req.model}'."
            + did_you_mean(req.model, caps.models)
            + " Available: "
            + ", ".join(caps.models)
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
    caps = provider.capabilities
    sem = asyncio.Semaphore(max(1, parallel))
    done = [0.0] * len(counts)

    def part_progress(i: int) -> ProgressCallback:
        def cb(p: float) -> None:
            done[i] = p
            if progress is not None:
                # A part's note (its queue position) is passed on with the overall fraction.
                progress(Progress(sum(done) / len(done), progress_note(p)))

        return cb

    def part_seed(offset: int) -> int:
        if req.seed == 0 and caps.seed_zero_random:
            return 0  # "random" for every call; the service reports the seeds it picked
        return wrap_seed(req.seed + offset, replace(caps, seed_max=caps.seed_max or 4294967295))

    async def one(i: int, count: int, offset: int) -> GenerationResult:
        async with sem:
            part = replace(req, n=count, seed=part_seed(offset))
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
    # The calls of one job may run on several servers of a pool: name each once.
    servers = ", ".join(dict.fromkeys(r.server for r in results if r.server)) or None
    return GenerationResult(
        images=images, model=results[0].model, request_id=results[0].request_id, server=servers
    )
