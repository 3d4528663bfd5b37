"""How admission's portable statements (:mod:`bot.storage.admission`) run in a PostgreSQL
unit."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from bot.storage.postgres.repositories import _conn
from bot.storage.protocols import Tx


class PgTxStatements:
    async def rows(self, tx: Tx, sql: str, params: Sequence[Any]) -> Sequence[Any]:
        return await _conn(tx).fetchall(sql, params)

    async def insert_many(self, tx: Tx, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await _conn(tx).executemany(sql, rows)

    async def count_many(self, tx: Tx, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        # asyncpg's executemany tells no row counts: one statement per row, asked together.
        conn = _conn(tx)
        return sum(await asyncio.gather(*(conn.execute(sql, row) for row in rows)))
