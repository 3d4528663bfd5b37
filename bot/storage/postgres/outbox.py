"""PostgreSQL repositories of the outbox and of the other messages posted for a job."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from bot.storage.outbox import JobPost, Kind, OutboxRow
from bot.storage.postgres.database import Database, Record
from bot.types import Target

_FINAL = "('done', 'failed', 'filtered')"


def _row(r: Record) -> OutboxRow:
    return OutboxRow(
        id=int(r["id"]),
        job_id=r["job_id"],
        kind=r["kind"],
        target=Target(r["platform"], r["tenant"], r["channel_id"], r["thread_id"], r["user_id"]),
        payload=r["payload"],
        state=r["state"],
        attempts=int(r["attempts"]),
        next_at=float(r["next_at"]),
        steps=OutboxRow.parse_steps(r["steps"]),
        last_error=r["last_error"],
        created_at=float(r["created_at"]),
    )


class PgOutbox:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def enqueue(
        self,
        *,
        job_id: str | None,
        kind: Kind,
        target: Target,
        payload: str = "",
        at: float,
        lease_s: float = 0.0,
    ) -> OutboxRow | None:
        claimed = lease_s > 0
        rows = await self._db.fetchall(
            "INSERT INTO outbox (job_id, kind, platform, tenant, channel_id, thread_id, user_id, "
            "payload, next_at, created_at, lease_until, attempts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING *",
            (
                job_id,
                kind,
                target.platform,
                target.tenant,
                target.channel_id,
                target.thread_id,
                target.user_id,
                payload,
                at,
                at,
                at + lease_s if claimed else 0,
                int(claimed),
            ),
        )
        return _row(rows[0]) if rows else None

    async def claim_due(
        self, *, now: float, lease_s: float, platforms: Sequence[str], limit: int
    ) -> list[OutboxRow]:
        if not platforms:
            return []
        marks = ", ".join("?" * len(platforms))
        # One statement: the condition is the claim, so two deliverers never both win a row.
        # Under READ COMMITTED the subquery's rows are not checked again after a wait, so
        # they are locked as they are chosen (rows another claim holds are skipped) and the
        # outer condition is repeated.
        rows = await self._db.fetchall(
            "UPDATE outbox SET lease_until = ?, attempts = attempts + 1 WHERE id IN ("
            f"SELECT id FROM outbox WHERE state = 'pending' AND next_at <= ? AND lease_until <= ? "
            f"AND platform IN ({marks}) ORDER BY next_at, id LIMIT ? FOR UPDATE SKIP LOCKED) "
            "AND state = 'pending' AND lease_until <= ? RETURNING *",
            (now + lease_s, now, now, *platforms, limit, now),
        )
        return sorted((_row(r) for r in rows), key=lambda r: (r.next_at, r.id))

    async def extend_lease(self, row_id: int, until: float) -> None:
        await self._db.execute(
            "UPDATE outbox SET lease_until = ? WHERE id = ? AND state = 'pending'", (until, row_id)
        )

    async def record_steps(self, row_id: int, steps: Mapping[str, str]) -> None:
        await self._db.execute(
            "UPDATE outbox SET steps = ? WHERE id = ?",
            (json.dumps(dict(steps), sort_keys=True), row_id),
        )

    async def complete(self, row_id: int, at: float) -> None:
        await self._db.execute(
            "UPDATE outbox SET state = 'done', done_at = ?, lease_until = 0 WHERE id = ?",
            (at, row_id),
        )

    async def reschedule(self, row_id: int, next_at: float, error: str) -> None:
        await self._db.execute(
            "UPDATE outbox SET next_at = ?, last_error = ?, lease_until = 0 WHERE id = ? "
            "AND state = 'pending'",
            (next_at, error[:500], row_id),
        )

    async def give_up(self, row_id: int, error: str, at: float) -> None:
        await self._db.execute(
            "UPDATE outbox SET state = 'failed', last_error = ?, done_at = ?, lease_until = 0 "
            "WHERE id = ?",
            (error[:500], at, row_id),
        )

    async def release_leases(self) -> int:
        return await self._db.execute(
            "UPDATE outbox SET lease_until = 0 WHERE state = 'pending' AND lease_until > 0"
        )

    async def of_job(self, job_id: str, kind: Kind) -> OutboxRow | None:
        r = await self._db.fetchone(
            "SELECT * FROM outbox WHERE job_id = ? AND kind = ?", (job_id, kind)
        )
        return _row(r) if r is not None else None

    async def undelivered(self, limit: int = 20) -> list[OutboxRow]:
        rows = await self._db.fetchall(
            "SELECT * FROM outbox WHERE state = 'failed' ORDER BY done_at DESC LIMIT ?", (limit,)
        )
        return [_row(r) for r in rows]

    async def missing_results(self) -> list[str]:
        rows = await self._db.fetchall(
            f"SELECT j.id FROM jobs j WHERE j.state IN {_FINAL} AND j.deleted = 0 "
            "AND j.result_ref IS NULL AND NOT EXISTS (SELECT 1 FROM outbox o "
            "WHERE o.job_id = j.id AND o.kind = 'result') ORDER BY j.created_at"
        )
        return [str(r["id"]) for r in rows]


class PgPosts:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, job_id: str, platform: str, ref: str, kind: str) -> None:
        await self._db.execute(
            "INSERT INTO job_posts (job_id, platform, ref, kind) VALUES (?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (job_id, platform, ref, kind),
        )

    async def of_job(self, job_id: str) -> list[JobPost]:
        rows = await self._db.fetchall(
            "SELECT platform, ref, kind FROM job_posts WHERE job_id = ? ORDER BY seq", (job_id,)
        )
        return [JobPost(r["platform"], r["ref"], r["kind"]) for r in rows]

    async def sha_in_use(self, sha256: str) -> bool:
        row = await self._db.fetchone(
            "SELECT 1 AS used FROM jobs j WHERE j.deleted = 0 AND (j.grid_sha = ? OR EXISTS "
            "(SELECT 1 FROM images i WHERE i.job_id = j.id AND i.sha256 = ?) "
            "OR j.request_json LIKE ?) LIMIT 1",
            (sha256, sha256, f'%"init_sha": "{sha256}"%'),
        )
        return row is not None
