"""Which store the settings ask for, opened: SQLite in the data dir unless ``store.url`` is set.

The PostgreSQL package (and so asyncpg) is imported only when ``store.url`` names it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from bot.errors import StoreUnavailable
from bot.storage.protocols import Database
from bot.storage.url import parse

DB_NAME = "imagine-bot.sqlite3"


@asynccontextmanager
async def open_store(url: str, data_dir: Path) -> AsyncIterator[Database]:
    """The store for ``store.url`` (checked already by the settings), or SQLite in
    ``data_dir``; closed on exit."""
    if not url:
        from bot.storage.sqlite import Store as SqliteStore

        async with SqliteStore.open(data_dir / DB_NAME) as sqlite:
            yield sqlite
        return
    checked = parse(url)
    try:
        from bot.storage.postgres import Store as PgStore
    except ImportError:
        raise StoreUnavailable(
            f"store.url names a PostgreSQL database ({checked.shown}), but its driver is not "
            "installed: pip install 'imagine-bot[postgres]'"
        ) from None
    async with PgStore.open(checked) as pg:
        yield pg


__all__ = ["DB_NAME", "open_store"]
