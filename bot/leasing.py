"""Shared mode: several processes on one database take jobs by lease, not from memory.

With a shared store (PostgreSQL, ``store.url``) no process owns the queue. Each one, every
``jobs.claim_poll_s`` or at once when it queued something itself, claims for each provider it
has a free slot for the fairest queued job (the payer served longest ago, under the per-user
cap of running jobs: the database decides, so fairness holds across processes), and holds it
by a lease of ``jobs.lease_s`` that it renews while the job runs. A process that dies stops
renewing; when the lease runs out any process puts the job back in the queue, which counts as
the interrupted attempt (``jobs.retry_interrupted``), or fails and refunds it after that. A
process that stalls past its lease loses the job: its renewal says so, its task is cancelled,
and the outcome it might still try to record is refused (``JobExecutor`` checks the lease in
the transaction that records it), so no job is recorded twice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import secrets
import socket
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from bot.config import JobSettings
from bot.events import JobEvent
from bot.quotas import Quotas
from bot.storage.protocols import Storage

log = logging.getLogger(__name__)

EXPIRED_TOO_OFTEN = (
    "The process running this job stopped, and it had already been retried. Your quota was "
    "refunded."
)


def process_owner() -> str:
    """This process's name on its leases: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class LeaseDispatcher:
    def __init__(
        self,
        storage: Storage,
        quotas: Quotas,
        *,
        settings: JobSettings,
        owner: str,
        clock: Callable[[], float],
        provider_names: Callable[[], Iterable[str]],
        provider_limit: Callable[[str], int],
        spawn: Callable[[str, str], None],
        tasks: Mapping[str, asyncio.Task[None]],
        publish: Callable[[JobEvent], object],
        idle: asyncio.Event,
    ) -> None:
        self._storage = storage
        self._quotas = quotas
        self._settings = settings
        self.owner = owner
        self._clock = clock
        self._provider_names = provider_names
        self._provider_limit = provider_limit
        self._spawn = spawn
        self._tasks = tasks
        self._publish = publish
        self._idle = idle
        self._running: Counter[str] = Counter()
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._told: collections.deque[str] = collections.deque(maxlen=1000)  # own notices
        self._notices: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        self._idle.clear()
        self._wake.set()

    def tell_others(self, published: asyncio.Task[None], job_id: str) -> None:
        """Once ``job_id``'s change went out here, tell the other processes (a notice)."""
        self._told.append(job_id)
        published.add_done_callback(lambda _: self._notify(job_id))

    def _notify(self, job_id: str) -> None:
        notice = asyncio.get_running_loop().create_task(self._storage.notices.notify(job_id))
        self._notices.add(notice)
        notice.add_done_callback(self._notices.discard)

    def heard(self, job_id: str) -> None:
        """A notice: shown here as a remote event, unless it is this process's own."""
        if job_id in self._told:
            self._told.remove(job_id)
            return
        self._publish(JobEvent(job_id, remote=True))

    def release(self, provider: str) -> None:
        """A job of ``provider`` ended here: its slot is free."""
        self._running[provider] -= 1
        self._wake.set()

    async def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="job-claims"),
            asyncio.create_task(self._renew_loop(), name="job-leases"),
        ]

    async def stop(self) -> None:
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)

    async def give_back(self, job_ids: Iterable[str]) -> None:
        """A graceful stop: this process's running jobs go back to the queue at once (the
        attempt not counted), for the other processes to take."""
        for job_id in job_ids:
            try:
                await self._storage.leases.release(self.owner, job_id)
            except Exception:  # its lease runs out and another process takes it anyway
                log.exception("could not give job %s back to the queue", job_id)

    # ------------------------------------------------------------------------- the loops
    async def _claim_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.claim_poll_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._reclaim_expired()
                await self._claim()
                if not self._tasks and not await self._mine_queued():
                    self._idle.set()
            except Exception:
                log.exception("looking for queued jobs failed; trying again shortly")

    async def _mine_queued(self) -> bool:
        return bool(await self._storage.leases.queued_providers() & set(self._provider_names()))

    async def _claim(self) -> None:
        queued = await self._storage.leases.queued_providers()
        for name in self._provider_names():
            if name not in queued:
                continue
            while self._running[name] < self._provider_limit(name):
                now = self._clock()
                job_id = await self._storage.leases.claim_next(
                    provider=name,
                    owner=self.owner,
                    now=now,
                    until=now + self._settings.lease_s,
                    max_running_per_user=self._settings.max_running_per_user,
                )
                if job_id is None:
                    break
                self._running[name] += 1
                self._spawn(job_id, name)

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.lease_s / 3)
            ids = [job_id for job_id, task in self._tasks.items() if not task.done()]
            try:
                held = await self._storage.leases.renew(
                    self.owner, ids, self._clock() + self._settings.lease_s
                )
            except Exception:
                log.exception("could not renew this process's job leases")
                continue
            for job_id in set(ids) - held:
                job = await self._storage.jobs.get(job_id)
                if job is not None and job.state in ("queued", "running"):
                    # Another process has it now (this one stalled past its lease).
                    log.warning("job %s was taken over by another process; stopping here", job_id)
                    self._tasks[job_id].cancel()

    async def _reclaim_expired(self) -> None:
        now = self._clock()
        for job in await self._storage.leases.expired(now):
            if job.attempts <= self._settings.retry_interrupted:
                if await self._storage.leases.requeue_expired(job.id, now):
                    log.info("job %s lost its process; it is queued again", job.id)
                    self._wake.set()
                continue
            async with self._storage.transaction() as tx:
                failed = await self._storage.leases.fail_expired(tx, job.id, EXPIRED_TOO_OFTEN, now)
                if failed:
                    await self._quotas.settle(tx, job.id, 0)
            if failed:
                self._publish(JobEvent(job.id))


__all__ = ["EXPIRED_TOO_OFTEN", "LeaseDispatcher", "process_owner"]
