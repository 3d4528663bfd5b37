"""A pool of asyncpg connections to one PostgreSQL database: units of work, reads, migrations.

The SQL is written as for SQLite, with ``?`` placeholders; :func:`to_dollar` turns them into
PostgreSQL's ``$1, $2, ...`` once per statement text (cached), so the repositories of both
stores read alike and tools and tests can send the same raw statements to either.

:meth:`Database.transaction` keeps the promise of :class:`~bot.storage.protocols.Storage`: a
unit holds the write lock from its start. Here that lock is one transaction-scoped advisory
lock, taken by every unit of every process on the database, so a unit's reads and the writes
that follow them are never overtaken (the per-user queue caps, the duplicate check). The
quota charge (admission's, :mod:`bot.storage.admission`) needs no lock of its own: it stays
one conditional statement (``INSERT ... ON CONFLICT DO UPDATE ... WHERE``, row-locked by
PostgreSQL), so the check is the write even outside a unit.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Self

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from bot.errors import StoreUnavailable
from bot.storage.url import StoreUrl

log = logging.getLogger(__name__)

# The advisory lock keys: one for units of work, one for migrations (any two fixed numbers).
WRITE_LOCK = 0x1A6_0001
MIGRATE_LOCK = 0x1A6_0002
CONNECT_TIMEOUT_S = 10.0
POOL_MAX = 10
_MIGRATION = re.compile(r"V(\d+)__[\w-]+\.sql$")
_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\?")
_COUNT = re.compile(r"(\d+)\s*$")

Record = asyncpg.Record


def _migrations() -> list[tuple[int, str]]:
    found = []
    for entry in resources.files("bot.storage.postgres.migrations").iterdir():
        m = _MIGRATION.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(found)


@functools.lru_cache(maxsize=512)
def to_dollar(sql: str) -> str:
    """``?`` placeholders as ``$1, $2, ...``; a ``?`` inside a quoted literal stays."""
    counter = 0

    def number(m: re.Match[str]) -> str:
        nonlocal counter
        if m.group(0) != "?":
            return m.group(0)
        counter += 1
        return f"${counter}"

    return _TOKEN.sub(number, sql)


def _rowcount(status: str) -> int:
    """The row count of a command tag ("UPDATE 3", "INSERT 0 1"); 0 for none."""
    m = _COUNT.search(status or "")
    return int(m.group(1)) if m else 0


class PgTx:
    """An open unit of work (or a reading connection): the ``tx`` the repositories take.

    Its methods take SQLite-style ``?`` SQL and a sequence of parameters. The core may ask
    several reads of one unit at once (``asyncio.gather``); an asyncpg connection runs one
    operation at a time, so they take turns here, in the order they were asked, as on
    aiosqlite's one thread."""

    __slots__ = ("_turn", "conn")

    def __init__(self, conn: PoolConnectionProxy[Record]) -> None:
        self.conn = conn
        self._turn = asyncio.Lock()

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Record]:
        async with self._turn:
            return list(await self.conn.fetch(to_dollar(sql), *params))

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Record | None:
        async with self._turn:
            return await self.conn.fetchrow(to_dollar(sql), *params)

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """One statement; returns the number of rows it changed."""
        async with self._turn:
            return _rowcount(await self.conn.execute(to_dollar(sql), *params))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self._turn:
            await self.conn.executemany(to_dollar(sql), [tuple(r) for r in rows])


def _why(exc: BaseException, url: StoreUrl) -> str:
    """One line on why the database could not be opened; never the password."""
    if isinstance(exc, asyncpg.InvalidPasswordError):
        return f"the password for user {url.user or '(default)'} was refused"
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return f"user {url.user or '(default)'} may not connect ({exc.__class__.__name__})"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return f"the database {url.database} does not exist (create it first: createdb)"
    if isinstance(exc, TimeoutError):
        return f"no answer from {url.host}:{url.port} within {CONNECT_TIMEOUT_S:.0f} s"
    if isinstance(exc, ConnectionRefusedError):
        return f"nothing listens on {url.host}:{url.port} (connection refused)"
    if isinstance(exc, OSError):
        return f"cannot reach {url.host}:{url.port} ({exc.strerror or type(exc).__name__})"
    if isinstance(exc, asyncpg.PostgresError):
        return f"the server refused: {exc.__class__.__name__}"
    if isinstance(exc, ValueError | asyncpg.InterfaceError):
        return f"the URL's options were not understood ({exc.__class__.__name__})"
    return type(exc).__name__


class Database:
    def __init__(self, pool: asyncpg.Pool, url: StoreUrl) -> None:
        self._pool = pool
        self.url = url
        self._units = 0  # units of work open now
        # Units take turns here before they take a connection: they would take turns on the
        # advisory lock anyway, and waiting here holds no connection, so units queueing for
        # the lock can never use up the pool that reads (and the lock holder) need.
        self._write_turn = asyncio.Lock()

    @classmethod
    @asynccontextmanager
    async def open(cls, url: StoreUrl, *, pool_max: int = POOL_MAX) -> AsyncIterator[Self]:
        """Connect (within :data:`CONNECT_TIMEOUT_S`), migrate, and close the pool on exit.

        Anything that keeps the database from being used is :class:`StoreUnavailable`, one
        line naming the URL with its password masked."""
        try:
            pool = await asyncio.wait_for(
                asyncpg.create_pool(
                    url.dsn,
                    min_size=1,
                    max_size=pool_max,
                    timeout=CONNECT_TIMEOUT_S,
                    command_timeout=None,
                ),
                CONNECT_TIMEOUT_S + 5,
            )
        except (
            OSError,
            TimeoutError,
            ValueError,  # a URL asyncpg cannot read (an unknown sslmode, say)
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
        ) as exc:
            raise StoreUnavailable(
                f"cannot open the PostgreSQL store {url.shown}: {_why(exc, url)}"
            ) from None
        try:
            database = cls(pool, url)
            try:
                await database._migrate()
            except asyncpg.PostgresError as exc:
                raise StoreUnavailable(
                    f"cannot prepare the PostgreSQL store {url.shown}: {_why(exc, url)}"
                ) from None
            try:
                yield database
            finally:
                notices = getattr(database, "notices", None)  # the Store's (LISTEN)
                if notices is not None:
                    await notices.close()
        finally:
            await pool.close()

    async def _migrate(self) -> None:
        migrations = _migrations()
        async with self._pool.acquire() as conn:
            # Several processes starting at once: one migrates, the others wait and see it.
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATE_LOCK)
            try:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
                )
                seen = int(
                    await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version")
                )
                reached = seen
                for version, sql in migrations:
                    if version <= reached:
                        continue
                    # Each migration and its version bump commit together, or not at all.
                    async with conn.transaction():
                        await conn.execute(sql)
                        await conn.execute("DELETE FROM schema_version")
                        await conn.execute("INSERT INTO schema_version VALUES ($1)", version)
                    reached = version
                    log.debug("database migrated to version %d", version)
                if seen > 0 and reached > seen:
                    log.info("database upgraded from version %d to %d", seen, reached)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATE_LOCK)

    async def health(self) -> tuple[bool, str]:
        """(usable, what ``doctor`` says about the database)."""
        async with self._pool.acquire() as conn:
            version = await conn.fetchval("SELECT MAX(version) FROM schema_version")
            server = await conn.fetchval("SHOW server_version")
        latest = _migrations()[-1][0]
        return (
            version == latest,
            f"PostgreSQL {server} at {self.url.shown} (schema version {version})",
        )

    # ------------------------------------------------------------------ units of work
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PgTx]:
        """A unit of work: all or nothing, committed when the ``async with`` ends; it holds
        the write lock (an advisory lock, shared by every process) from its start. Within
        this process units queue before taking a connection (see ``_write_turn``)."""
        async with self._write_turn, self._pool.acquire() as conn, conn.transaction():
            self._units += 1
            try:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)
                yield PgTx(conn)
            finally:
                self._units -= 1

    @property
    def in_transaction(self) -> bool:
        """A unit of work of this store is open (for tests: none is left after a cancel)."""
        return self._units > 0

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[PgTx]:
        """A connection for a few reads in a row, without the write lock; each statement
        sees what is committed."""
        async with self._pool.acquire() as conn:
            yield PgTx(conn)

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Record]:
        """The rows of one statement of its own (``... RETURNING`` included)."""
        return list(await self._pool.fetch(to_dollar(sql), *params))

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Record | None:
        return await self._pool.fetchrow(to_dollar(sql), *params)

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """One statement of its own, committed when it returns; returns the row count."""
        return _rowcount(await self._pool.execute(to_dollar(sql), *params))
