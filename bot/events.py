"""What the lower layers tell the upper ones, without knowing who listens.

The job runner publishes :class:`JobEvent`s (a job changed; its place in line; its progress) and
provider alerts (auth or credit failures an admin must act on). The composition root
(:mod:`bot.app`) subscribes the delivery and alert code; nothing calls back up through a
closure, and a new listener (a metrics exporter, say) is one ``subscribe`` call.

A listener that raises is logged and does not stop the others, nor the runner.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.providers.base import ProviderError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobEvent:
    """Something the people in the channel should see about a job."""

    job_id: str
    position: int | None = None
    progress: float | None = None
    note: str | None = None  # the provider's own word on the wait ("#12 in the Horde's queue")
    # Another process (on the same shared database) changed the job: only what this process
    # shows by itself (its web pages) needs refreshing; the outbox delivers the result.
    remote: bool = False


JobListener = Callable[[JobEvent], Awaitable[None]]
AlertListener = Callable[[str, ProviderError], Awaitable[None]]


class EventBus:
    def __init__(self) -> None:
        self._job: list[JobListener] = []
        self._alert: list[AlertListener] = []

    def on_job(self, listener: JobListener) -> None:
        self._job.append(listener)

    def on_alert(self, listener: AlertListener) -> None:
        self._alert.append(listener)

    async def job(self, event: JobEvent) -> None:
        for listener in list(self._job):
            try:
                await listener(event)
            except Exception:
                log.exception("a job listener failed on %s", event)

    async def alert(self, provider: str, error: ProviderError) -> None:
        for listener in list(self._alert):
            try:
                await listener(provider, error)
            except Exception:
                log.exception("an alert listener failed for %s", provider)


class OrderedPublisher:
    """A job's events go out in order, one after the other, without the publisher waiting for
    the listeners (the platforms): the newest publishing task per job waits for the one
    before. An update overtaken by a newer one of the same job before it went out (a progress
    step, a place in line) is skipped; a job's final event never is."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self._publishing: dict[str, asyncio.Task[None]] = {}

    def publish(self, event: JobEvent) -> asyncio.Task[None]:
        previous = self._publishing.get(event.job_id)
        task = asyncio.get_running_loop().create_task(self._deliver(event, previous))
        self._publishing[event.job_id] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._publishing.get(event.job_id) is done:
                del self._publishing[event.job_id]

        task.add_done_callback(forget)
        return task

    def pending(self) -> list[asyncio.Task[None]]:
        return list(self._publishing.values())

    async def _deliver(self, event: JobEvent, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # its outcome is its own (the bus logs failures)
        overtaken = self._publishing.get(event.job_id) is not asyncio.current_task()
        if overtaken and (event.progress is not None or event.position is not None):
            return
        await self._bus.job(event)


__all__ = [
    "AlertListener",
    "EventBus",
    "JobEvent",
    "JobListener",
    "OrderedPublisher",
]
