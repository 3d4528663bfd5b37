"""Storage on one SQLite file through aiosqlite (WAL, ``BEGIN IMMEDIATE``, numbered migrations
in :mod:`bot.migrations`)."""

from bot.storage.sqlite.database import Database, _migrations
from bot.storage.sqlite.store import Store

__all__ = ["Database", "Store", "_migrations"]
