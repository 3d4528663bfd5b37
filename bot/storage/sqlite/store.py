"""The SQLite :class:`~bot.storage.protocols.Storage`: the database and its repositories."""

from __future__ import annotations

import aiosqlite

from bot.storage.admission import AdmissionStatements
from bot.storage.portable import Confirmations, Preferences
from bot.storage.sqlite.admission import SqliteTxStatements
from bot.storage.sqlite.database import Database
from bot.storage.sqlite.leases import SqliteLeases
from bot.storage.sqlite.notices import SqliteJobNotices
from bot.storage.sqlite.outbox import SqliteOutbox, SqlitePosts
from bot.storage.sqlite.repositories import (
    SqliteAdminLog,
    SqliteAlerts,
    SqliteChannels,
    SqliteImages,
    SqliteJobs,
    SqliteLedger,
    SqliteQuota,
)


class Store(Database):
    """One SQLite file: ``Store.open(path)``, then the repositories the core uses (``jobs``,
    ``quota``, ...) and, for tools and tests, raw ``fetchall``/``fetchone``/``execute``."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        super().__init__(db)
        self.jobs = SqliteJobs(self)
        self.images = SqliteImages(self)
        self.quota = SqliteQuota(self)
        self.ledger = SqliteLedger(self)
        self.channels = SqliteChannels(self)
        self.admin_log = SqliteAdminLog(self)
        self.alerts = SqliteAlerts(self)
        self.outbox = SqliteOutbox(self)
        self.posts = SqlitePosts(self)
        self.confirmations = Confirmations(self)
        self.admission = AdmissionStatements(SqliteTxStatements())
        self.leases = SqliteLeases(self)
        self.notices = SqliteJobNotices()
        self.prefs = Preferences(self)
