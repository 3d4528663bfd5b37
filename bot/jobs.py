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
from pathlib import Path

from bot import images
from bot.admission import Admissions, JobSpec
from bot.config import ImageSettings, JobSettings
from bot.errors import UserError
from bot.events import EventBus, JobEvent, OrderedPublisher
from bot.execution import SETTLE_RETRY_FIRST_S, JobExecutor, LeaseLost, image_path
from bot.leasing import LeaseDispatcher, process_owner
from bot.providers.base import (
    ProviderError,
)
from bot.providers.hub import ProviderHub
from bot.quotas import Quotas, user_scope
from bot.scheduler import FairQueue, PlaceInLine
from bot.storage.protocols import Storage
from bot.storage.records import Job, StoredJobImage, queued_job
from bot.types import Actor

log = logging.getLogger(__name__)

_ACTIVE = ("queued", "running")


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
        shared: bool = False,
    ) -> None:
        """``shared``: several processes use this database (see :mod:`bot.leasing`): jobs
        are claimed from it by lease instead of queued in this process's memory."""
        self._storage = storage
        self._quotas = quotas
        self._providers = providers
        self._data_dir = data_dir
        self._settings = job_settings
        self._events = events
        self._clock = clock
        self._queue = FairQueue(job_settings.max_running_per_user, self._provider_limit)
        self._places = PlaceInLine(
            self._queue, lambda job_id, i: self._publish(JobEvent(job_id, position=i))
        )
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        # Each job's events go out in order, one after the other, without the runner waiting
        # for the platforms: the newest publishing task per job (it waits for the one before).
        self._publisher = OrderedPublisher(events)
        self._idle = asyncio.Event()
        self._idle.set()
        self._admissions = Admissions(storage, quotas, job_settings, self._admitted)
        self._executor = JobExecutor(
            storage,
            quotas,
            providers,
            data_dir=data_dir,
            job_settings=job_settings,
            limits=images.ImageLimits(
                max_input_bytes=image_settings.max_input_bytes,
                max_input_pixels=image_settings.max_input_pixels,
                preview_max_bytes=image_settings.preview_max_bytes,
                preview_max_side=image_settings.preview_max_side,
            ),
            events=events,
            provider_limit=self._provider_limit,
            clock=clock,
        )
        self._leases: LeaseDispatcher | None = None
        if shared:
            self._leases = LeaseDispatcher(
                storage,
                quotas,
                settings=job_settings,
                owner=process_owner(),
                clock=clock,
                provider_names=providers.names,
                provider_limit=self._provider_limit,
                spawn=self._spawn_claimed,
                tasks=self._tasks,
                publish=self._publish,
                idle=self._idle,
            )
            self._executor.lease_owner = self._leases.owner

    @property
    def shared(self) -> bool:
        return self._leases is not None

    # --------------------------------------------------------------------- submission
    async def submit(
        self,
        actor: Actor,
        channel_id: str,
        thread_id: str | None,
        specs: Sequence[JobSpec],
        *,
        interaction_id: str | None = None,
    ) -> list[Job]:
        """Write the jobs and reserve their quota in one ``BEGIN IMMEDIATE`` transaction (with
        whatever else is being submitted at the same moment: :class:`Admissions`), then queue
        them. All or nothing: a quota or queue refusal writes nothing."""
        written = await self._admissions.admit(
            self._clock(), actor, channel_id, thread_id, specs, interaction_id
        )
        for job in written:  # what the status message about to be sent shows
            if (place := self.position(job.id)) is not None:
                self._places.shown(job.id, place)
        # As written (queued): the caller shows them at once, and catches up on any that
        # started meanwhile.
        return [queued_job(job) for job in written]

    def _admitted(self, actor: Actor, ids: Sequence[str], specs: Sequence[JobSpec]) -> None:
        """Committed: into the queue (called by admission before the submitter hears)."""
        scope = user_scope(actor.platform, actor.tenant, actor.user_id)
        for job_id, spec in zip(ids, specs, strict=True):
            self._enqueue(job_id, scope, spec.provider)

    def _enqueue(self, job_id: str, user: str, provider: str) -> None:
        if self._leases is not None:
            self._leases.wake()  # the database is the queue
            return
        self._queue.add(job_id, user, provider)
        self._idle.clear()
        self._wake.set()

    def position(self, job_id: str) -> int | None:
        """The job's place in line (this process's queue; None in shared mode)."""
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
        if self._leases is not None:
            self._idle.clear()  # until the first look at the shared queue
            await self._leases.start()
            return
        await self._recover()
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="job-dispatcher")

    async def stop(self) -> None:
        """Graceful stop: running jobs go back to the queue (not counted as an attempt) so the
        next start runs them; nothing is refunded or charged twice."""
        await self._admissions.drain()  # what is being admitted is queued, or refused
        await self._places.stop()
        if self._leases is not None:
            await self._leases.stop()
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        running = list(self._tasks)
        publishing = self._publisher.pending()
        for task in [*self._tasks.values(), *publishing]:
            task.cancel()
        await asyncio.gather(*self._tasks.values(), *publishing, return_exceptions=True)
        if self._leases is not None:
            await self._leases.give_back(running)
            return
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
        self._places.forget(job_id)
        self._wake.set()
        self._places.schedule()  # everyone behind it moved up
        await self._publish(JobEvent(job_id))  # after its place-in-line edits, if any
        return True

    async def wait_idle(self, within: float | None = None) -> None:
        """Wait until nothing is queued or running (tests, the CLI)."""
        async with asyncio.timeout(within):
            await self._idle.wait()

    async def wait_finished(self, job_ids: Sequence[str], poll_s: float = 0.2) -> None:
        """Wait until these jobs have ended, whichever process runs them."""
        if self._leases is None:
            await self.wait_idle()
            return
        pending = list(job_ids)
        while pending:
            pending = [j for j in pending if (job := await self.load(j)) and job.state in _ACTIVE]
            if pending:
                await asyncio.sleep(poll_s)

    async def _recover(self) -> None:
        for job in await self._storage.jobs.active("running"):
            if job.attempts <= self._settings.retry_interrupted:
                await self._storage.jobs.requeue(job.id, undo_attempt=False)
                log.info("job %s was interrupted; retrying it", job.id)
            else:
                await self._executor.finish_failed(
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
                self._places.schedule()
            if not self._tasks and not self._queue:
                self._idle.set()

    def _publish(self, event: JobEvent) -> asyncio.Task[None]:
        task = self._publisher.publish(event)
        local_change = event.progress is None and event.position is None and not event.remote
        if self._leases is not None and local_change:
            self._leases.tell_others(task, event.job_id)  # their pages show the change
        return task

    def on_notice(self, job_id: str) -> None:
        """A job changed, says the shared database (see :meth:`LeaseDispatcher.heard`)."""
        if self._leases is not None:
            self._leases.heard(job_id)

    # ---------------------------------------------------------------------- running
    async def load(self, job_id: str) -> Job | None:
        return await self._storage.jobs.get(job_id)

    async def load_images(self, job_id: str) -> list[StoredJobImage]:
        return await self._storage.images.of_job(job_id)

    async def _run(self, job_id: str, user: str, provider_name: str) -> None:
        self._places.forget(job_id)
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

    def _spawn_claimed(self, job_id: str, provider_name: str) -> None:
        """Shared mode: run a job this process just claimed (it is running already)."""
        task = asyncio.create_task(self._run_claimed(job_id, provider_name), name=f"job-{job_id}")
        task.add_done_callback(_log_failure)
        self._tasks[job_id] = task

    async def _run_claimed(self, job_id: str, provider_name: str) -> None:
        assert self._leases is not None
        leases = self._leases
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                leases.release(provider_name)

        try:
            await self._execute(job_id, release)
        finally:
            release()
            self._tasks.pop(job_id, None)

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
            req = await self._executor.build_request(job)
            result, used_provider, notice = await self._executor.generate(job, req, on_progress)
            await self._executor.store_results(job, result, used_provider, notice)
        except asyncio.CancelledError:
            raise  # left 'running' (or re-queued by stop()); settled at the next start
        except LeaseLost:
            log.warning("job %s was taken over by another process; its outcome is theirs", job_id)
            release()
            return
        except ProviderError as exc:
            log.warning(
                "job %s failed at provider %s: %s (%s)",
                job_id,
                job.provider,
                type(exc).__name__,
                exc.status,
            )
            await self._executor.settle_failed(job_id, exc.user_message, release)
            alert = exc if exc.global_failure else None
        except UserError as exc:
            await self._executor.settle_failed(job_id, exc.message, release)
        except Exception:
            ref = secrets.token_hex(4)
            log.exception("job %s failed unexpectedly (ref %s)", job_id, ref)
            await self._executor.settle_failed(
                job_id,
                f"Something went wrong on our side (ref {ref}). Your quota was refunded.",
                release,
            )
        release()
        if alert is not None:
            await self._events.alert(job.provider, alert)
        await self._publish(JobEvent(job_id))


def _log_failure(task: asyncio.Task[None]) -> None:
    """A job task never ends in an exception nobody retrieves (asyncio would only mention it
    when the task is collected, as "Task exception was never retrieved")."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("job task %s failed", task.get_name(), exc_info=exc)


# Job, StoredJobImage and JobEvent live in bot.storage.records and bot.events; importing them
# from here keeps working.
__all__ = ["Job", "JobEvent", "JobRunner", "JobSpec", "StoredJobImage", "image_path"]
