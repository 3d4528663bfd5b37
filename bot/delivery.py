"""Getting a job's messages to its channel: status updates, the result (exactly once), take-downs.

Each platform's adapter registers one :class:`~bot.types.ChannelPoster`. Queued and running
updates edit the job's status message; a finished job's result is posted as a new ordinary
message (an interaction token may have expired long ago), once: the database claim on
``result_ref`` decides who posts it. Results that finished while their platform had no working
poster are posted by :meth:`Delivery.deliver_pending` (at registration, and after a login).

Admin alerts (a provider's auth or credit failure) are posted here too, at most once an hour
per provider and error kind.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from bot import render
from bot.events import JobEvent
from bot.jobs import Job
from bot.providers.base import ProviderError
from bot.types import FINAL_STATES, ChannelPoster, Reply, Target

if TYPE_CHECKING:
    from bot.context import Context

log = logging.getLogger(__name__)

ALERT_EVERY_S = 3600.0


def target(job: Job) -> Target:
    return Target(job.platform, job.tenant, job.channel_id, job.thread_id, job.owner_id)


class Delivery:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._jobs = ctx.store.jobs
        self._alerts = ctx.store.alerts
        self._posters: dict[str, ChannelPoster] = {}
        self._background: set[asyncio.Task[None]] = set()

    def register_poster(self, platform: str, poster: ChannelPoster) -> None:
        """Called by an adapter once. Results that finished while the platform had no poster
        (jobs resumed at start run before the adapters are up) are delivered now; an adapter
        that can only post later (Discord, after login) calls :meth:`deliver_pending` again."""
        self._posters[platform] = poster
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self.deliver_pending(platform))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        """Let background deliveries finish before the database closes."""
        await asyncio.gather(*self._background, return_exceptions=True)

    async def set_status_ref(self, job_id: str, ref: str) -> None:
        await self._jobs.set_status_ref(job_id, ref)

    async def _post(self, job: Job, reply: Reply, *, update: bool) -> None:
        poster = self._posters.get(job.platform)
        if poster is None:
            return
        if update:
            if job.status_ref:
                await poster.update(target(job), job.status_ref, reply)
            return
        try:
            ref = await poster.post(target(job), reply)
        except BaseException:
            if reply.state in FINAL_STATES:  # release the claim: deliver_pending retries it
                await asyncio.shield(self._jobs.release_result_claim(job.id))
            raise
        if ref is not None and reply.state in FINAL_STATES:
            await self._jobs.set_result_ref(job.id, ref)

    async def on_job_event(self, event: JobEvent) -> None:
        job = await self._ctx.runner.load(event.job_id)
        if job is None or job.deleted:
            return
        reply = await self._ctx.render(job)
        if event.progress is not None and job.state == "running":
            reply = replace(reply, progress=event.progress)
        if event.position is not None and job.state == "queued":
            reply = replace(reply, position=event.position)
        if job.state not in FINAL_STATES:  # queued/running updates edit the status message
            await self._post(job, reply, update=True)
            return
        if job.platform not in self._posters:
            return
        status = render.settled_status(job, reply)
        # The result is posted once: the runner's final event and submit's catch-up (the
        # status message was sent after the job had finished) may both get here.
        if not await self._jobs.claim_result(job.id):
            if job.status_ref and job.result_ref and job.status_ref != job.result_ref:
                await self._post(job, status, update=True)  # a separate status message
            return
        if job.status_ref:
            # Settle the status message first, so it does not stay at "generating" above
            # the result.
            await self._post(job, status, update=True)
        await self._post(job, reply, update=False)

    async def deliver_pending(self, platform: str) -> None:
        """Post what finished while ``platform`` had no (working) poster: jobs resumed or
        settled at start run before the adapters are up."""
        for job_id in await self._jobs.pending_results(platform):
            try:
                await self.on_job_event(JobEvent(job_id))
            except Exception:  # the platform is still not reachable: try again next time
                log.warning("could not deliver the result of job %s yet", job_id,
                            exc_info=True)
                return

    async def take_down(self, job: Job) -> None:
        """Delete: mark the job deleted and replace its messages."""
        await self._jobs.mark_deleted(job.id)
        poster = self._posters.get(job.platform)
        if poster is not None:
            gone = render.deleted_reply(job)
            for ref in dict.fromkeys(r for r in (job.status_ref, job.result_ref) if r):
                await poster.update(target(job), ref, gone)

    async def on_alert(self, provider: str, error: ProviderError) -> None:
        key = f"{provider}:{type(error).__name__}"
        if not await self._alerts.claim(key, self._ctx.clock(), ALERT_EVERY_S):
            return
        log.error("ADMIN ALERT: provider %s: %s (%s). Jobs fail until an admin acts.",
                  provider, type(error).__name__, error.status)
        alert_channel = self._ctx.settings.bot.alert_channel
        if alert_channel.count(":") >= 2:
            platform, tenant, channel = alert_channel.split(":", 2)
            poster = self._posters.get(platform)
            if poster is not None:
                try:
                    await poster.post(Target(platform, tenant, channel), Reply(
                        f"Admin alert: the {provider} provider reports "
                        f"{type(error).__name__}: {error.user_message}"))
                except Exception:
                    log.exception("could not post the admin alert")


__all__ = ["ALERT_EVERY_S", "Delivery", "target"]
