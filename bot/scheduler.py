"""The fair queue: queued jobs per user, taken round-robin under per-user and per-provider caps.

Pure bookkeeping, no I/O and no clock: :class:`bot.jobs.JobRunner` owns one, adds what is
queued, takes what may start, and gives slots back when a job ends. Fairness: the user served
longest ago goes first, and a newcomer before everyone already served.

:class:`PlaceInLine` tells the people waiting where they stand, coalesced and paced.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, deque
from collections.abc import Callable

POSITION_DEBOUNCE_S = 0.5
# Place-in-line edits per announcement round. A busy queue moves hundreds of people up at
# every start; editing every message each time kept the platforms (and this process) busy
# with edits nobody needs that often. The most wrong places (relative to the true one: 5 -> 4
# before 305 -> 304) are edited first, the rest in the next rounds.
POSITION_EDITS_PER_ROUND = 10
# Near the front every step is shown; further back, once the shown place is 10% off.
POSITION_EXACT_WITHIN = 10
POSITION_TOLERANCE = 0.1


class FairQueue:
    def __init__(self, max_running_per_user: int, provider_limit: Callable[[str], int]) -> None:
        self._max_running_per_user = max_running_per_user
        self._provider_limit = provider_limit
        self._queues: dict[str, deque[str]] = {}
        self._turns = itertools.count()
        self._last_served: dict[str, int] = {}
        self._arrival: dict[str, int] = {}
        self._job_owner: dict[str, str] = {}
        self._job_provider: dict[str, str] = {}
        self._running_user: Counter[str] = Counter()
        self._running_provider: Counter[str] = Counter()
        self._queued_provider: Counter[str] = Counter()
        self._order_index: dict[str, int] | None = None  # job -> place in line, cached

    def __bool__(self) -> bool:
        """Anything queued?"""
        return bool(self._queues)

    def add(self, job_id: str, user: str, provider: str) -> None:
        if user not in self._queues:
            self._queues[user] = deque()
            self._arrival[user] = next(self._turns)
        self._queues[user].append(job_id)
        self._queued_provider[provider] += 1
        self._order_index = None
        self._job_owner[job_id] = user
        self._job_provider[job_id] = provider

    def remove(self, job_id: str) -> bool:
        """Forget a queued job (cancelled); False when it is not waiting here."""
        user = self._job_owner.get(job_id)
        queue = self._queues.get(user) if user is not None else None
        if user is None or queue is None or job_id not in queue:
            return False
        queue.remove(job_id)
        if not queue:
            del self._queues[user]
            del self._arrival[user]
        self._queued_provider[self._job_provider.pop(job_id)] -= 1
        del self._job_owner[job_id]
        self._order_index = None
        return True

    def take_next(self) -> tuple[str, str, str] | None:
        """The next job that may start, as (job id, user, provider), its slots now taken;
        None when nobody queued may start."""
        # Woken at every submission and every finish: with hundreds of people waiting and
        # every provider busy, sorting them all to find nobody can start was most of the
        # dispatcher's time.
        if all(
            self._running_provider[p] >= self._provider_limit(p)
            for p, n in self._queued_provider.items()
            if n
        ):
            return None
        for user in self._users():
            queue = self._queues[user]
            if self._running_user[user] >= self._max_running_per_user:
                continue
            job_id = queue[0]
            provider = self._job_provider[job_id]
            if self._running_provider[provider] >= self._provider_limit(provider):
                continue
            queue.popleft()
            if not queue:
                del self._queues[user]
                del self._arrival[user]
            self._last_served[user] = next(self._turns)
            self._order_index = None
            self._queued_provider[provider] -= 1
            del self._job_owner[job_id], self._job_provider[job_id]
            self._running_user[user] += 1
            self._running_provider[provider] += 1
            return job_id, user, provider
        return None

    def release(self, user: str, provider: str) -> None:
        """A running job gave its user's and its provider's slot back."""
        self._running_user[user] -= 1
        self._running_provider[provider] -= 1

    # ---------------------------------------------------------------------- positions
    def _users(self) -> list[str]:
        return sorted(self._queues, key=lambda u: (self._last_served.get(u, -1), self._arrival[u]))

    def order(self) -> list[str]:
        """The order queued jobs will start in: one per user per round, users in turn."""
        queues = [list(self._queues[u]) for u in self._users()]
        order: list[str] = []
        depth = 0
        while True:
            row = [q[depth] for q in queues if depth < len(q)]
            if not row:
                return order
            order.extend(row)
            depth += 1

    def position(self, job_id: str) -> int | None:
        # Every status message asks: with hundreds queued, computing the order each time was
        # quadratic. Cached until the queues or the turns change.
        if self._order_index is None:
            self._order_index = {j: i for i, j in enumerate(self.order(), start=1)}
        return self._order_index.get(job_id)

    def queued_count(self) -> int:
        return sum(len(q) for q in self._queues.values())


__all__ = ["FairQueue"]


class PlaceInLine:
    """Place-in-line announcements for a :class:`FairQueue`, coalesced and paced.

    ``publish(job_id, place)`` sends one (it returns the task sending it). When many jobs
    start at once everyone behind them moves up: one announcement round a moment later beats
    one edit per person per start, and a round waits for its edits before the next.
    """

    def __init__(self, queue: FairQueue, publish: Callable[[str, int], asyncio.Task[None]]) -> None:
        self._queue = queue
        self._publish = publish
        self._shown: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def shown(self, job_id: str, place: int) -> None:
        """``job_id``'s message already shows ``place`` (its status message said so)."""
        self._shown[job_id] = place

    def forget(self, job_id: str) -> None:
        self._shown.pop(job_id, None)

    def schedule(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._announce())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _announce(self) -> None:
        while True:
            await asyncio.sleep(POSITION_DEBOUNCE_S)
            stale: list[tuple[float, int, str]] = []
            for i, job_id in enumerate(self._queue.order(), start=1):
                shown = self._shown.get(job_id)
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
                self._shown[job_id] = i
                sent.append(self._publish(job_id, i))
            await asyncio.wait(sent)  # a round at a time: the edits pace themselves
            if len(stale) <= POSITION_EDITS_PER_ROUND:
                return
