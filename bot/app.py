"""The composition root: builds every part from the settings, in one place, with ``async with``."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bot import grammar
from bot.access import Access
from bot.config import Settings
from bot.core import GalleryPage, JobDetails, Lineage
from bot.errors import AlreadyRunning
from bot.events import EventBus
from bot.gallery import Gallery
from bot.handler import Handler
from bot.jobs import JobRunner
from bot.providers.base import Provider
from bot.providers.hub import ProviderHub
from bot.quotas import Quotas
from bot.storage.opening import DB_NAME, open_store
from bot.storage.protocols import Database, Storage
from bot.styles import StyleBook
from bot.types import Actor, ChannelPoster, FlagHelp, Invocation, Reply, Responder

log = logging.getLogger(__name__)

__all__ = ["DB_NAME", "LOCK_NAME", "App", "runner_lock"]

LOCK_NAME = "runner.lock"


@contextlib.contextmanager
def runner_lock(data_dir: Path) -> Iterator[None]:
    """One job runner per data dir: a second one would take the first one's running jobs
    for interrupted ones and retry them. The kernel drops the lock when the process dies,
    so a crash never leaves it stale."""
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(
                f"Another imagine-bot is already running on {data_dir}. Stop it first, "
                "or give this one its own --data-dir."
            ) from None
        yield
    finally:
        os.close(fd)


@dataclass
class App:
    settings: Settings
    store: Database  # the database itself: raw SQL for `doctor`, benchmarks and tests
    storage: Storage  # the repositories the core uses (the same object as `store`)
    events: EventBus
    access: Access
    quotas: Quotas
    providers: ProviderHub
    runner: JobRunner
    handler: Handler

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        start: bool = True,
        extra_providers: Mapping[str, Provider] | None = None,
        shared: bool = False,
    ) -> AsyncIterator[App]:
        """Open the database, build the providers, start the job runner; undo it all on exit.

        Jobs still queued at exit stay queued in the database and resume at the next start.
        ``shared``: other processes use the same database at once (a shared store: set for
        PostgreSQL, ``store.url``): no data-dir lock, and jobs are taken by lease
        (:mod:`bot.leasing`).
        """
        shared = shared or bool(settings.store.url)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as locks:
            if start and not shared:
                locks.enter_context(runner_lock(settings.data_dir))
            async with cls._open(settings, clock, start, extra_providers, shared) as app:
                yield app

    @classmethod
    @asynccontextmanager
    async def _open(
        cls,
        settings: Settings,
        clock: Callable[[], float],
        start: bool,
        extra_providers: Mapping[str, Provider] | None,
        shared: bool,
    ) -> AsyncIterator[App]:
        styles = StyleBook.from_config(settings.styles)
        data_dir = settings.data_dir
        async with (
            open_store(settings.store.url, data_dir) as store,
            ProviderHub.open(settings.providers, settings.env, extra_providers) as providers,
        ):
            storage: Storage = store
            events = EventBus()
            access = Access(settings, storage.channels)
            quotas = Quotas(storage, settings.quota, is_admin=access.is_admin, clock=clock)
            runner = JobRunner(
                storage,
                quotas,
                providers,
                data_dir=data_dir,
                job_settings=settings.jobs,
                image_settings=settings.images,
                events=events,
                clock=clock,
                shared=shared,
            )
            handler = Handler(
                settings, store, quotas, runner, providers, styles, access=access, clock=clock
            )
            # The runner publishes; the handler listens. Subscribed before the runner starts,
            # so no event of a resumed job is missed.
            events.on_job(handler.on_job_event)
            events.on_alert(handler.on_alert)
            app = cls(
                settings=settings,
                store=store,
                storage=storage,
                events=events,
                access=access,
                quotas=quotas,
                providers=providers,
                runner=runner,
                handler=handler,
            )
            if start:
                await runner.start()
                if shared:
                    await storage.notices.listen(runner.on_notice)
            try:
                yield app
            finally:
                await runner.stop()
                await handler.aclose()

    # ------------------------------------------------------- the adapters' contract (bot.core)
    async def handle(self, inv: Invocation, responder: Responder) -> None:
        await self.handler.handle(inv, responder)

    def register_poster(self, platform: str, poster: ChannelPoster) -> None:
        self.handler.register_poster(platform, poster)

    async def deliver_pending(self, platform: str) -> None:
        await self.handler.deliver_pending(platform)

    async def history(
        self, platform: str, tenant: str, channel_id: str, limit: int = 50
    ) -> list[Reply]:
        return await self.handler.history(platform, tenant, channel_id, limit)

    def image_path(self, sha256: str) -> Path | None:
        return self.handler.image_path(sha256)

    async def quota_badge(self, actor: Actor) -> str:
        return await self.handler.quota_badge(actor)

    def flag_help(self) -> Sequence[FlagHelp]:
        return grammar.flag_help(self.handler.limits)

    async def job_details(
        self, platform: str, tenant: str, job_ids: Sequence[str]
    ) -> Mapping[str, JobDetails]:
        return await self._gallery.details(platform, tenant, job_ids)

    async def gallery(
        self,
        platform: str,
        tenant: str,
        *,
        channel_id: str | None = None,
        owner_id: str | None = None,
        query: str = "",
        before: str | None = None,
        limit: int = 30,
    ) -> GalleryPage:
        return await self._gallery.page(
            platform,
            tenant,
            channel_id=channel_id,
            owner_id=owner_id,
            query=query,
            before=before,
            limit=limit,
        )

    async def lineage(self, platform: str, tenant: str, job_id: str) -> Lineage | None:
        return await self._gallery.lineage(platform, tenant, job_id)

    @functools.cached_property
    def _gallery(self) -> Gallery:
        return Gallery(self.handler.ctx)
