"""Pending confirmations in PostgreSQL: the statements of `bot.storage.sqlite.confirmations`."""

from __future__ import annotations

from bot.storage.postgres.database import Database
from bot.storage.records import PendingCommand

_COLUMNS = (
    "id, platform, tenant, channel_id, owner_id, text, init_sha, init_ext, created_at, used_at"
)


class PgConfirmations:
    def __init__(self, db: Database) -> None:
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
