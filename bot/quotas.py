"""Quotas as a ledger, not a counter.

``reserve`` runs inside the caller's ``BEGIN IMMEDIATE`` transaction (the same one that writes
the jobs), so a job exists if and only if its units are reserved. Each window's usage is moved
by a conditional ``UPDATE ... WHERE used + n <= limit``: the check is the write, so concurrent
requests can never both pass on the same last unit. ``settle`` commits what was delivered and
refunds the rest exactly once (``UNIQUE(job_id, kind)``), against the windows recorded at
reserve time (a refund after midnight credits the day that was charged).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import aiosqlite

from bot.config import QuotaSettings
from bot.errors import QuotaExceeded, UserError
from bot.store import Store
from bot.types import Actor

Clock = Callable[[], float]


def user_scope(platform: str, tenant: str, user_id: str) -> str:
    return f"user:{platform}:{tenant}:{user_id}"


def workspace_scope(platform: str, tenant: str) -> str:
    return f"ws:{platform}:{tenant}"


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


class Quotas:
    def __init__(
        self,
        store: Store,
        settings: QuotaSettings,
        *,
        is_admin: Callable[[Actor], bool],
        clock: Clock = time.time,
    ) -> None:
        self._store = store
        self._settings = settings
        self._is_admin = is_admin
        self._clock = clock
        self._tz = ZoneInfo(settings.timezone)

    # ------------------------------------------------------------------ windows and limits
    def windows(self, now: float | None = None) -> tuple[str, str]:
        local = datetime.fromtimestamp(self._clock() if now is None else now, self._tz)
        return f"d:{local:%Y-%m-%d}", f"m:{local:%Y-%m}"

    def next_reset(self) -> datetime:
        local = datetime.fromtimestamp(self._clock(), self._tz)
        tomorrow = (local + timedelta(days=1)).date()
        return datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=self._tz)

    def exempt(self, actor: Actor) -> bool:
        return self._settings.exempt_admins and self._is_admin(actor)

    async def _limits(self, db: aiosqlite.Connection, actor: Actor) -> Limits:
        s = self._settings
        daily, monthly = s.user_daily, s.user_monthly
        for role in actor.roles:
            role_limits = s.roles.get(role)
            if role_limits:  # the most generous role wins; 0 means unlimited
                d, m = role_limits.get("daily", daily), role_limits.get("monthly", monthly)
                daily = 0 if 0 in (d, daily) else max(d, daily)
                monthly = 0 if 0 in (m, monthly) else max(m, monthly)
        cur = await db.execute(
            "SELECT daily, monthly FROM quota_limits WHERE scope = ?",
            (user_scope(actor.platform, actor.tenant, actor.user_id),),
        )
        row = await cur.fetchone()
        if row is not None:
            daily = row["daily"] if row["daily"] is not None else daily
            monthly = row["monthly"] if row["monthly"] is not None else monthly
        return Limits(daily, monthly)

    async def _workspace_limits(self, db: aiosqlite.Connection, actor: Actor) -> Limits:
        s = self._settings
        cur = await db.execute(
            "SELECT daily, monthly FROM quota_limits WHERE scope = ?",
            (workspace_scope(actor.platform, actor.tenant),),
        )
        row = await cur.fetchone()
        daily, monthly = s.workspace_daily, s.workspace_monthly
        if row is not None:
            daily = row["daily"] if row["daily"] is not None else daily
            monthly = row["monthly"] if row["monthly"] is not None else monthly
        return Limits(daily, monthly)

    async def blocked_reason(self, db: aiosqlite.Connection, actor: Actor) -> str | None:
        cur = await db.execute(
            "SELECT reason FROM blocks WHERE scope IN (?, ?)",
            (user_scope(actor.platform, actor.tenant, actor.user_id),
             workspace_scope(actor.platform, actor.tenant)),
        )
        row = await cur.fetchone()
        return None if row is None else str(row["reason"])

    # ------------------------------------------------------------------------ the ledger
    async def reserve(
        self, db: aiosqlite.Connection, actor: Actor, jobs: Sequence[tuple[str, int]]
    ) -> None:
        """Reserve units for ``jobs`` ((job_id, units), already inserted) in the caller's
        transaction. Raises :class:`QuotaExceeded` (the caller's transaction then rolls back)."""
        total = sum(units for _, units in jobs)
        reason = await self.blocked_reason(db, actor)
        if reason is not None:
            raise UserError(
                "You are blocked from generating images here"
                + (f": {reason}" if reason else ".")
            )
        payer = user_scope(actor.platform, actor.tenant, actor.user_id)
        now = self._clock()
        exempt = self.exempt(actor)
        charged: list[tuple[str, str]] = []
        if not exempt:
            day, month = self.windows(now)
            user, ws = await self._limits(db, actor), await self._workspace_limits(db, actor)
            wscope = workspace_scope(actor.platform, actor.tenant)
            for scope, win, limit, who in (
                (payer, day, user.daily, "your daily"),
                (payer, month, user.monthly, "your monthly"),
                (wscope, day, ws.daily, "this workspace's daily"),
                (wscope, month, ws.monthly, "this workspace's monthly"),
            ):
                await db.execute(
                    "INSERT INTO quota_usage (scope, win, used) VALUES (?, ?, 0) "
                    "ON CONFLICT (scope, win) DO NOTHING",
                    (scope, win),
                )
                if limit == 0:
                    await db.execute(
                        "UPDATE quota_usage SET used = used + ? WHERE scope = ? AND win = ?",
                        (total, scope, win),
                    )
                else:
                    cur = await db.execute(
                        "UPDATE quota_usage SET used = used + ? "
                        "WHERE scope = ? AND win = ? AND used + ? <= ?",
                        (total, scope, win, total, limit),
                    )
                    if cur.rowcount == 0:
                        used_cur = await db.execute(
                            "SELECT used FROM quota_usage WHERE scope = ? AND win = ?",
                            (scope, win),
                        )
                        used_row = await used_cur.fetchone()
                        left = max(0, limit - (int(used_row["used"]) if used_row else 0))
                        when = (
                            f"It resets at {self.next_reset():%H:%M %Z}."
                            if win.startswith("d:") else "It resets at the start of next month."
                        )
                        raise QuotaExceeded(
                            f"That needs {total} image{'s' if total != 1 else ''}, but "
                            f"{who} quota has {left} of {limit} left. {when}"
                        )
                charged.append((scope, win))
        windows_json = json.dumps(charged)
        await db.executemany(
            "INSERT INTO ledger (job_id, kind, payer, units, windows, exempt, created_at) "
            "VALUES (?, 'reserve', ?, ?, ?, ?, ?)",
            [(job_id, payer, units, windows_json, int(exempt), now) for job_id, units in jobs],
        )

    async def settle(self, db: aiosqlite.Connection, job_id: str, delivered: int) -> None:
        """Commit ``delivered`` units and refund the rest of the job's reservation. Idempotent:
        a second call (a retry, the reconciler) changes nothing."""
        cur = await db.execute(
            "SELECT payer, units, windows, exempt FROM ledger "
            "WHERE job_id = ? AND kind = 'reserve'",
            (job_id,),
        )
        row = await cur.fetchone()
        if row is None:
            return
        reserved = int(row["units"])
        delivered = max(0, min(delivered, reserved))
        now = self._clock()
        cur = await db.execute(
            "INSERT INTO ledger (job_id, kind, payer, units, windows, exempt, created_at) "
            "VALUES (?, 'commit', ?, ?, ?, ?, ?) ON CONFLICT (job_id, kind) DO NOTHING",
            (job_id, row["payer"], delivered, row["windows"], row["exempt"], now),
        )
        if cur.rowcount == 0:
            return  # already settled
        refund = reserved - delivered
        await db.execute(
            "INSERT INTO ledger (job_id, kind, payer, units, windows, exempt, created_at) "
            "VALUES (?, 'refund', ?, ?, ?, ?, ?)",
            (job_id, row["payer"], refund, row["windows"], row["exempt"], now),
        )
        if refund:
            for scope, win in json.loads(row["windows"]):
                await db.execute(
                    "UPDATE quota_usage SET used = used - ? WHERE scope = ? AND win = ?",
                    (refund, scope, win),
                )

    # ------------------------------------------------------------------------ read side
    async def status(self, actor: Actor) -> QuotaStatus:
        day, month = self.windows()
        scope = user_scope(actor.platform, actor.tenant, actor.user_id)
        async with self._store.transaction() as db:
            limits = await self._limits(db, actor)
            blocked = await self.blocked_reason(db, actor)
            cur = await db.execute(
                "SELECT win, used FROM quota_usage WHERE scope = ? AND win IN (?, ?)",
                (scope, day, month),
            )
            used = {r["win"]: int(r["used"]) for r in await cur.fetchall()}
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
        async with self._store.transaction() as db:
            await db.execute(
                "INSERT INTO quota_limits (scope, daily, monthly) VALUES (?, ?, ?) "
                "ON CONFLICT (scope) DO UPDATE SET daily = excluded.daily, "
                "monthly = excluded.monthly",
                (scope, daily, monthly),
            )

    async def grant(self, scope: str, units: int) -> None:
        """Give ``units`` extra in the current day and month windows."""
        day, month = self.windows()
        async with self._store.transaction() as db:
            for win in (day, month):
                await db.execute(
                    "INSERT INTO quota_usage (scope, win, used) VALUES (?, ?, 0) "
                    "ON CONFLICT (scope, win) DO NOTHING",
                    (scope, win),
                )
                await db.execute(
                    "UPDATE quota_usage SET used = used - ? WHERE scope = ? AND win = ?",
                    (units, scope, win),
                )

    async def reset(self, scope: str) -> None:
        """Forget usage in the current windows (the ledger keeps the history)."""
        day, month = self.windows()
        async with self._store.transaction() as db:
            await db.execute(
                "UPDATE quota_usage SET used = 0 WHERE scope = ? AND win IN (?, ?)",
                (scope, day, month),
            )

    async def block(self, scope: str, reason: str) -> None:
        async with self._store.transaction() as db:
            await db.execute(
                "INSERT INTO blocks (scope, reason, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (scope) DO UPDATE SET reason = excluded.reason",
                (scope, reason, self._clock()),
            )

    async def unblock(self, scope: str) -> None:
        async with self._store.transaction() as db:
            await db.execute("DELETE FROM blocks WHERE scope = ?", (scope,))


async def ledger_balances(store: Store) -> bool:
    """The ledger invariant: reserved - refunded == committed + in flight (non-final jobs)."""
    row = await store.fetchone(
        """
        SELECT
          COALESCE(SUM(CASE WHEN l.kind = 'reserve' THEN l.units END), 0) AS reserved,
          COALESCE(SUM(CASE WHEN l.kind = 'refund' THEN l.units END), 0) AS refunded,
          COALESCE(SUM(CASE WHEN l.kind = 'commit' THEN l.units END), 0) AS committed,
          COALESCE(SUM(CASE WHEN l.kind = 'reserve' AND j.state IN ('queued', 'running')
                            THEN l.units END), 0) AS in_flight
        FROM ledger l JOIN jobs j ON j.id = l.job_id
        """
    )
    assert row is not None
    return bool(row["reserved"] - row["refunded"] == row["committed"] + row["in_flight"])
