"""Two aiosqlite connections: a writer with group commit, a reader; migrations; raw SQL for tools.

Every read-then-write runs inside :meth:`Database.transaction` (``BEGIN IMMEDIATE``: the write
lock is taken at BEGIN, so a concurrent writer waits on ``busy_timeout`` instead of failing to
upgrade). aiosqlite runs a connection's statements on one thread in queue order, so an
``asyncio.Lock`` keeps one coroutine's statements from landing inside another's unit of work.

Under load most of a submission's time was spent queueing for that one connection, and each
unit paid its own fsync. So units that queue up share a commit (each in its own savepoint,
still all or nothing, and none returns before the shared COMMIT), and plain reads go to a
second, read-only connection: in WAL mode a reader never waits for the writer and sees every
committed write.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
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

# Units of work sharing one commit at most: enough to spread an fsync over a burst of
# submissions, few enough that the first of them does not wait long for the last.
MAX_BATCH_UNITS = 16
# Statements the read-only connection answers: a SELECT (or VALUES), or a PRAGMA that only
# asks. Everything else, WITH ... included, is sent to the writer.
_QUERY = re.compile(
    r"\s*(?:SELECT|VALUES)\b|\s*PRAGMA\s+[\w.]+\s*(?:\([^)]*\))?\s*;?\s*\Z", re.IGNORECASE
)
_MIGRATION = re.compile(r"V(\d+)__[\w-]+\.sql$")


def _migrations() -> list[tuple[int, str]]:
    found = []
    for entry in resources.files("bot.migrations").iterdir():
        m = _MIGRATION.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(found)


async def _configure(db: aiosqlite.Connection, busy_timeout_ms: int, *, writer: bool) -> None:
    db.row_factory = aiosqlite.Row
    # First, so that switching a fresh file to WAL waits for another process doing the same
    # instead of failing.
    await db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    if writer:
        # Low-rate, must-not-lose data: WAL with FULL sync keeps commits across app crashes
        # and, where storage honours fsync, across power loss.
        await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=FULL")
    await db.execute("PRAGMA foreign_keys=ON")
    if not writer:
        await db.execute("PRAGMA query_only=ON")  # the reader never writes, even by mistake


class _Batch:
    """Units of work sharing one ``BEGIN IMMEDIATE ... COMMIT`` (one fsync): each unit is
    all-or-nothing within it (its own savepoint), and none of them returns before the COMMIT."""

    __slots__ = ("done", "units")

    def __init__(self) -> None:
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.units = 0

    def settle(self, error: BaseException | None) -> None:
        if self.done.done():
            return
        if error is None:
            self.done.set_result(None)
        elif not isinstance(error, Exception):
            self.done.cancel()
        else:
            self.done.set_exception(error)
            # Members that were cancelled meanwhile never look: do not let asyncio log it.
            self.done.add_done_callback(lambda f: f.exception())


class Database:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        # Reads go to a second connection (WAL readers never wait for the writer), so that
        # the many small reads of rendering do not queue behind submissions; without one
        # (a Database built by hand) they share the writer.
        self._reader: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._batch: _Batch | None = None
        self._savepoints = itertools.count(1)
        self._flushers: set[asyncio.Task[None]] = set()

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path, *, busy_timeout_ms: int = 5000) -> AsyncIterator[Self]:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        reader: aiosqlite.Connection | None = None
        database: Self | None = None
        try:
            await _configure(db, busy_timeout_ms, writer=True)
            database = cls(db)
            await database._migrate()
            reader = await aiosqlite.connect(path, isolation_level=None)
            await _configure(reader, busy_timeout_ms, writer=False)
            database._reader = reader
            yield database
        finally:
            if database is not None:
                # What was accepted is committed before the connection goes, stragglers
                # included (a shielded write a cancelled task still finishes).
                for _ in range(100):
                    await asyncio.gather(*list(database._flushers), return_exceptions=True)
                    async with database._lock:
                        idle = not database._flushers and database._batch is None
                    if idle:
                        break
            if reader is not None:
                await reader.close()
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

    # ------------------------------------------------------------------ group commit
    async def _enter(self) -> tuple[_Batch, bool]:
        """Take the write lock and join the open batch, or begin one (``BEGIN IMMEDIATE``);
        True when this call began it. The caller releases the lock."""
        await self._lock.acquire()
        try:
            batch = self._batch
            if batch is not None and batch.units >= MAX_BATCH_UNITS:
                # Full: commit it now, in turn, so that its first units do not wait on an
                # ever longer batch (and nobody loses their place in the queue).
                await self._commit(batch)
                batch = None
            if batch is not None:
                return batch, False
            try:
                # Inside the try: a cancellation while BEGIN waits on the database thread
                # (busy_timeout, stop()) still queues the ROLLBACK behind it.
                await self._db.execute("BEGIN IMMEDIATE")
            except BaseException:
                with contextlib.suppress(sqlite3.OperationalError):  # BEGIN itself failed
                    await asyncio.shield(self._db.execute("ROLLBACK"))
                raise
            batch = self._batch = _Batch()
            # The flusher queues for the lock behind the units already waiting for it, so
            # they join this batch; whoever comes later begins the next one.
            flusher = asyncio.create_task(self._flush(batch), name="sqlite-group-commit")
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
            return batch, True
        except BaseException:
            self._lock.release()
            raise

    async def _flush(self, batch: _Batch) -> None:
        async with self._lock:
            if self._batch is batch:  # else: committed when full, or lost to an error
                await self._commit(batch)

    async def _commit(self, batch: _Batch) -> None:
        """COMMIT the open batch, with the lock held, and tell its units how it went. A
        cancellation waits for the outcome: nothing may reach the connection in between."""
        self._batch = None
        commit = asyncio.ensure_future(self._commit_now(batch))
        try:
            await asyncio.shield(commit)
        except asyncio.CancelledError:
            while not commit.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([commit])
            raise

    async def _commit_now(self, batch: _Batch) -> None:
        try:
            await self._db.execute("COMMIT")
        except Exception as exc:
            # Disk full, I/O error: the batch is not kept, and each unit hears it.
            with contextlib.suppress(sqlite3.Error, ValueError):  # ValueError: closed
                if self._db.in_transaction:
                    await self._db.execute("ROLLBACK")
            batch.settle(exc)
        else:
            batch.settle(None)

    def _lost(self, batch: _Batch, error: BaseException) -> None:
        """After an error SQLite may have rolled the whole transaction back by itself
        (SQLITE_FULL, SQLITE_IOERR, ...): then every unit of the batch is lost, not only the
        one that failed, and each of them must hear it."""
        if self._batch is batch and not self._db.in_transaction:
            self._batch = None
            batch.settle(
                error
                if isinstance(error, Exception)
                else sqlite3.OperationalError("the transaction was rolled back")
            )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """A unit of work: all or nothing, and durable when the ``async with`` ends.

        Units that arrive while another holds the connection share one ``BEGIN IMMEDIATE ...
        COMMIT`` (group commit: one fsync for up to ``MAX_BATCH_UNITS``), each inside its own
        savepoint, so one unit's failure (a refused quota) rolls back only that unit. The
        write lock is still taken at BEGIN, and a unit's checks and writes still run alone on
        the connection. A unit's body awaits only the database: the units before it in its
        batch wait for it to end.

        Rollbacks and the commit are shielded: a cancellation must not leave the connection
        inside an open transaction that later statements would join.
        """
        batch, first = await self._enter()
        try:
            savepoint = None
            try:
                if not first:
                    # The first unit needs none: it is alone in the transaction until it ends.
                    savepoint = f"unit{next(self._savepoints)}"
                    await self._db.execute(f"SAVEPOINT {savepoint}")
                yield self._db
                if savepoint is not None:
                    await self._db.execute(f"RELEASE {savepoint}")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    if not self._db.in_transaction:
                        pass  # SQLite rolled it all back itself: _lost tells everyone
                    elif savepoint is None:
                        self._batch = None
                        await asyncio.shield(self._db.execute("ROLLBACK"))
                        batch.settle(None)  # nobody else's work was in it
                    else:
                        # Undoes this unit only. Should the RELEASE not happen (cancelled),
                        # the empty savepoint left open is harmless: COMMIT releases it.
                        await asyncio.shield(self._db.execute(f"ROLLBACK TO {savepoint}"))
                        await asyncio.shield(self._db.execute(f"RELEASE {savepoint}"))
                self._lost(batch, exc)
                raise
            batch.units += 1
        finally:
            self._lock.release()
        await asyncio.shield(batch.done)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[aiosqlite.Connection]:
        """A connection for a few reads in a row, without taking SQLite's write lock. It sees
        what is committed (each statement the newest), not the writes of an open unit."""
        if self._reader is not None:
            yield self._reader
            return
        async with self._lock:
            yield self._db

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        """The rows of one statement. A query runs on the reader; anything else (``INSERT
        ... RETURNING``, ``UPDATE ... RETURNING``) is a write of its own, as in
        :meth:`execute`, and returns once committed."""
        if self._reader is not None and _QUERY.match(sql):
            return list(await self._reader.execute_fetchall(sql, tuple(params)))
        batch, _ = await self._enter()
        try:
            try:
                rows = list(await self._db.execute_fetchall(sql, tuple(params)))
            except BaseException as exc:
                self._lost(batch, exc)
                raise
            batch.units += 1
        finally:
            self._lock.release()
        await asyncio.shield(batch.done)
        return rows

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> aiosqlite.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """One statement of its own, committed (in a batch, see :meth:`transaction`) when it
        returns; returns the row count."""
        batch, _ = await self._enter()
        try:
            try:
                # One statement is atomic by itself: no savepoint needed.
                cur = await self._db.execute(sql, tuple(params))
            except BaseException as exc:
                self._lost(batch, exc)
                raise
            batch.units += 1
            count = cur.rowcount
        finally:
            self._lock.release()
        await asyncio.shield(batch.done)
        return count

    async def health(self) -> tuple[bool, str]:
        """(the file passes SQLite's integrity check, what ``doctor`` says about it)."""
        row = await self.fetchone("PRAGMA integrity_check")
        version = await self.fetchone("PRAGMA user_version")
        return (
            row is not None and row[0] == "ok",
            f"SQLite (schema version {version[0] if version else '?'})",
        )

    @property
    def in_transaction(self) -> bool:
        return bool(self._db.in_transaction)
