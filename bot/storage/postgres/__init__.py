"""Storage on one PostgreSQL database through asyncpg (a pool, an advisory write lock, its own
numbered migrations in :mod:`bot.storage.postgres.migrations`). Imported only when
``store.url`` is set, so SQLite users never need the driver (the ``[postgres]`` extra)."""

from bot.storage.postgres.database import Database, PgTx, _migrations, to_dollar
from bot.storage.postgres.store import Store

__all__ = ["Database", "PgTx", "Store", "_migrations", "to_dollar"]
