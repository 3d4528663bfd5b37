"""How admission's portable statements (:mod:`bot.storage.admission`) run in a SQLite unit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.storage.protocols import Tx
from bot.storage.sqlite.repositories import _conn


class SqliteTxStatements:
    async def rows(self, tx: Tx, sql: str, params: Sequence[Any]) -> Sequence[Any]:
        return list(await _conn(tx).execute_fetchall(sql, tuple(params)))

    async def insert_many(self, tx: Tx, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await _conn(tx).executemany(sql, rows)

    async def count_many(self, tx: Tx, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        # One statement for all the rows; its row count is their sum.
        cursor = await _conn(tx).executemany(sql, rows)
        return int(cursor.rowcount)
