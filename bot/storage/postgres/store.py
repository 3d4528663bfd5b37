"""The PostgreSQL :class:`~bot.storage.protocols.Storage`: the database and its repositories."""

from __future__ import annotations

import asyncpg

from bot.storage.admission import AdmissionStatements
from bot.storage.portable import Confirmations, Preferences
from bot.storage.postgres.admission import PgTxStatements
from bot.storage.postgres.database import Database
from bot.storage.postgres.gallery import PgGallery
from bot.storage.postgres.leases import PgLeases
from bot.storage.postgres.notices import PgJobNotices
from bot.storage.postgres.outbox import PgOutbox, PgPosts
from bot.storage.postgres.repositories import (
    PgAdminLog,
    PgAlerts,
    PgChannels,
    PgImages,
    PgJobs,
    PgLedger,
    PgQuota,
)
from bot.storage.url import StoreUrl


class Store(Database):
    """One PostgreSQL database: ``Store.open(url)``, then the repositories the core uses
    (``jobs``, ``quota``, ...) and, for tools and tests, raw ``fetchall``/``fetchone``/
    ``execute`` (SQLite-style ``?`` placeholders)."""

    def __init__(self, pool: asyncpg.Pool, url: StoreUrl) -> None:
        super().__init__(pool, url)
        self.jobs = PgJobs(self)
        self.images = PgImages(self)
        self.quota = PgQuota(self)
        self.ledger = PgLedger(self)
        self.channels = PgChannels(self)
        self.admin_log = PgAdminLog(self)
        self.alerts = PgAlerts(self)
        self.outbox = PgOutbox(self)
        self.posts = PgPosts(self)
        self.gallery = PgGallery(self)
        self.confirmations = Confirmations(self)
        self.admission = AdmissionStatements(PgTxStatements())
        self.leases = PgLeases(self)
        self.notices = PgJobNotices(pool)
        self.prefs = Preferences(self)
