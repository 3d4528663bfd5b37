"""Job leases in PostgreSQL (:class:`~bot.storage.protocols.JobLeaseRepository`).

The statements are SQLite's (:mod:`bot.storage.sqlite.leases`). A claim runs as a unit of work,
so it holds the store's write lock (one advisory lock shared by every process): two processes
never claim the same job, and the per-user cap of running jobs, counted inside the claim, is
exact across processes.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.storage.postgres.database import Database, PgTx
from bot.storage.protocols import Tx
from bot.storage.records import ActiveJob
from bot.storage.sqlite.leases import CLAIM_SQL


def _conn(tx: Tx) -> PgTx:
    if not isinstance(tx, PgTx):
        raise TypeError(f"not a PostgreSQL transaction: {type(tx).__name__}")
    return tx


class PgLeases:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def queued_providers(self) -> set[str]:
        rows = await self._db.fetchall("SELECT DISTINCT provider FROM jobs WHERE state = 'queued'")
        return {str(r["provider"]) for r in rows}

    async def claim_next(
        self, *, provider: str, owner: str, now: float, until: float, max_running_per_user: int
    ) -> str | None:
        async with self._db.transaction() as tx:
            rows = await tx.fetchall(CLAIM_SQL, (now, owner, until, provider, max_running_per_user))
        return str(rows[0]["id"]) if rows else None

    async def renew(self, owner: str, job_ids: Sequence[str], until: float) -> set[str]:
        if not job_ids:
            return set()
        marks = ", ".join("?" * len(job_ids))
        rows = await self._db.fetchall(
            f"UPDATE jobs SET lease_until = ? WHERE state = 'running' AND lease_owner = ? "
            f"AND id IN ({marks}) RETURNING id",
            (until, owner, *job_ids),
        )
        return {str(r["id"]) for r in rows}

    async def expired(self, now: float) -> list[ActiveJob]:
        rows = await self._db.fetchall(
            "SELECT id, platform, tenant, owner_id, provider, attempts FROM jobs "
            "WHERE state = 'running' AND (lease_until IS NULL OR lease_until < ?) "
            "ORDER BY created_at",
            (now,),
        )
        return [
            ActiveJob(
                str(r["id"]),
                str(r["platform"]),
                str(r["tenant"]),
                str(r["owner_id"]),
                str(r["provider"]),
                int(r["attempts"]),
            )
            for r in rows
        ]

    async def requeue_expired(self, job_id: str, now: float) -> bool:
        return bool(
            await self._db.execute(
                "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_until = NULL "
                "WHERE id = ? AND state = 'running' AND (lease_until IS NULL OR lease_until < ?)",
                (job_id, now),
            )
        )

    async def fail_expired(self, tx: Tx, job_id: str, error: str, now: float) -> bool:
        return bool(
            await _conn(tx).execute(
                "UPDATE jobs SET state = 'failed', error = ?, finished_at = ?, "
                "lease_owner = NULL, lease_until = NULL WHERE id = ? AND state = 'running' "
                "AND (lease_until IS NULL OR lease_until < ?)",
                (error, now, job_id, now),
            )
        )

    async def holds(self, tx: Tx, job_id: str, owner: str) -> bool:
        rows = await _conn(tx).fetchall(
            "SELECT 1 FROM jobs WHERE id = ? AND state = 'running' AND lease_owner = ? FOR UPDATE",
            (job_id, owner),
        )
        return bool(rows)

    async def release(self, owner: str, job_id: str) -> bool:
        return bool(
            await self._db.execute(
                "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_until = NULL, "
                "attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END "
                "WHERE id = ? AND state = 'running' AND lease_owner = ?",
                (job_id, owner),
            )
        )
