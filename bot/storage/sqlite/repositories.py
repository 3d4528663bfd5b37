"""The repositories of :class:`~bot.storage.sqlite.Store`: every SQL statement of the core.

Kept portable where it costs nothing (CASE instead of summed booleans or two-argument MAX,
``ON CONFLICT ... DO UPDATE`` instead of ``INSERT OR REPLACE``, target columns qualified in
upserts), so a PostgreSQL twin differs mainly in its placeholders.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import aiosqlite

from bot.job_request import JobRequest
from bot.storage.admission import INSERT_JOB, job_row
from bot.storage.protocols import Tx
from bot.storage.records import (
    ActiveJob,
    Job,
    LedgerTotals,
    NewJob,
    Reservation,
    ScopeLimits,
    StoredJobImage,
    Window,
)
from bot.storage.sqlite.database import Database


def _conn(tx: Tx) -> aiosqlite.Connection:
    """The connection a SQLite transaction handle is (see :meth:`Database.transaction`)."""
    if not isinstance(tx, aiosqlite.Connection):
        raise TypeError(f"not a SQLite transaction: {type(tx).__name__}")
    return tx


async def _rows(tx: Tx, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
    return list(await _conn(tx).execute_fetchall(sql, tuple(params)))


async def _write(tx: Tx, sql: str, params: Iterable[Any] = ()) -> int:
    cur = await _conn(tx).execute(sql, tuple(params))
    return cur.rowcount


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _job(row: aiosqlite.Row) -> Job:
    return Job(
        id=row["id"],
        platform=row["platform"],
        tenant=row["tenant"],
        channel_id=row["channel_id"],
        thread_id=row["thread_id"],
        owner_id=row["owner_id"],
        owner_name=row["owner_name"],
        kind=row["kind"],
        parent_job_id=row["parent_job_id"],
        parent_index=row["parent_index"],
        state=row["state"],
        request=JobRequest.from_json(row["request_json"]),
        provider=row["provider"],
        model=row["model"],
        seed=int(row["seed"]),
        n=int(row["n"]),
        attempts=int(row["attempts"]),
        error=row["error"],
        notice=row["notice"],
        status_ref=row["status_ref"],
        result_ref=row["result_ref"],
        grid_sha=row["grid_sha"],
        grid_ext=row["grid_ext"],
        deleted=bool(row["deleted"]),
        created_at=float(row["created_at"]),
        finished_at=None if row["finished_at"] is None else float(row["finished_at"]),
        server=row["server"],
    )


class SqliteJobs:
    def __init__(self, db: Database) -> None:
        self._db = db

    # ------------------------------------------------------------- inside a transaction
    async def duplicate_in_flight(
        self,
        tx: Tx,
        *,
        kind: str,
        parent_job_id: str | None,
        parent_index: int | None,
        platform: str,
        tenant: str,
        owner_id: str,
        since: float,
    ) -> bool:
        # `IS ?` would match NULL to NULL in one statement, but only SQLite has it.
        index, index_params = (
            ("parent_index IS NULL", ())
            if parent_index is None
            else ("parent_index = ?", (parent_index,))
        )
        return bool(
            await _rows(
                tx,
                f"SELECT 1 FROM jobs WHERE parent_job_id = ? AND kind = ? AND {index} "
                "AND platform = ? AND tenant = ? AND owner_id = ? AND created_at > ? "
                "AND state IN ('queued', 'running')",
                (parent_job_id, kind, *index_params, platform, tenant, owner_id, since),
            )
        )

    async def insert(self, tx: Tx, job: NewJob) -> None:
        await _write(tx, INSERT_JOB, job_row(job))

    async def cancel_queued(self, tx: Tx, job_id: str, error: str, at: float) -> bool:
        return bool(
            await _write(
                tx,
                "UPDATE jobs SET state = 'failed', error = ?, finished_at = ? "
                "WHERE id = ? AND state = 'queued'",
                (error, at, job_id),
            )
        )

    async def finish(
        self,
        tx: Tx,
        job_id: str,
        *,
        state: Literal["done", "filtered"],
        provider: str,
        model: str | None,
        notice: str,
        grid_sha: str | None,
        grid_ext: str | None,
        error: str | None,
        at: float,
        server: str | None = None,
    ) -> bool:
        return bool(
            await _write(
                tx,
                "UPDATE jobs SET state = ?, provider = ?, model = COALESCE(?, model), "
                "notice = ?, grid_sha = ?, grid_ext = ?, finished_at = ?, error = ?, "
                "server = ? WHERE id = ? AND state = 'running'",
                (state, provider, model, notice, grid_sha, grid_ext, at, error, server, job_id),
            )
        )

    async def fail(self, tx: Tx, job_id: str, error: str, at: float) -> bool:
        return bool(
            await _write(
                tx,
                "UPDATE jobs SET state = 'failed', error = ?, finished_at = ? "
                "WHERE id = ? AND state IN ('queued', 'running')",
                (error, at, job_id),
            )
        )

    # ------------------------------------------------------------------- on their own
    async def get(self, job_id: str) -> Job | None:
        row = await self._db.fetchone("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return None if row is None else _job(row)

    async def active(self, state: Literal["queued", "running"]) -> list[ActiveJob]:
        rows = await self._db.fetchall(
            "SELECT id, platform, tenant, owner_id, provider, attempts FROM jobs "
            "WHERE state = ? ORDER BY created_at",
            (state,),
        )
        return [
            ActiveJob(
                r["id"],
                r["platform"],
                r["tenant"],
                r["owner_id"],
                r["provider"],
                int(r["attempts"]),
            )
            for r in rows
        ]

    async def mark_running(self, job_id: str, at: float) -> bool:
        return bool(
            await self._db.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ? "
                "WHERE id = ? AND state = 'queued'",
                (at, job_id),
            )
        )

    async def requeue(self, job_id: str, *, undo_attempt: bool) -> bool:
        attempts = (
            ", attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END"
            if undo_attempt
            else ""
        )
        return bool(
            await self._db.execute(
                f"UPDATE jobs SET state = 'queued'{attempts} WHERE id = ? AND state = 'running'",
                (job_id,),
            )
        )

    async def set_status_ref(self, job_id: str, ref: str) -> None:
        await self._db.execute("UPDATE jobs SET status_ref = ? WHERE id = ?", (ref, job_id))

    async def set_status_refs(self, refs: Sequence[tuple[str, str]]) -> None:
        async with self._db.transaction() as tx:
            await _conn(tx).executemany(
                "UPDATE jobs SET status_ref = ? WHERE id = ?", [(ref, j) for j, ref in refs]
            )

    async def history(self, platform: str, tenant: str, channel_id: str, limit: int) -> list[Job]:
        rows = await self._db.fetchall(
            "SELECT * FROM (SELECT * FROM jobs WHERE platform = ? AND tenant = ? AND "
            "channel_id = ? AND deleted = 0 ORDER BY created_at DESC LIMIT ?) AS recent "
            "ORDER BY created_at",
            (platform, tenant, channel_id, limit),
        )
        return [_job(r) for r in rows]

    async def in_thread(
        self, platform: str, tenant: str, channel_id: str, thread_id: str
    ) -> list[Job]:
        rows = await self._db.fetchall(
            "SELECT * FROM jobs WHERE platform = ? AND tenant = ? AND channel_id = ? "
            "AND deleted = 0 AND (thread_id = ? OR status_ref = ?) ORDER BY created_at",
            (platform, tenant, channel_id, thread_id, thread_id),
        )
        return [_job(r) for r in rows]

    async def mark_deleted(self, job_id: str) -> None:
        await self._db.execute("UPDATE jobs SET deleted = 1 WHERE id = ?", (job_id,))

    async def claim_result(self, job_id: str) -> bool:
        return bool(
            await self._db.execute(
                "UPDATE jobs SET result_ref = '' WHERE id = ? AND result_ref IS NULL", (job_id,)
            )
        )

    async def release_result_claim(self, job_id: str) -> None:
        await self._db.execute(
            "UPDATE jobs SET result_ref = NULL WHERE id = ? AND result_ref = ''", (job_id,)
        )

    async def set_result_ref(self, job_id: str, ref: str) -> None:
        await self._db.execute("UPDATE jobs SET result_ref = ? WHERE id = ?", (ref, job_id))

    async def pending_results(self, platform: str) -> list[str]:
        rows = await self._db.fetchall(
            "SELECT id FROM jobs WHERE platform = ? AND state IN ('done', 'failed', 'filtered') "
            "AND result_ref IS NULL AND deleted = 0 ORDER BY created_at",
            (platform,),
        )
        return [str(r["id"]) for r in rows]


class SqliteImages:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def of_job(self, job_id: str) -> list[StoredJobImage]:
        rows = await self._db.fetchall(
            "SELECT idx, sha256, ext, seed, width, height FROM images WHERE job_id = ? "
            "ORDER BY idx",
            (job_id,),
        )
        return [
            StoredJobImage(
                int(r["idx"]), r["sha256"], r["ext"], r["seed"], int(r["width"]), int(r["height"])
            )
            for r in rows
        ]

    async def put(self, tx: Tx, job_id: str, images: Sequence[StoredJobImage]) -> None:
        await _conn(tx).executemany(
            "INSERT INTO images (job_id, idx, sha256, ext, seed, width, height) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job_id, idx) DO UPDATE SET "
            "sha256 = excluded.sha256, ext = excluded.ext, seed = excluded.seed, "
            "width = excluded.width, height = excluded.height",
            [(job_id, i.index, i.sha256, i.ext, i.seed, i.width, i.height) for i in images],
        )


class SqliteQuota:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def used_in(self, tx: Tx, scope: str, wins: Sequence[str]) -> dict[str, int]:
        rows = await _rows(
            tx,
            f"SELECT win, used FROM quota_usage WHERE scope = ? AND win IN ({_marks(len(wins))})",
            (scope, *wins),
        )
        return {str(r["win"]): int(r["used"]) for r in rows}

    async def credit(self, tx: Tx, scope: str, win: str, units: int) -> None:
        await _write(
            tx,
            "UPDATE quota_usage SET used = used - ? WHERE scope = ? AND win = ?",
            (units, scope, win),
        )

    async def grant(self, tx: Tx, scope: str, win: str, units: int) -> None:
        await _write(
            tx,
            "INSERT INTO quota_usage (scope, win, used) VALUES (?, ?, ?) "
            "ON CONFLICT (scope, win) DO UPDATE SET used = quota_usage.used + excluded.used",
            (scope, win, -units),
        )

    async def set_used(self, tx: Tx, scope: str, win: str, used: int) -> None:
        await _write(
            tx, "UPDATE quota_usage SET used = ? WHERE scope = ? AND win = ?", (used, scope, win)
        )

    async def limits(self, tx: Tx, scopes: Sequence[str]) -> dict[str, ScopeLimits]:
        rows = await _rows(
            tx,
            f"SELECT scope, daily, monthly FROM quota_limits WHERE scope IN "
            f"({_marks(len(scopes))})",
            scopes,
        )
        return {
            str(r["scope"]): ScopeLimits(
                None if r["daily"] is None else int(r["daily"]),
                None if r["monthly"] is None else int(r["monthly"]),
            )
            for r in rows
        }

    async def set_limits(self, tx: Tx, scope: str, daily: int | None, monthly: int | None) -> None:
        await _write(
            tx,
            "INSERT INTO quota_limits (scope, daily, monthly) VALUES (?, ?, ?) "
            "ON CONFLICT (scope) DO UPDATE SET daily = excluded.daily, "
            "monthly = excluded.monthly",
            (scope, daily, monthly),
        )

    async def block_reason(self, tx: Tx, scopes: Sequence[str]) -> str | None:
        rows = await _rows(
            tx,
            f"SELECT reason FROM blocks WHERE scope IN ({_marks(len(scopes))}) ORDER BY scope",
            scopes,
        )
        return None if not rows else str(rows[0]["reason"])

    async def block(self, tx: Tx, scope: str, reason: str, at: float) -> None:
        await _write(
            tx,
            "INSERT INTO blocks (scope, reason, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT (scope) DO UPDATE SET reason = excluded.reason",
            (scope, reason, at),
        )

    async def unblock(self, tx: Tx, scope: str) -> None:
        await _write(tx, "DELETE FROM blocks WHERE scope = ?", (scope,))


def _reservation(row: aiosqlite.Row, job_id: str) -> Reservation:
    return Reservation(
        job_id=job_id,
        payer=str(row["payer"]),
        units=int(row["units"]),
        windows=tuple((str(s), str(w)) for s, w in json.loads(row["windows"])),
        exempt=bool(row["exempt"]),
    )


def _windows_json(windows: Sequence[Window]) -> str:
    return json.dumps([list(w) for w in windows])


class SqliteLedger:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def reserve(
        self,
        tx: Tx,
        jobs: Sequence[tuple[str, int]],
        *,
        payer: str,
        windows: Sequence[Window],
        exempt: bool,
        at: float,
    ) -> None:
        windows_json = _windows_json(windows)
        await _conn(tx).executemany(
            "INSERT INTO ledger (job_id, kind, payer, units, windows, exempt, created_at) "
            "VALUES (?, 'reserve', ?, ?, ?, ?, ?)",
            [(job_id, payer, units, windows_json, int(exempt), at) for job_id, units in jobs],
        )

    async def reservation(self, tx: Tx, job_id: str) -> Reservation | None:
        rows = await _rows(
            tx,
            "SELECT payer, units, windows, exempt FROM ledger "
            "WHERE job_id = ? AND kind = 'reserve'",
            (job_id,),
        )
        return _reservation(rows[0], job_id) if rows else None

    async def settle(
        self, tx: Tx, reservation: Reservation, *, committed: int, refunded: int, at: float
    ) -> bool:
        r = reservation
        entry = (
            "INSERT INTO ledger (job_id, kind, payer, units, windows, exempt, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        windows_json = _windows_json(r.windows)
        # UNIQUE (job_id, kind) makes the commit the once-only gate: a second settlement
        # (a retry, the reconciler) writes nothing.
        if not await _write(
            tx,
            entry + " ON CONFLICT (job_id, kind) DO NOTHING",
            (r.job_id, "commit", r.payer, committed, windows_json, int(r.exempt), at),
        ):
            return False
        await _write(
            tx, entry, (r.job_id, "refund", r.payer, refunded, windows_json, int(r.exempt), at)
        )
        return True

    async def in_flight(self, tx: Tx, payer: str) -> list[Reservation]:
        rows = await _rows(
            tx,
            "SELECT l.job_id, l.payer, l.units, l.windows, l.exempt FROM ledger l "
            "JOIN jobs j ON j.id = l.job_id "
            "WHERE l.kind = 'reserve' AND l.payer = ? AND j.state IN ('queued', 'running')",
            (payer,),
        )
        return [_reservation(r, str(r["job_id"])) for r in rows]

    async def totals(self) -> LedgerTotals:
        row = await self._db.fetchone(
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
        assert row is not None  # an aggregate always yields one row
        return LedgerTotals(
            int(row["reserved"]), int(row["refunded"]), int(row["committed"]), int(row["in_flight"])
        )


class SqliteChannels:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def collaborative(self, platform: str, tenant: str, channel_id: str) -> bool | None:
        row = await self._db.fetchone(
            "SELECT collaborative FROM channels WHERE platform = ? AND tenant = ? "
            "AND channel_id = ?",
            (platform, tenant, channel_id),
        )
        return None if row is None else bool(row["collaborative"])

    async def set_collaborative(
        self, platform: str, tenant: str, channel_id: str, on: bool
    ) -> None:
        await self._db.execute(
            "INSERT INTO channels (platform, tenant, channel_id, collaborative) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (platform, tenant, channel_id) "
            "DO UPDATE SET collaborative = excluded.collaborative",
            (platform, tenant, channel_id, int(on)),
        )


class SqliteAdminLog:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(self, actor_key: str, action: str, detail: str, at: float) -> None:
        await self._db.execute(
            "INSERT INTO admin_log (actor, action, detail, created_at) VALUES (?, ?, ?, ?)",
            (actor_key, action, detail, at),
        )


class SqliteAlerts:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def claim(self, key: str, now: float, every_s: float) -> bool:
        # Insert, or move an old enough record forward; a recent one makes the update's
        # condition false and nothing changes.
        return bool(
            await self._db.execute(
                "INSERT INTO alerts (key, last_at) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET last_at = excluded.last_at "
                "WHERE excluded.last_at - alerts.last_at >= ?",
                (key, now, every_s),
            )
        )
