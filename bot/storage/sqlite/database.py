"""One aiosqlite connection: serialized transactions, numbered migrations, raw SQL for tools.

Every read-then-write runs inside :meth:`Database.transaction` (``BEGIN IMMEDIATE``: the write
lock is taken at BEGIN, so a concurrent writer waits on ``busy_timeout`` instead of failing to
upgrade). aiosqlite runs a connection's statements on one thread in queue order, so an
``asyncio.Lock`` keeps one coroutine's statements from landing inside another's transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Self

import aiosqlite

log = logging.getLogger(__name__)

_MIGRATION = re.compile(r"V(\d+)__[\w-]+\.sql$")


def _migrations() -> list[tuple[int, str]]:
    found = []
    for entry in resources.files("bot.migrations").iterdir():
        m = _MIGRATION.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(found)


class Database:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._lock = asyncio.Lock()

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path, *, busy_timeout_ms: int = 5000) -> AsyncIterator[Self]:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            db.row_factory = aiosqlite.Row
            # First, so that switching a fresh file to WAL waits for another process doing
            # the same instead of failing.
            await db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            # Low-rate, must-not-lose data: WAL with FULL sync keeps commits across app crashes
            # and, where storage honours fsync, across power loss.
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA foreign_keys=ON")
            database = cls(db)
            await database._migrate()
            yield database
        finally:
            await db.close()

    async def _version(self) -> int:
        cur = await self._db.execute("PRAGMA user_version")
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _migrate(self) -> None:
        migrations = _migrations()
        async with self._lock:
            seen = await self._version()
            # Up to date (the usual case): no write lock, so `doctor` beside a busy bot opens
            # at once.
            if not migrations or seen >= migrations[-1][0]:
                return
            upgraded_from: int | None = None
            reached = seen
            for version, sql in migrations:
                # Each migration and its version bump commit together, or not at all.
                await self._db.execute("BEGIN IMMEDIATE")
                try:
                    # Read again under the write lock: another process opening the same data
                    # dir (`quota` beside `doctor`) may have applied it since we looked.
                    current = await self._version()
                    if current >= version:
                        await self._db.execute("COMMIT")
                        reached = max(reached, current)
                        continue
                    for statement in sql.split(";\n"):
                        if statement.strip():
                            await self._db.execute(statement)
                    await self._db.execute(f"PRAGMA user_version={version}")
                    await self._db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.OperationalError):  # BEGIN itself failed
                        await asyncio.shield(self._db.execute("ROLLBACK"))
                    raise
                if upgraded_from is None:
                    upgraded_from = current
                reached = version
                log.debug("database migrated to version %d", version)
            # A brand-new database being built is no news; an upgrade of one holding data is.
            if seen > 0 and upgraded_from is not None:
                log.info("database upgraded from version %d to %d", upgraded_from, reached)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolls back on any error, including cancellation.

        Commit and rollback are shielded: a cancellation arriving mid-commit must not leave the
        connection inside an open transaction that later statements would join.
        """
        async with self._lock:
            try:
                # BEGIN is inside the try: a cancellation while it waits on the db thread
                # (busy_timeout, stop()) still queues the ROLLBACK behind it.
                await self._db.execute("BEGIN IMMEDIATE")
                yield self._db
            except BaseException:
                with contextlib.suppress(sqlite3.OperationalError):  # BEGIN itself failed
                    await asyncio.shield(self._db.execute("ROLLBACK"))
                raise
            else:
                await asyncio.shield(self._db.execute("COMMIT"))

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[aiosqlite.Connection]:
        """The connection for a few reads in a row, without taking SQLite's write lock."""
        async with self._lock:
            yield self._db

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        async with self._lock:
            return list(await self._db.execute_fetchall(sql, tuple(params)))

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> aiosqlite.Row | None:
        async with self._lock:
            rows = list(await self._db.execute_fetchall(sql, tuple(params)))
            return rows[0] if rows else None

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """One auto-committed statement; returns the row count."""
        async with self._lock:
            cur = await self._db.execute(sql, tuple(params))
            return cur.rowcount

    @property
    def in_transaction(self) -> bool:
        return bool(self._db.in_transaction)
