"""The fair queue: queued jobs per user, taken round-robin under per-user and per-provider caps.

Pure bookkeeping, no I/O and no clock: :class:`bot.jobs.JobRunner` owns one, adds what is
queued, takes what may start, and gives slots back when a job ends. Fairness: the user served
longest ago goes first, and a newcomer before everyone already served.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Callable


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
