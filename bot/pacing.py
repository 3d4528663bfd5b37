"""Status edits within a per-channel call budget: coalesced, bounded per job, never blocking.

Queue-position and progress edits of a job's status message are best effort: each one is
superseded by the next, and the result settles the message anyway. So instead of one platform
call per event, the :class:`StatusPacer` keeps only the newest edit per job and sends it when
the job's channel (and its workspace) has budget left, a token bucket each. A job gets at most
``per_job`` such edits, the last of them kept for a change of state (queued -> running), so a
job costs a small, bounded number of calls however long it waited or however chatty its
provider's progress is. Before the result settles the status message, :meth:`settle` drops
what is still waiting and waits for an edit in flight, so an old edit never lands on top.

The budgets are settings with per-platform defaults (``[slack]``, ``[discord]`` in
``config/default.toml``); a platform without one (the web playground) is not paced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

Send = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Budget:
    """What status edits may cost on one platform."""

    per_job: int = 3  # best-effort edits per job, the last kept for a change of state
    channel_per_min: float = 20.0  # edits per channel per minute (a token bucket)
    tenant_per_min: float = 40.0  # edits per workspace/guild per minute (0: no such cap)
    burst: int = 5  # tokens a quiet channel saves up


class _Bucket:
    def __init__(self, per_min: float, burst: int, now: float) -> None:
        self.rate = per_min / 60.0
        self.cap = float(max(1, burst))
        self.tokens = self.cap
        self.at = now

    def _fill(self, now: float) -> None:
        self.tokens = min(self.cap, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def ready_at(self, now: float) -> float:
        """When one token is there (``now`` if it is)."""
        self._fill(now)
        if self.tokens >= 1.0:
            return now
        return now + (1.0 - self.tokens) / self.rate

    def take(self) -> None:
        self.tokens -= 1.0


@dataclass
class _Pending:
    keys: tuple[tuple[str, ...], ...]
    send: Send
    state_change: bool


class StatusPacer:
    """Coalesces status edits per job and spends them within each channel's budget."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._budgets: dict[tuple[str, ...], tuple[float, int]] = {}
        self._buckets: dict[tuple[str, ...], _Bucket] = {}
        self._pending: dict[str, _Pending] = {}  # oldest first: fair across jobs
        self._sent: dict[str, int] = {}
        self._flying: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self.sent_total = 0
        self.dropped_total = 0

    def offer(
        self,
        job_id: str,
        budget: Budget,
        where: tuple[str, str, str],
        send: Send,
        *,
        state_change: bool,
    ) -> None:
        """The newest edit for ``job_id`` (platform, tenant, channel in ``where``); it replaces
        one still waiting, or is dropped when the job has had its share."""
        sent = self._sent.get(job_id, 0)
        allowed = budget.per_job if state_change else budget.per_job - 1
        if sent >= allowed:
            self.dropped_total += 1
            return
        platform, tenant, channel = where
        keys: list[tuple[str, ...]] = [(platform, tenant, channel)]
        self._budgets[keys[0]] = (budget.channel_per_min, budget.burst)
        if budget.tenant_per_min > 0:
            keys.append((platform, tenant))
            self._budgets[keys[1]] = (budget.tenant_per_min, budget.burst)
        old = self._pending.get(job_id)
        if old is not None:
            self.dropped_total += 1  # superseded; a change of state stays one
            state_change = state_change or old.state_change
        self._pending[job_id] = _Pending(tuple(keys), send, state_change)
        self._wake.set()
        if self._loop is None or self._loop.done():
            self._loop = asyncio.get_running_loop().create_task(self._run())

    async def settle(self, job_id: str) -> None:
        """The job is finished: nothing more of its edits goes out, and one in flight lands
        before the caller settles the message."""
        self._pending.pop(job_id, None)
        self._sent.pop(job_id, None)
        task = self._flying.get(job_id)
        if task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(task)

    async def aclose(self) -> None:
        self._pending.clear()
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        if self._flying:
            await asyncio.gather(*self._flying.values(), return_exceptions=True)

    def _bucket(self, key: tuple[str, ...], now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        per_min, burst = self._budgets[key]
        if bucket is None or bucket.rate != per_min / 60.0:
            bucket = self._buckets[key] = _Bucket(per_min, burst, now)
        return bucket

    async def _run(self) -> None:
        while self._pending:
            self._wake.clear()
            now = self._clock()
            next_at: float | None = None
            for job_id in list(self._pending):
                if job_id in self._flying:
                    continue  # one edit of a message at a time, in order
                item = self._pending[job_id]
                buckets = [self._bucket(k, now) for k in item.keys]
                ready = max(b.ready_at(now) for b in buckets)
                if ready > now:
                    next_at = ready if next_at is None else min(next_at, ready)
                    continue
                for b in buckets:
                    b.take()
                del self._pending[job_id]
                self._sent[job_id] = self._sent.get(job_id, 0) + 1
                self.sent_total += 1
                task = asyncio.get_running_loop().create_task(self._send(job_id, item.send))
                self._flying[job_id] = task
            if not self._pending:
                break
            delay = 0.05 if next_at is None else max(0.0, next_at - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
        self._loop = None

    async def _send(self, job_id: str, send: Send) -> None:
        try:
            await send()
        except Exception:  # the sender logs what it knows; a best-effort edit is not retried
            log.debug("a status edit of job %s failed", job_id, exc_info=True)
        finally:
            self._flying.pop(job_id, None)
            if job_id in self._pending:
                self._wake.set()


__all__ = ["Budget", "StatusPacer"]
