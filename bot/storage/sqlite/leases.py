"""Job leases in SQLite (:class:`~bot.storage.protocols.JobLeaseRepository`).

SQLite serialises writers (``BEGIN IMMEDIATE``), so a claim is one conditional ``UPDATE``:
the fairest queued job of the provider whose payer is under the per-user cap.
"""

from __future__ import annotations

import aiosqlite

from bot.storage.portable import LeaseStatements
from bot.storage.protocols import Tx
from bot.storage.sqlite.database import Database

_SAME_PAYER = "s.platform = j.platform AND s.tenant = j.tenant AND s.owner_id = j.owner_id"
# Round robin across processes: the payer served longest ago (never: first) goes next, then
# the oldest job; a payer at the per-user cap of running jobs waits.
CLAIM_SQL = (
    "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ?, "
    "lease_owner = ?, lease_until = ? "
    "WHERE state = 'queued' AND id = ("
    " SELECT j.id FROM jobs AS j"
    " WHERE j.state = 'queued' AND j.provider = ?"
    f" AND (SELECT COUNT(*) FROM jobs AS s WHERE s.state = 'running' AND {_SAME_PAYER}) < ?"
    f" ORDER BY COALESCE((SELECT MAX(s.started_at) FROM jobs AS s WHERE {_SAME_PAYER}), -1),"
    " j.created_at"
    " LIMIT 1) "
    "RETURNING id"
)


def _conn(tx: Tx) -> aiosqlite.Connection:
    if not isinstance(tx, aiosqlite.Connection):
        raise TypeError(f"not a SQLite transaction: {type(tx).__name__}")
    return tx


class SqliteLeases(LeaseStatements):
    _db: Database

    async def claim_next(
        self, *, provider: str, owner: str, now: float, until: float, max_running_per_user: int
    ) -> str | None:
        rows = await self._db.fetchall(
            CLAIM_SQL, (now, owner, until, provider, max_running_per_user)
        )
        return str(rows[0]["id"]) if rows else None

    async def fail_expired(self, tx: Tx, job_id: str, error: str, now: float) -> bool:
        cur = await _conn(tx).execute(
            "UPDATE jobs SET state = 'failed', error = ?, finished_at = ?, lease_owner = NULL, "
            "lease_until = NULL WHERE id = ? AND state = 'running' "
            "AND (lease_until IS NULL OR lease_until < ?)",
            (error, now, job_id, now),
        )
        return bool(cur.rowcount)

    async def holds(self, tx: Tx, job_id: str, owner: str) -> bool:
        rows = await _conn(tx).execute_fetchall(
            "SELECT 1 FROM jobs WHERE id = ? AND state = 'running' AND lease_owner = ?",
            (job_id, owner),
        )
        return bool(list(rows))
