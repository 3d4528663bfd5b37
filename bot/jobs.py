"""Durable jobs and the fair scheduler that runs them.

A job row is written (with its quota reservation, in one transaction) before any provider
call. States: queued -> running -> done | failed | filtered. The scheduler takes jobs
round-robin across users, with a cap on running jobs per user and a concurrency limit per
provider. At start, queued jobs are resumed and jobs that were running when the process died
are retried (up to ``jobs.retry_interrupted`` times) or failed and refunded: nothing is
silently dropped and nothing is charged twice.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bot import images, provider_calls
from bot.config import ImageSettings, JobSettings
from bot.errors import QueueFull, UserError
from bot.events import EventBus, JobEvent
from bot.job_request import Display, JobRequest
from bot.providers.base import (
    GenerationRequest,
    GenerationResult,
    Provider,
    ProviderError,
)
from bot.providers.hub import ProviderHub
from bot.quotas import Quotas, user_scope
from bot.scheduler import FairQueue
from bot.storage.protocols import Storage
from bot.storage.records import Job, NewJob, StoredJobImage
from bot.types import Actor

log = logging.getLogger(__name__)

POSITION_DEBOUNCE_S = 0.5
# Place-in-line edits per announcement round. A busy queue moves hundreds of people up at
# every start; editing every message each time kept the platforms (and this process) busy
# with edits nobody needs that often. The most wrong places (relative to the true one: 5 -> 4
# before 305 -> 304) are edited first, the rest in the next rounds.
POSITION_EDITS_PER_ROUND = 10
# Near the front every step is shown; further back, once the shown place is 10% off.
POSITION_EXACT_WITHIN = 10
POSITION_TOLERANCE = 0.1
# When even recording a job's failure fails (disk full, a read-only database), the job would
# stay 'running' with its quota held: retried with backoff until writing works again.
SETTLE_RETRY_FIRST_S = 0.5
SETTLE_RETRY_MAX_S = 30.0
# A second identical Vary/Reroll click by the same person within this window is the same
# wish (a double click, a laggy client), not a second job to pay for.
DOUBLE_CLICK_S = 5.0
DOUBLE_CLICK_KINDS = frozenset(
    {"vary", "vary-subtle", "vary-strong", "reroll", "upscale", "zoom", "pan"}
)
_ID_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"


def new_job_id() -> str:
    """Random, short, unguessable (not sequential: ids travel in button payloads)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


def image_path(data_dir: Path, sha256: str, ext: str) -> Path:
    return data_dir / "images" / sha256[:2] / f"{sha256}.{ext}"


@dataclass(frozen=True)
class JobSpec:
    """What the handler asks to run: one job, validated and fitted to its provider."""

    kind: str
    request: GenerationRequest
    provider: str
    init_sha: str | None = None
    init_ext: str | None = None
    parent_job_id: str | None = None
    parent_index: int | None = None
    notice: str = ""
    display: Display = field(default_factory=Display)  # the user's own words
    remix: bool = False
    cost: int = 1  # quota units per image

    def job_request(self, actor: Actor) -> JobRequest:
        """What is stored for this job, with who pays as the platform vouched for them now."""
        return JobRequest.from_generation(
            self.request,
            init_sha=self.init_sha,
            init_ext=self.init_ext,
            display=self.display,
            payer_roles=tuple(actor.roles),
            payer_admin=actor.is_admin,
            remix=self.remix,
            cost=self.cost,
        )


class JobRunner:
    def __init__(
        self,
        storage: Storage,
        quotas: Quotas,
        providers: ProviderHub,
        *,
        data_dir: Path,
        job_settings: JobSettings,
        image_settings: ImageSettings,
        events: EventBus,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._storage = storage
        self._quotas = quotas
        self._providers = providers
        self._data_dir = data_dir
        self._settings = job_settings
        self._limits = images.ImageLimits(
            max_input_bytes=image_settings.max_input_bytes,
            max_input_pixels=image_settings.max_input_pixels,
            preview_max_bytes=image_settings.preview_max_bytes,
            preview_max_side=image_settings.preview_max_side,
        )
        self._events = events
        self._clock = clock
        self._queue = FairQueue(job_settings.max_running_per_user, self._provider_limit)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._last_positions: dict[str, int] = {}
        # Each job's events go out in order, one after the other, without the runner waiting
        # for the platforms: the newest publishing task per job (it waits for the one before).
        self._publishing: dict[str, asyncio.Task[None]] = {}
        self._positions_task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        # max_concurrency bounds provider *calls*, across jobs: generate_split's own
        # parallelism is per job, so N jobs x M calls would otherwise reach the service.
        self._call_slots: dict[str, asyncio.Semaphore] = {}

    # --------------------------------------------------------------------- submission
    async def submit(
        self,
        actor: Actor,
        channel_id: str,
        thread_id: str | None,
        specs: Sequence[JobSpec],
        *,
        interaction_id: str | None = None,
    ) -> list[str]:
        """Write the jobs and reserve their quota in one ``BEGIN IMMEDIATE`` transaction, then
        queue them. All or nothing: a quota or queue refusal writes nothing."""
        ids = [new_job_id() for _ in specs]
        now = self._clock()
        scope = user_scope(actor.platform, actor.tenant, actor.user_id)
        jobs = self._storage.jobs
        async with self._storage.transaction() as tx:
            # The checks are independent reads: asked together, they cost the connection one
            # round trip instead of one each (under load, each waits for a busy event loop).
            seen, duplicates, (queued, total) = await asyncio.gather(
                jobs.interaction_seen(tx, interaction_id)
                if interaction_id is not None
                else _false(),
                asyncio.gather(
                    *(
                        jobs.duplicate_in_flight(
                            tx,
                            kind=spec.kind,
                            parent_job_id=spec.parent_job_id,
                            parent_index=spec.parent_index,
                            platform=actor.platform,
                            tenant=actor.tenant,
                            owner_id=actor.user_id,
                            since=now - DOUBLE_CLICK_S,
                        )
                        for spec in specs
                        if spec.kind in DOUBLE_CLICK_KINDS
                    )
                ),
                jobs.queued_counts(tx, actor.platform, actor.tenant, actor.user_id),
            )
            if seen:
                return []  # a replayed delivery: already accepted once
            if any(duplicates):
                raise UserError("That is already on its way.")
            cap = self._settings.max_queued_per_user
            if queued + len(specs) > cap:
                raise QueueFull(
                    f"You already have {queued} job{'s' if queued != 1 else ''} waiting; the "
                    f"limit is {cap}. Try again when some have finished."
                )
            if total + len(specs) > self._settings.max_queue:
                raise QueueFull("The queue is full right now. Nothing was charged; try again soon.")
            for i, (job_id, spec) in enumerate(zip(ids, specs, strict=True)):
                await jobs.insert(
                    tx,
                    NewJob(
                        id=job_id,
                        platform=actor.platform,
                        tenant=actor.tenant,
                        channel_id=channel_id,
                        thread_id=thread_id,
                        owner_id=actor.user_id,
                        owner_name=actor.display_name or actor.user_id,
                        kind=spec.kind,
                        parent_job_id=spec.parent_job_id,
                        parent_index=spec.parent_index,
                        request=spec.job_request(actor),
                        provider=spec.provider,
                        notice=spec.notice,
                        interaction_id=interaction_id if i == 0 else None,
                        # Apart by a microsecond, so one submission keeps its order everywhere.
                        created_at=now + i * 1e-6,
                    ),
                )
            await self._quotas.reserve(
                tx, actor, [(j, s.request.n * s.cost) for j, s in zip(ids, specs, strict=True)]
            )
        for job_id, spec in zip(ids, specs, strict=True):
            self._enqueue(job_id, scope, spec.provider)
        for job_id in ids:  # what the status message about to be sent shows
            if (place := self.position(job_id)) is not None:
                self._last_positions[job_id] = place
        return ids

    def _enqueue(self, job_id: str, user: str, provider: str) -> None:
        self._queue.add(job_id, user, provider)
        self._idle.clear()
        self._wake.set()

    def position(self, job_id: str) -> int | None:
        return self._queue.position(job_id)

    def queued_count(self) -> int:
        return self._queue.queued_count()

    # ---------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        # A SIGKILL mid-write leaves a temporary file beside the image store's files; ours
        # from before this process started are garbage (nothing of this process writes yet).
        removed = await asyncio.to_thread(
            images.remove_stale_temp_files, self._data_dir, images.process_start_time()
        )
        if removed:
            log.info("removed %d unfinished image file(s) left by an earlier run", removed)
        await self._recover()
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="job-dispatcher")

    async def stop(self) -> None:
        """Graceful stop: running jobs go back to the queue (not counted as an attempt) so the
        next start runs them; nothing is refunded or charged twice."""
        for background in (self._dispatcher, self._positions_task):
            if background is not None:
                background.cancel()
                await asyncio.gather(background, return_exceptions=True)
        running = list(self._tasks)
        for task in [*self._tasks.values(), *self._publishing.values()]:
            task.cancel()
        await asyncio.gather(
            *self._tasks.values(), *self._publishing.values(), return_exceptions=True
        )
        for job_id in running:
            try:
                await self._storage.jobs.requeue(job_id, undo_attempt=True)
            except Exception:  # the disk is full, say: the next start retries it anyway
                log.exception("could not put job %s back in the queue", job_id)

    async def cancel(self, job_id: str, message: str) -> bool:
        """Cancel a job that has not started: refunded in full. False once it has started."""
        async with self._storage.transaction() as tx:
            if not await self._storage.jobs.cancel_queued(tx, job_id, message, self._clock()):
                return False
            await self._quotas.settle(tx, job_id, 0)
        # Not yet handed to a worker: forget it here. (Once handed over, the worker finds the
        # row no longer queued and skips it.)
        self._queue.remove(job_id)
        self._last_positions.pop(job_id, None)
        self._wake.set()
        self._schedule_positions()  # everyone behind it moved up
        await self._publish(JobEvent(job_id))  # after its place-in-line edits, if any
        return True

    async def wait_idle(self, within: float | None = None) -> None:
        """Wait until nothing is queued or running (tests, the CLI)."""
        async with asyncio.timeout(within):
            await self._idle.wait()

    async def _recover(self) -> None:
        for job in await self._storage.jobs.active("running"):
            if job.attempts <= self._settings.retry_interrupted:
                await self._storage.jobs.requeue(job.id, undo_attempt=False)
                log.info("job %s was interrupted; retrying it", job.id)
            else:
                await self._finish_failed(
                    job.id,
                    "The bot restarted while this job was running, and it had "
                    "already been retried. Your quota was refunded.",
                    notify=False,
                )
        queued = await self._storage.jobs.active("queued")
        for job in queued:
            self._enqueue(job.id, job.payer_scope, job.provider)
        if queued:
            log.info("resumed %d queued job(s)", len(queued))
        if not queued:
            self._idle.set()

    # ---------------------------------------------------------------------- dispatching
    def _provider_limit(self, name: str) -> int:
        try:
            return max(1, self._providers.get(name).capabilities.max_concurrency)
        except Exception:
            return 1

    async def _dispatch_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            started = False
            while (taken := self._queue.take_next()) is not None:
                job_id, user, provider = taken
                task = asyncio.create_task(self._run(job_id, user, provider), name=f"job-{job_id}")
                task.add_done_callback(_log_failure)
                self._tasks[job_id] = task
                started = True
            if started:
                self._schedule_positions()
            if not self._tasks and not self._queue:
                self._idle.set()

    def _schedule_positions(self) -> None:
        """Coalesced: when many jobs start at once, everyone behind them moves up; one
        announcement a moment later beats one edit per person per start."""
        if self._positions_task is None or self._positions_task.done():
            self._positions_task = asyncio.create_task(self._announce_positions())

    async def _announce_positions(self) -> None:
        while True:
            await asyncio.sleep(POSITION_DEBOUNCE_S)
            stale: list[tuple[float, int, str]] = []
            for i, job_id in enumerate(self._queue.order(), start=1):
                shown = self._last_positions.get(job_id)
                if shown == i:
                    continue
                error = 1.0 if shown is None else abs(shown - i) / i
                if i <= POSITION_EXACT_WITHIN or error >= POSITION_TOLERANCE:
                    stale.append((error, i, job_id))
            if not stale:
                return
            stale.sort(key=lambda s: (-s[0], s[1]))
            sent = []
            for _, i, job_id in stale[:POSITION_EDITS_PER_ROUND]:
                self._last_positions[job_id] = i
                sent.append(self._publish(JobEvent(job_id, position=i)))
            await asyncio.wait(sent)  # a round at a time: the edits pace themselves
            if len(stale) <= POSITION_EDITS_PER_ROUND:
                return

    # ----------------------------------------------------------------------- events
    def _publish(self, event: JobEvent) -> asyncio.Task[None]:
        """Tell the listeners (delivery) about ``event`` in the background, after the job's
        earlier events. An update overtaken by a newer one of the same job before it went out
        (a progress step, a place in line) is skipped; a job's final event never is."""
        previous = self._publishing.get(event.job_id)
        task = asyncio.get_running_loop().create_task(self._deliver(event, previous))
        self._publishing[event.job_id] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._publishing.get(event.job_id) is done:
                del self._publishing[event.job_id]

        task.add_done_callback(forget)
        return task

    async def _deliver(self, event: JobEvent, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # its outcome is its own (the bus logs failures)
        overtaken = self._publishing.get(event.job_id) is not asyncio.current_task()
        if overtaken and (event.progress is not None or event.position is not None):
            return
        await self._events.job(event)

    # ---------------------------------------------------------------------- running
    async def load(self, job_id: str) -> Job | None:
        return await self._storage.jobs.get(job_id)

    async def load_images(self, job_id: str) -> list[StoredJobImage]:
        return await self._storage.images.of_job(job_id)

    async def _run(self, job_id: str, user: str, provider_name: str) -> None:
        self._last_positions.pop(job_id, None)
        held = True

        def release() -> None:
            """Give back the user's and the provider's slot: the next job may start."""
            nonlocal held
            if held:
                held = False
                self._queue.release(user, provider_name)
                self._wake.set()

        try:
            try:
                started = await self._storage.jobs.mark_running(job_id, self._clock())
            except Exception:
                # Still queued in the database (nothing was written): try again in a while.
                log.exception("could not start job %s; it stays queued", job_id)
                release()
                await asyncio.sleep(SETTLE_RETRY_FIRST_S)
                self._enqueue(job_id, user, provider_name)
                return
            if started:
                await self._execute(job_id, release)
        finally:
            release()
            self._tasks.pop(job_id, None)
            self._wake.set()

    async def _execute(self, job_id: str, release: Callable[[], None]) -> None:
        """Run the job at its provider and record the outcome, holding the job's slots; then
        give them back and post the outcome (posting is not the provider's time)."""
        job = await self.load(job_id)
        assert job is not None
        self._publish(JobEvent(job_id, progress=0.0))
        last_sent = [0.0]
        loop = asyncio.get_running_loop()

        def on_progress(p: float) -> None:
            # Throttled: at most ~4 edits a second, chat platforms rate-limit edits.
            now = loop.time()
            if now - last_sent[0] >= 0.25 or p >= 1.0:
                last_sent[0] = now
                self._publish(JobEvent(job_id, progress=min(1.0, p)))

        alert: ProviderError | None = None
        try:
            req = await self._build_request(job)
            result, used_provider, notice = await self._generate(job, req, on_progress)
            await self._store_results(job, result, used_provider, notice)
        except asyncio.CancelledError:
            raise  # left 'running' (or re-queued by stop()); settled at the next start
        except ProviderError as exc:
            log.warning(
                "job %s failed at provider %s: %s (%s)",
                job_id,
                job.provider,
                type(exc).__name__,
                exc.status,
            )
            await self._settle_failed(job_id, exc.user_message, release)
            alert = exc if exc.global_failure else None
        except UserError as exc:
            await self._settle_failed(job_id, exc.message, release)
        except Exception:
            ref = secrets.token_hex(4)
            log.exception("job %s failed unexpectedly (ref %s)", job_id, ref)
            await self._settle_failed(
                job_id,
                f"Something went wrong on our side (ref {ref}). Your quota was refunded.",
                release,
            )
        release()
        if alert is not None:
            await self._events.alert(job.provider, alert)
        await self._publish(JobEvent(job_id))

    async def _settle_failed(self, job_id: str, message: str, release: Callable[[], None]) -> None:
        """Record the failure and refund, retrying with backoff for as long as that fails
        (disk full, a read-only database); the job's slots are given back meanwhile."""
        delay = SETTLE_RETRY_FIRST_S
        while True:
            try:
                await self._finish_failed(job_id, message, notify=False)
                return
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

    async def _build_request(self, job: Job) -> GenerationRequest:
        r = job.request
        init: bytes | None = None
        if r.init_sha:
            path = image_path(self._data_dir, r.init_sha, r.init_ext or "png")
            data = await asyncio.to_thread(path.read_bytes)
            init = await images.resize_for_init(data, r.width, r.height)
        return r.generation(init_image=init, user_ref=job.payer_scope)

    def _gated(self, name: str) -> Provider:
        slots = self._call_slots.setdefault(name, asyncio.Semaphore(self._provider_limit(name)))
        return provider_calls.GatedProvider(self._providers.get(name), slots)

    async def _generate(
        self, job: Job, req: GenerationRequest, on_progress: Callable[[float], None]
    ) -> tuple[GenerationResult, str, str]:
        return await provider_calls.generate_with_fallback(
            job, req, on_progress, self._gated, self._providers, self._events, self._settings
        )

    async def _store_results(
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
                    "parameters": provider_calls.a1111_parameters(job, seed, result.model),
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
                notice=" ".join(notes),
                grid_sha=grid.sha256 if grid else None,
                grid_ext=grid.path.suffix.lstrip(".") if grid else None,
                error=None
                if stored
                else "Every image was removed by the provider's content filter.",
                at=self._clock(),
            )
            await self._quotas.settle(tx, job.id, len(stored) * job.request.cost)

    async def _finish_failed(self, job_id: str, message: str, *, notify: bool = True) -> None:
        async with self._storage.transaction() as tx:
            await self._storage.jobs.fail(tx, job_id, message, self._clock())
            await self._quotas.settle(tx, job_id, 0)
        if notify:
            await self._events.job(JobEvent(job_id))


async def _false() -> bool:
    return False


def _log_failure(task: asyncio.Task[None]) -> None:
    """A job task never ends in an exception nobody retrieves (asyncio would only mention it
    when the task is collected, as "Task exception was never retrieved")."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("job task %s failed", task.get_name(), exc_info=exc)


# Job, StoredJobImage and JobEvent live in bot.storage.records and bot.events; importing them
# from here keeps working.
__all__ = ["Job", "JobEvent", "JobRunner", "JobSpec", "StoredJobImage", "image_path"]
