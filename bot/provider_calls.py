"""How the runner calls a provider: through its service-wide slots, with the fallback
provider standing in while the default one is unavailable; and the "parameters" text a
finished image carries. Split from :mod:`bot.jobs`, which decides *when*; this is *how*.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bot.config import JobSettings
from bot.events import EventBus
from bot.providers import edits
from bot.providers.base import (
    Capabilities,
    GenerationRequest,
    GenerationResult,
    ProgressCallback,
    Provider,
    ProviderError,
    ProviderUnavailable,
    fit_request,
    generate_split,
)
from bot.providers.hub import ProviderHub
from bot.storage.records import Job


async def generate_with_fallback(
    job: Job,
    req: GenerationRequest,
    on_progress: Callable[[float], None],
    gated: Callable[[str], Provider],
    providers: ProviderHub,
    events: EventBus,
    settings: JobSettings,
) -> tuple[GenerationResult, str, str]:
    """The job's images, the provider that made them, and a notice when it was the fallback."""
    provider = gated(job.provider)
    try:
        async with asyncio.timeout(settings.job_timeout_s):
            result = await generate_split(
                provider,
                req,
                parallel=provider.capabilities.max_concurrency,
                progress=on_progress,
            )
        return result, job.provider, ""
    except TimeoutError:
        error: ProviderError = ProviderUnavailable(f"job exceeded {settings.job_timeout_s:g}s")
    except ProviderError as exc:
        error = exc
    fallback = providers.fallback
    if (
        fallback is None
        or fallback == job.provider
        or not (isinstance(error, ProviderUnavailable) or error.global_failure)
    ):
        raise error
    if error.global_failure:
        await events.alert(job.provider, error)
    backup = gated(fallback)
    try:
        fitted = fit_request(req, backup.capabilities, backup.label)
    except ProviderError:
        raise error from None
    try:
        async with asyncio.timeout(settings.job_timeout_s):
            result = await generate_split(
                backup,
                fitted.request,
                parallel=backup.capabilities.max_concurrency,
                progress=on_progress,
            )
    except TimeoutError:
        raise ProviderUnavailable(f"fallback job exceeded {settings.job_timeout_s:g}s") from None
    notice = (
        f"{providers.get(job.provider).label} was unavailable, so "
        f"{backup.label} made these instead."
    )
    return result, fallback, notice


class GatedProvider:
    """A provider whose calls wait for one of its service-wide slots."""

    def __init__(self, inner: Provider, slots: asyncio.Semaphore) -> None:
        self._inner, self._slots = inner, slots
        self.name, self.label = inner.name, inner.label

    @property
    def capabilities(self) -> Capabilities:
        return self._inner.capabilities

    async def generate(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        async with self._slots:
            if req.edit is not None:  # an image verb: upscale or outpaint the init image
                return await edits.perform(self._inner, req, progress)
            return await self._inner.generate(req, progress)

    async def check(self) -> dict[str, str]:
        return await self._inner.check()

    async def aclose(self) -> None:
        await self._inner.aclose()


def a1111_parameters(job: Job, seed: int | None, model: str | None) -> str:
    """The widely read "parameters" text chunk (as AUTOMATIC1111 writes it)."""
    r = job.request
    parts = [r.prompt]
    if r.negative_prompt:
        parts.append(f"Negative prompt: {r.negative_prompt}")
    fields = ([f"Seed: {seed}"] if seed is not None else []) + [f"Size: {r.width}x{r.height}"]
    if r.steps:
        fields.insert(0, f"Steps: {r.steps}")
    if r.sampler:
        fields.append(f"Sampler: {r.sampler}")
    if r.cfg is not None:
        fields.append(f"CFG scale: {r.cfg}")
    if model:
        fields.append(f"Model: {model}")
    fields.append(f"Provider: {job.provider}")
    parts.append(", ".join(fields))
    return "\n".join(parts)


__all__ = ["GatedProvider", "a1111_parameters", "generate_with_fallback"]
