"""Compatibility: the SQLite store moved to :mod:`bot.storage.sqlite`."""

from bot.storage.sqlite import Store, _migrations

__all__ = ["Store", "_migrations"]
