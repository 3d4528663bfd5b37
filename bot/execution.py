"""Running one job at its provider and recording what came of it.

The runner (bot.jobs) decides *when* a job runs; this decides *how*: build the provider
request (with its init image), call the provider through its service-wide call slots (falling
back to the configured fallback provider when the first is down), store the images and settle
the quota in one transaction, or record the failure and refund, retrying for as long as the
disk refuses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from bot import images
from bot.config import JobSettings
from bot.events import EventBus, JobEvent
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
from bot.quotas import Quotas
from bot.storage.protocols import Storage, Tx
from bot.storage.records import Job, StoredJobImage

log = logging.getLogger(__name__)

# When even recording a job's failure fails (disk full, a read-only database), the job would
# stay 'running' with its quota held: retried with backoff until writing works again.
SETTLE_RETRY_FIRST_S = 0.5
SETTLE_RETRY_MAX_S = 30.0


class LeaseLost(Exception):
    """Shared mode: another process holds the job now; this one must not record an outcome."""


def image_path(data_dir: Path, sha256: str, ext: str) -> Path:
    return data_dir / "images" / sha256[:2] / f"{sha256}.{ext}"


class JobExecutor:
    """One job's provider call and its outcome, for the runner."""

    def __init__(
        self,
        storage: Storage,
        quotas: Quotas,
        providers: ProviderHub,
        *,
        data_dir: Path,
        job_settings: JobSettings,
        limits: images.ImageLimits,
        events: EventBus,
        provider_limit: Callable[[str], int],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._storage = storage
        self._quotas = quotas
        self._providers = providers
        self._data_dir = data_dir
        self._settings = job_settings
        self._limits = limits
        self._events = events
        self._provider_limit = provider_limit
        self._clock = clock
        # max_concurrency bounds provider *calls*, across jobs: generate_split's own
        # parallelism is per job, so N jobs x M calls would otherwise reach the service.
        self._call_slots: dict[str, asyncio.Semaphore] = {}
        # Shared mode (bot.leasing): this process's lease name; an outcome is recorded only
        # while the lease is still this process's.
        self.lease_owner: str | None = None

    async def _check_lease(self, tx: Tx, job_id: str) -> None:
        if self.lease_owner is not None and not await self._storage.leases.holds(
            tx, job_id, self.lease_owner
        ):
            raise LeaseLost(job_id)

    async def settle_failed(self, job_id: str, message: str, release: Callable[[], None]) -> None:
        """Record the failure and refund, retrying with backoff for as long as that fails
        (disk full, a read-only database); the job's slots are given back meanwhile."""
        delay = SETTLE_RETRY_FIRST_S
        while True:
            try:
                await self.finish_failed(job_id, message, notify=False)
                return
            except LeaseLost:
                return  # another process runs it now: the outcome is theirs to record
            except Exception as exc:
                log.warning(
                    "could not record the failure of job %s (%s: %s); its quota is "
                    "held until that works, next try in %.1f s",
                    job_id,
                    type(exc).__name__,
                    exc,
                    delay,
                )
            release()
            await asyncio.sleep(delay)
            delay = min(delay * 2, SETTLE_RETRY_MAX_S)

    async def build_request(self, job: Job) -> GenerationRequest:
        r = job.request
        init: bytes | None = None
        if r.init_sha:
            path = image_path(self._data_dir, r.init_sha, r.init_ext or "png")
            data = await asyncio.to_thread(path.read_bytes)
            init = await images.resize_for_init(data, r.width, r.height)
        return r.generation(init_image=init, user_ref=job.payer_scope)

    def gated(self, name: str) -> Provider:
        slots = self._call_slots.setdefault(name, asyncio.Semaphore(self._provider_limit(name)))
        return _GatedProvider(self._providers.get(name), slots)

    async def generate(
        self, job: Job, req: GenerationRequest, on_progress: Callable[[float], None]
    ) -> tuple[GenerationResult, str, str]:
        provider = self.gated(job.provider)
        try:
            async with asyncio.timeout(self._settings.job_timeout_s):
                result = await generate_split(
                    provider,
                    req,
                    parallel=provider.capabilities.max_concurrency,
                    progress=on_progress,
                )
            return result, job.provider, ""
        except TimeoutError:
            error: ProviderError = ProviderUnavailable(
                f"job exceeded {self._settings.job_timeout_s:g}s"
            )
        except ProviderError as exc:
            error = exc
        fallback = self._providers.fallback
        if (
            fallback is None
            or fallback == job.provider
            or not (isinstance(error, ProviderUnavailable) or error.global_failure)
        ):
            raise error
        if error.global_failure:
            await self._events.alert(job.provider, error)
        backup = self.gated(fallback)
        try:
            fitted = fit_request(req, backup.capabilities, backup.label)
        except ProviderError:
            raise error from None
        try:
            async with asyncio.timeout(self._settings.job_timeout_s):
                result = await generate_split(
                    backup,
                    fitted.request,
                    parallel=backup.capabilities.max_concurrency,
                    progress=on_progress,
                )
        except TimeoutError:
            raise ProviderUnavailable(
                f"fallback job exceeded {self._settings.job_timeout_s:g}s"
            ) from None
        notice = (
            f"{self._providers.get(job.provider).label} was unavailable, so "
            f"{backup.label} made these instead."
        )
        return result, fallback, notice

    async def store_results(
        self, job: Job, result: GenerationResult, provider: str, notice: str
    ) -> None:
        kept = [img for img in result.images if not img.filtered]
        filtered = len(result.images) - len(kept)
        # A provider without seeds (seed_max None, e.g. OpenAI) ignored ours: recording
        # seed + i would claim a reproducibility that does not exist.
        seedless = self._providers.get(provider).capabilities.seed_max is None
        seeds: list[int | None] = [
            img.seed if img.seed is not None else (None if seedless else job.seed + i)
            for i, img in enumerate(kept)
        ]
        outputs = [
            (
                img.data,
                {
                    "prompt": job.request.prompt,
                    "negative_prompt": job.request.negative_prompt or "",
                    **({"seed": str(seed)} if seed is not None else {}),
                    "provider": provider,
                    "model": str(result.model or ""),
                    "job_id": job.id,
                    "parameters": _a1111_parameters(job, seed, result.model),
                },
            )
            for img, seed in zip(kept, seeds, strict=True)
        ]
        files, grid = await images.store_job_images(self._data_dir, outputs, self._limits)
        stored = list(zip(files, seeds, strict=True))
        notes = [n for n in (job.notice, notice) if n]
        if filtered:
            notes.append(
                f"{filtered} image{'s were' if filtered != 1 else ' was'} removed by the "
                "provider's content filter and refunded."
            )
        async with self._storage.transaction() as tx:
            await self._check_lease(tx, job.id)
            await self._storage.images.put(
                tx,
                job.id,
                [
                    StoredJobImage(i, f.sha256, f.path.suffix.lstrip("."), seed, f.width, f.height)
                    for i, (f, seed) in enumerate(stored, start=1)
                ],
            )
            await self._storage.jobs.finish(
                tx,
                job.id,
                state="done" if stored else "filtered",
                provider=provider,
                model=result.model,
                server=result.server,
                notice=" ".join(notes),
                grid_sha=grid.sha256 if grid else None,
                grid_ext=grid.path.suffix.lstrip(".") if grid else None,
                error=None
                if stored
                else "Every image was removed by the provider's content filter.",
                at=self._clock(),
            )
            await self._quotas.settle(tx, job.id, len(stored) * job.request.cost)

    async def finish_failed(self, job_id: str, message: str, *, notify: bool = True) -> None:
        async with self._storage.transaction() as tx:
            await self._check_lease(tx, job_id)
            await self._storage.jobs.fail(tx, job_id, message, self._clock())
            await self._quotas.settle(tx, job_id, 0)
        if notify:
            await self._events.job(JobEvent(job_id))


class _GatedProvider:
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


def _a1111_parameters(job: Job, seed: int | None, model: str | None) -> str:
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


# Job, StoredJobImage and JobEvent live in bot.storage.records and bot.events; importing them
