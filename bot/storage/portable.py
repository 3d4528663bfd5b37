"""Repositories whose SQL is the same on every store: one class each, on any database that runs
statements with ``?`` placeholders (SQLite's own, PostgreSQL's through ``to_dollar``).

Each statement here is portable SQL, so the SQLite and the PostgreSQL store hand out the same
class instead of two copies that could drift apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from bot.storage.records import ActiveJob, PendingCommand


class Statements(Protocol):
    """What a store's database offers for statements of their own (each committed)."""

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> Sequence[Any]: ...

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Any: ...

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int: ...


_COLUMNS = (
    "id, platform, tenant, channel_id, owner_id, text, init_sha, init_ext, created_at, used_at"
)


class Confirmations:
    def __init__(self, db: Statements) -> None:
        self._db = db

    async def put(self, pending: PendingCommand) -> None:
        await self._db.execute(
            f"INSERT INTO confirmations ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                pending.id,
                pending.platform,
                pending.tenant,
                pending.channel_id,
                pending.owner_id,
                pending.text,
                pending.init_sha,
                pending.init_ext,
                pending.created_at,
                pending.used_at,
            ),
        )

    async def get(self, pending_id: str) -> PendingCommand | None:
        row = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM confirmations WHERE id = ?", (pending_id,)
        )
        return None if row is None else PendingCommand(**dict(row))

    async def use(self, pending_id: str, at: float) -> bool:
        return bool(
            await self._db.execute(
                "UPDATE confirmations SET used_at = ? WHERE id = ? AND used_at IS NULL",
                (at, pending_id),
            )
        )

    async def unuse(self, pending_id: str) -> None:
        await self._db.execute(
            "UPDATE confirmations SET used_at = NULL WHERE id = ?", (pending_id,)
        )

    async def forget_before(self, at: float) -> int:
        return await self._db.execute("DELETE FROM confirmations WHERE created_at < ?", (at,))


_KEY = "platform = ? AND tenant = ? AND kind = ? AND scope = ? AND subject = ?"


# Keys one preferences query asks for at most (two parameters each).
MAX_KEYS = 200
_Where = tuple[str, str, str]  # (platform, tenant, kind)
_Asked = tuple[_Where, tuple[tuple[str, str], ...], "asyncio.Future[dict[tuple[str, str], str]]"]


class Preferences:
    """Saved preferences. Reads asked at the same moment (a burst of submissions, each wanting
    its defaults) are answered by one query: under load each query was a round trip that
    waited on a busy event loop. A read asked after a write returned sees that write."""

    def __init__(self, db: Statements) -> None:
        self._db = db
        self._asked: list[_Asked] = []
        self._reader: asyncio.Task[None] | None = None

    async def get_many(
        self, platform: str, tenant: str, kind: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], str]:
        if not keys:
            return {}
        answer: asyncio.Future[dict[tuple[str, str], str]] = (
            asyncio.get_running_loop().create_future()
        )
        self._asked.append(((platform, tenant, kind), tuple(keys), answer))
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_asked(), name="preferences")
        return await answer

    async def _read_asked(self) -> None:
        asked: list[_Asked] = []
        try:
            while self._asked:
                asked, self._asked = self._asked, []
                wanted: dict[_Where, set[tuple[str, str]]] = {}
                for where, keys, _ in asked:
                    wanted.setdefault(where, set()).update(keys)
                found: dict[tuple[_Where, tuple[str, str]], str] = {}
                try:
                    for where, keys_wanted in wanted.items():
                        ordered = sorted(keys_wanted)
                        for i in range(0, len(ordered), MAX_KEYS):
                            rows = await self._fetch(where, ordered[i : i + MAX_KEYS])
                            found.update({(where, k): v for k, v in rows.items()})
                except Exception as exc:
                    for *_, answer in asked:
                        if not answer.done():
                            answer.set_exception(exc)
                    continue
                for where, keys, answer in asked:
                    if not answer.done():
                        answer.set_result({k: found[where, k] for k in keys if (where, k) in found})
        except BaseException:
            for *_, answer in [*asked, *self._asked]:
                answer.cancel()
            self._asked.clear()
            raise
        finally:
            self._reader = None

    async def _fetch(
        self, where: _Where, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], str]:
        # Portable: one (scope = ? AND subject = ?) per key instead of a row-value IN.
        pairs = " OR ".join("(scope = ? AND subject = ?)" for _ in keys)
        rows = await self._db.fetchall(
            "SELECT scope, subject, value_json FROM preferences "
            f"WHERE platform = ? AND tenant = ? AND kind = ? AND ({pairs})",
            (*where, *(x for key in keys for x in key)),
        )
        return {(str(r["scope"]), str(r["subject"])): str(r["value_json"]) for r in rows}

    async def put(
        self,
        platform: str,
        tenant: str,
        kind: str,
        scope: str,
        subject: str,
        value_json: str,
        at: float,
    ) -> None:
        await self._db.execute(
            "INSERT INTO preferences (platform, tenant, kind, scope, subject, value_json, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (platform, tenant, kind, scope, subject) DO UPDATE SET "
            "value_json = excluded.value_json, updated_at = excluded.updated_at",
            (platform, tenant, kind, scope, subject, value_json, at),
        )

    async def delete(self, platform: str, tenant: str, kind: str, scope: str, subject: str) -> bool:
        changed = await self._db.execute(
            f"DELETE FROM preferences WHERE {_KEY}", (platform, tenant, kind, scope, subject)
        )
        return changed > 0


class LeaseStatements:
    """The job-lease statements both stores share; each store adds the ones that run inside
    its own transactions (the claim, the failure of an expired lease, the holder check)."""

    def __init__(self, db: Statements) -> None:
        self._db = db

    async def queued_providers(self) -> set[str]:
        rows = await self._db.fetchall("SELECT DISTINCT provider FROM jobs WHERE state = 'queued'")
        return {str(r["provider"]) for r in rows}

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

    async def release(self, owner: str, job_id: str) -> bool:
        return bool(
            await self._db.execute(
                "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_until = NULL, "
                "attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END "
                "WHERE id = ? AND state = 'running' AND lease_owner = ?",
                (job_id, owner),
            )
        )


__all__ = ["Confirmations", "LeaseStatements", "Preferences", "Statements"]
