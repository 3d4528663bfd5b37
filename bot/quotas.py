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

    async def _limits(self, db: aiosqlite.Connection, actor: Actor) -> tuple[Limits, Limits]:
        """(the user's limits, the workspace's limits): config, roles, then admin overrides."""
        s = self._settings
        daily, monthly = s.user_daily, s.user_monthly
        for role in actor.roles:
            role_limits = s.roles.get(role)
            if role_limits:  # the most generous role wins; 0 means unlimited
                d, m = role_limits.get("daily", daily), role_limits.get("monthly", monthly)
                daily = 0 if 0 in (d, daily) else max(d, daily)
                monthly = 0 if 0 in (m, monthly) else max(m, monthly)
        user = user_scope(actor.platform, actor.tenant, actor.user_id)
        ws = workspace_scope(actor.platform, actor.tenant)
        found = {
            r["scope"]: r for r in await db.execute_fetchall(
                "SELECT scope, daily, monthly FROM quota_limits WHERE scope IN (?, ?)", (user, ws))
        }

        def apply(scope: str, base: Limits) -> Limits:
            row = found.get(scope)
            if row is None:
                return base
            return Limits(base.daily if row["daily"] is None else int(row["daily"]),
                          base.monthly if row["monthly"] is None else int(row["monthly"]))

        return (apply(user, Limits(daily, monthly)),
                apply(ws, Limits(s.workspace_daily, s.workspace_monthly)))

    async def blocked_reason(self, db: aiosqlite.Connection, actor: Actor) -> str | None:
        rows = list(await db.execute_fetchall(
            "SELECT reason FROM blocks WHERE scope IN (?, ?)",
            (user_scope(actor.platform, actor.tenant, actor.user_id),
             workspace_scope(actor.platform, actor.tenant)),
        ))
        return None if not rows else str(rows[0]["reason"])

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
            user, ws = await self._limits(db, actor)
            wscope = workspace_scope(actor.platform, actor.tenant)
            for scope, win, limit, who in (
                (payer, day, user.daily, "your daily"),
                (payer, month, user.monthly, "your monthly"),
                (wscope, day, ws.daily, "this workspace's daily"),
                (wscope, month, ws.monthly, "this workspace's monthly"),
            ):
                # The check is the write: an upsert whose update only happens while the
                # window still has room (a new window starts at `total`, checked here).
                room = limit == 0 or total <= limit
                cur = await db.execute(
                    "INSERT INTO quota_usage (scope, win, used) SELECT ?, ?, ? WHERE ? "
                    "ON CONFLICT (scope, win) DO UPDATE SET used = used + excluded.used "
                    "WHERE ? = 0 OR used + excluded.used <= ?",
                    (scope, win, total, int(room), limit, limit),
                )
                if cur.rowcount == 0:
                    used_rows = list(await db.execute_fetchall(
                        "SELECT used FROM quota_usage WHERE scope = ? AND win = ?",
                        (scope, win),
                    ))
                    left = max(0, limit - (int(used_rows[0]["used"]) if used_rows else 0))
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
        rows = list(await db.execute_fetchall(
            "SELECT payer, units, windows, exempt FROM ledger "
            "WHERE job_id = ? AND kind = 'reserve'",
            (job_id,),
        ))
        if not rows:
            return
        row = rows[0]
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
        async with self._store.reading() as db:
            limits, _ = await self._limits(db, actor)
            blocked = await self.blocked_reason(db, actor)
            used = {r["win"]: int(r["used"]) for r in await db.execute_fetchall(
                "SELECT win, used FROM quota_usage WHERE scope = ? AND win IN (?, ?)",
                (scope, day, month),
            )}
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
        """Forget usage in the current windows (the ledger keeps the history).

        Jobs still in flight stay counted: their settlement will refund what they do not
        deliver, and a usage reset to zero would let that refund push it below zero."""
        day, month = self.windows()
        async with self._store.transaction() as db:
            rows = await db.execute_fetchall(
                "SELECT l.units, l.windows FROM ledger l JOIN jobs j ON j.id = l.job_id "
                "WHERE l.kind = 'reserve' AND l.payer = ? AND j.state IN ('queued', 'running')",
                (scope,),
            )
            for win in (day, month):
                in_flight = sum(int(r["units"]) for r in rows
                                if [scope, win] in json.loads(r["windows"]))
                await db.execute(
                    "UPDATE quota_usage SET used = ? WHERE scope = ? AND win = ?",
                    (in_flight, scope, win),
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
