"""Quotas as a ledger, not a counter.

``reserve`` runs inside the caller's ``BEGIN IMMEDIATE`` transaction (the same one that writes
the jobs), so a job exists if and only if its units are reserved. Each window's usage is moved
by one conditional write (:meth:`~bot.storage.protocols.QuotaRepository.charge`: grow only while
``used + n <= limit``): the check is the write, so concurrent requests can never both pass on
the same last unit. ``settle`` commits what was delivered and refunds the rest exactly once
(the ledger's ``UNIQUE(job_id, kind)``), against the windows recorded at reserve time (a refund
after midnight credits the day that was charged).

The rules (windows, role merging, exemptions, overrides) live here; the SQL in
:mod:`bot.storage`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bot.config import QuotaSettings
from bot.errors import QuotaExceeded, UserError
from bot.storage.admission import Charge, ReserveEntry
from bot.storage.protocols import Storage, Tx
from bot.storage.records import ScopeLimits, Window, user_scope, workspace_scope
from bot.types import Actor

Clock = Callable[[], float]


@dataclass(frozen=True)
class Limits:
    daily: int  # 0 = unlimited
    monthly: int


@dataclass(frozen=True)
class QuotaStatus:
    exempt: bool
    daily_used: int
    daily_limit: int
    monthly_used: int
    monthly_limit: int
    resets_at: datetime
    blocked: str | None = None

    @property
    def daily_left(self) -> int | None:
        return None if self.daily_limit == 0 else max(0, self.daily_limit - self.daily_used)

    @property
    def monthly_left(self) -> int | None:
        if self.monthly_limit == 0:
            return None
        return max(0, self.monthly_limit - self.monthly_used)

    def left(self) -> int | None:
        lefts = [x for x in (self.daily_left, self.monthly_left) if x is not None]
        return None if self.exempt or not lefts else min(lefts)

    def badge(self) -> str:
        if self.exempt:
            return "unlimited (admin)"
        if self.daily_left is not None:
            return f"{self.daily_left} of {self.daily_limit} images left today"
        if self.monthly_left is not None:
            return f"{self.monthly_left} of {self.monthly_limit} images left this month"
        return "unlimited"


@dataclass
class QuotaBook:
    """The windows, limits and blocks one admission decides on (read once, under the write
    lock), with what the requests it accepted so far charge on top."""

    blocks: dict[str, str]
    limits: dict[str, ScopeLimits]
    used: dict[Window, int]
    charged: dict[Window, tuple[int, int]] = field(default_factory=dict)  # (units, limit)

    def add(self, scope: str, win: str, units: int, limit: int) -> None:
        self.used[(scope, win)] = self.used.get((scope, win), 0) + units
        before, seen_limit = self.charged.get((scope, win), (0, limit))
        # The write's own check must pass whenever each request's did (roles can differ
        # between two requests of one person): the most generous limit, 0 being none.
        widest = 0 if 0 in (limit, seen_limit) else max(limit, seen_limit)
        self.charged[(scope, win)] = (before + units, widest)

    def charges(self) -> list[Charge]:
        return [Charge(s, w, units, limit) for (s, w), (units, limit) in self.charged.items()]


class Quotas:
    def __init__(
        self,
        storage: Storage,
        settings: QuotaSettings,
        *,
        is_admin: Callable[[Actor], bool],
        clock: Clock = time.time,
    ) -> None:
        self._storage = storage
        self._settings = settings
        self._is_admin = is_admin
        self._clock = clock
        self._tz = ZoneInfo(settings.timezone)

    # ------------------------------------------------------------------ windows and limits
    def now(self) -> float:
        return self._clock()

    def windows(self, now: float | None = None) -> tuple[str, str]:
        local = datetime.fromtimestamp(self._clock() if now is None else now, self._tz)
        return f"d:{local:%Y-%m-%d}", f"m:{local:%Y-%m}"

    def next_reset(self) -> datetime:
        local = datetime.fromtimestamp(self._clock(), self._tz)
        tomorrow = (local + timedelta(days=1)).date()
        return datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=self._tz)

    def exempt(self, actor: Actor) -> bool:
        return self._settings.exempt_admins and self._is_admin(actor)

    async def _limits(self, tx: Tx, actor: Actor) -> tuple[Limits, Limits]:
        """(the user's limits, the workspace's limits): config, roles, then admin overrides."""
        user, ws = self.scopes(actor)
        return self._merged_limits(actor, await self._storage.quota.limits(tx, (user, ws)))

    def scopes(self, actor: Actor) -> tuple[str, str]:
        """(the user's scope, the workspace's)."""
        return (
            user_scope(actor.platform, actor.tenant, actor.user_id),
            workspace_scope(actor.platform, actor.tenant),
        )

    def _merged_limits(
        self, actor: Actor, found: Mapping[str, ScopeLimits]
    ) -> tuple[Limits, Limits]:
        s = self._settings
        daily, monthly = s.user_daily, s.user_monthly
        for role in actor.roles:
            role_limits = s.roles.get(role)
            if role_limits:  # the most generous role wins; 0 means unlimited
                d, m = role_limits.get("daily", daily), role_limits.get("monthly", monthly)
                daily = 0 if 0 in (d, daily) else max(d, daily)
                monthly = 0 if 0 in (m, monthly) else max(m, monthly)
        user, ws = self.scopes(actor)

        def apply(scope: str, base: Limits) -> Limits:
            override = found.get(scope)
            if override is None:
                return base
            return Limits(
                base.daily if override.daily is None else override.daily,
                base.monthly if override.monthly is None else override.monthly,
            )

        return (
            apply(user, Limits(daily, monthly)),
            apply(ws, Limits(s.workspace_daily, s.workspace_monthly)),
        )

    async def blocked_reason(self, tx: Tx, actor: Actor) -> str | None:
        return await self._storage.quota.block_reason(
            tx,
            (
                user_scope(actor.platform, actor.tenant, actor.user_id),
                workspace_scope(actor.platform, actor.tenant),
            ),
        )

    # ------------------------------------------------------------------------ the ledger
    async def reserve(self, tx: Tx, actor: Actor, jobs: Sequence[tuple[str, int]]) -> None:
        """Reserve units for ``jobs`` ((job_id, units), already inserted) in the caller's
        transaction. Raises :class:`QuotaExceeded` (the caller's transaction then rolls back).
        Admission does the same for a whole batch at once (:class:`bot.admission.Admissions`)."""
        now = self._clock()
        admission = self._storage.admission
        facts = await admission.facts(
            tx, interaction_ids=(), scopes=self.scopes(actor), wins=self.windows(now)
        )
        book = QuotaBook(facts.blocks, facts.limits, dict(facts.used))
        entries = self.plan(book, actor, jobs, now)
        if not await admission.write(tx, (), book.charges(), entries):
            raise RuntimeError("a quota window changed under the write lock")

    def plan(
        self, book: QuotaBook, actor: Actor, jobs: Sequence[tuple[str, int]], now: float
    ) -> list[ReserveEntry]:
        """Decide one request's reservation from ``book`` (read under the write lock) and add
        its charges to it; the ledger entries to write. Raises :class:`UserError` (blocked) or
        :class:`QuotaExceeded`, and then leaves ``book`` as it was."""
        total = sum(units for _, units in jobs)
        payer, wscope = self.scopes(actor)
        reason = next((book.blocks[s] for s in sorted((payer, wscope)) if s in book.blocks), None)
        if reason is not None:
            raise UserError(
                "You are blocked from generating images here" + (f": {reason}" if reason else ".")
            )
        exempt = self.exempt(actor)
        windows: list[tuple[str, str, int]] = []
        if not exempt:
            day, month = self.windows(now)
            user, ws = self._merged_limits(actor, book.limits)
            for scope, win, limit, who in (
                (payer, day, user.daily, "your daily"),
                (payer, month, user.monthly, "your monthly"),
                (wscope, day, ws.daily, "this workspace's daily"),
                (wscope, month, ws.monthly, "this workspace's monthly"),
            ):
                used = book.used.get((scope, win), 0)
                if limit and used + total > limit:
                    when = (
                        f"It resets at {self.next_reset():%H:%M %Z}."
                        if win.startswith("d:")
                        else "It resets at the start of next month."
                    )
                    raise QuotaExceeded(
                        f"That needs {total} image{'s' if total != 1 else ''}, but "
                        f"{who} quota has {max(0, limit - used)} of {limit} left. {when}"
                    )
                windows.append((scope, win, limit))
        for scope, win, limit in windows:
            book.add(scope, win, total, limit)
        windows_json = json.dumps([[scope, win] for scope, win, _ in windows])
        return [
            ReserveEntry(job_id, payer, units, windows_json, exempt, now) for job_id, units in jobs
        ]

    async def settle(self, tx: Tx, job_id: str, delivered: int) -> None:
        """Commit ``delivered`` units and refund the rest of the job's reservation. Idempotent:
        a second call (a retry, the reconciler) changes nothing."""
        reservation = await self._storage.ledger.reservation(tx, job_id)
        if reservation is None:
            return
        delivered = max(0, min(delivered, reservation.units))
        refund = reservation.units - delivered
        if not await self._storage.ledger.settle(
            tx, reservation, committed=delivered, refunded=refund, at=self._clock()
        ):
            return  # already settled
        if refund:
            for scope, win in reservation.windows:
                await self._storage.quota.credit(tx, scope, win, refund)

    # ------------------------------------------------------------------------ read side
    async def status(self, actor: Actor) -> QuotaStatus:
        day, month = self.windows()
        scope = user_scope(actor.platform, actor.tenant, actor.user_id)
        async with self._storage.reading() as tx:
            limits, _ = await self._limits(tx, actor)
            blocked = await self.blocked_reason(tx, actor)
            used = await self._storage.quota.used_in(tx, scope, (day, month))
        return QuotaStatus(
            exempt=self.exempt(actor),
            daily_used=used.get(day, 0),
            daily_limit=limits.daily,
            monthly_used=used.get(month, 0),
            monthly_limit=limits.monthly,
            resets_at=self.next_reset(),
            blocked=blocked,
        )

    # ---------------------------------------------------------------------- admin side
    async def set_limits(self, scope: str, daily: int | None, monthly: int | None) -> None:
        async with self._storage.transaction() as tx:
            await self._storage.quota.set_limits(tx, scope, daily, monthly)

    async def grant(self, scope: str, units: int) -> None:
        """Give ``units`` extra in the current day and month windows."""
        day, month = self.windows()
        async with self._storage.transaction() as tx:
            for win in (day, month):
                await self._storage.quota.grant(tx, scope, win, units)

    async def reset(self, scope: str) -> None:
        """Forget usage in the current windows (the ledger keeps the history).

        Jobs still in flight stay counted: their settlement will refund what they do not
        deliver, and a usage reset to zero would let that refund push it below zero."""
        day, month = self.windows()
        async with self._storage.transaction() as tx:
            in_flight = await self._storage.ledger.in_flight(tx, scope)
            for win in (day, month):
                units = sum(r.units for r in in_flight if (scope, win) in r.windows)
                await self._storage.quota.set_used(tx, scope, win, units)

    async def block(self, scope: str, reason: str) -> None:
        async with self._storage.transaction() as tx:
            await self._storage.quota.block(tx, scope, reason, self._clock())

    async def unblock(self, scope: str) -> None:
        async with self._storage.transaction() as tx:
            await self._storage.quota.unblock(tx, scope)


async def ledger_balances(storage: Storage) -> bool:
    """The ledger invariant: reserved - refunded == committed + in flight (non-final jobs)."""
    t = await storage.ledger.totals()
    return t.reserved - t.refunded == t.committed + t.in_flight


__all__ = [
    "Limits",
    "QuotaBook",
    "QuotaStatus",
    "Quotas",
    "ledger_balances",
    "user_scope",
    "workspace_scope",
]
