"""Job leases in PostgreSQL (:class:`~bot.storage.protocols.JobLeaseRepository`).

The statements are SQLite's (:mod:`bot.storage.sqlite.leases`). A claim runs as a unit of work,
so it holds the store's write lock (one advisory lock shared by every process): two processes
never claim the same job, and the per-user cap of running jobs, counted inside the claim, is
exact across processes.
"""

from __future__ import annotations

from bot.storage.portable import LeaseStatements
from bot.storage.postgres.database import Database, PgTx
from bot.storage.protocols import Tx
from bot.storage.sqlite.leases import CLAIM_SQL


def _conn(tx: Tx) -> PgTx:
    if not isinstance(tx, PgTx):
        raise TypeError(f"not a PostgreSQL transaction: {type(tx).__name__}")
    return tx


class PgLeases(LeaseStatements):
    _db: Database

    async def claim_next(
        self, *, provider: str, owner: str, now: float, until: float, max_running_per_user: int
    ) -> str | None:
        async with self._db.transaction() as tx:
            rows = await tx.fetchall(CLAIM_SQL, (now, owner, until, provider, max_running_per_user))
        return str(rows[0]["id"]) if rows else None

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
