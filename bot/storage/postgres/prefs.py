"""Saved choices in PostgreSQL: the statements of `bot.storage.sqlite.prefs`."""

from __future__ import annotations

from collections.abc import Sequence

from bot.storage.postgres.database import Database

_KEY = "platform = ? AND tenant = ? AND kind = ? AND scope = ? AND subject = ?"


class PgPrefs:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_many(
        self, platform: str, tenant: str, kind: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], str]:
        if not keys:
            return {}
        # Portable: one (scope = ? AND subject = ?) per key instead of a row-value IN.
        pairs = " OR ".join("(scope = ? AND subject = ?)" for _ in keys)
        rows = await self._db.fetchall(
            "SELECT scope, subject, value_json FROM preferences "
            f"WHERE platform = ? AND tenant = ? AND kind = ? AND ({pairs})",
            (platform, tenant, kind, *(x for key in keys for x in key)),
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


__all__ = ["PgPrefs"]
