"""Getting a job's messages to its channel: status updates, the result (exactly once), take-downs.

Each platform's adapter registers one :class:`~bot.types.ChannelPoster`.

- **Status updates** (queued, running, progress) edit the job's status message, best effort:
  they are superseded by the next one, and the result settles the status message anyway.
- **The result** of a finished job, a **take-down** (Delete) and an **admin alert** are outbox
  rows (:mod:`bot.storage.outbox`), written before anything is sent. A row is tried at once
  and, when the platform fails, again by the deliverer in this process with exponential
  backoff and jitter, never before a ``Retry-After``. Each row runs on its own, so one
  undeliverable result (an archived channel) never holds up another. A poster records each
  finished platform step in the row (:class:`~bot.types.PostSteps`: Slack's uploaded files, a
  posted message), so a retry resumes instead of repeating, and every post carries a key that
  is stable across retries (Discord's ``nonce``). After ``give_up_after_s`` (or at once, for a
  failure retrying cannot cure) the row is marked undelivered, shown in Info and ``doctor``,
  and the admins get one alert.
- Rows are claimed with leases. This process is the only one on its data dir, so at start
  every lease is released, and finished jobs whose row was never written (a kill between the
  job's final state and its row) get one: whatever the moment of a kill, the next start
  delivers each result once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from bot import render, takedown
from bot.errors import DeliveryError
from bot.events import JobEvent
from bot.jobs import Job
from bot.pacing import Budget, StatusPacer
from bot.providers.base import ProviderError
from bot.status_refs import StatusRefs
from bot.storage.outbox import Kind, OutboxRow
from bot.types import FINAL_STATES, ChannelPoster, Reply, Target

if TYPE_CHECKING:
    from bot.context import Context

log = logging.getLogger(__name__)

ALERT_EVERY_S = 3600.0


@dataclass(frozen=True)
class DeliveryPolicy:
    backoff_s: float = 2.0  # the first retry; doubled each time, with +-20 % jitter
    backoff_cap_s: float = 300.0
    give_up_after_s: float = 6 * 3600.0  # then the row is "undelivered" and the admins hear
    lease_s: float = 60.0  # renewed while a row is being sent
    poll_s: float = 0.5  # how often the deliverer looks for due rows
    parallel: int = 8  # rows sent at once
    missing_every_s: float = 10.0  # shared store: how often to look for results with no row


def budget_for(ctx: Context, platform: str) -> Budget | None:
    """The status-edit budget of a chat platform (none for the web playground)."""
    if platform == "slack":
        sl = ctx.settings.slack
        return Budget(
            per_job=sl.status_edits_per_job,
            channel_per_min=sl.status_edits_per_channel_per_min,
            tenant_per_min=sl.status_edits_per_workspace_per_min,
        )
    if platform == "discord":
        dc = ctx.settings.discord
        return Budget(
            per_job=dc.status_edits_per_job,
            channel_per_min=dc.status_edits_per_channel_per_min,
            tenant_per_min=0.0,  # Discord's edit limit is per channel
        )
    return None


def target(job: Job) -> Target:
    return Target(job.platform, job.tenant, job.channel_id, job.thread_id, job.owner_id)


class _Steps:
    """A row's :class:`~bot.types.PostSteps`, written through to the database at each step."""

    def __init__(self, delivery: Delivery, row: OutboxRow) -> None:
        self._delivery = delivery
        self._row = row
        self._steps = dict(row.steps)

    @property
    def key(self) -> str:
        # Stable for this row across retries and restarts; short enough for Discord (25).
        return f"ib{self._row.id}{self._row.kind[0]}"

    def get(self, step: str) -> str | None:
        return self._steps.get(step)

    async def record(self, step: str, value: str) -> None:
        self._steps[step] = value
        await asyncio.shield(self._delivery._outbox.record_steps(self._row.id, self._steps))


class Delivery:
    def __init__(self, ctx: Context, policy: DeliveryPolicy | None = None) -> None:
        self._ctx = ctx
        self._jobs = ctx.store.jobs
        self._outbox = ctx.store.outbox
        self._posts = ctx.store.posts
        self._alerts = ctx.store.alerts
        self.policy = policy or DeliveryPolicy()
        if ctx.runner.shared:
            # Other deliverers wait out a dead one's lease on a row: as short as a job's
            # (renewed every third of it while a row is being sent).
            self.policy = replace(
                self.policy, lease_s=min(self.policy.lease_s, ctx.settings.jobs.lease_s)
            )
        self._posters: dict[str, ChannelPoster] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._refs = StatusRefs(self._jobs)
        self._in_flight: set[int] = set()
        self._wake = asyncio.Event()
        self.pacer = StatusPacer()
        self._loop_task: asyncio.Task[None] | None = None
        self._started = False
        self._closing = False

    # ---------------------------------------------------------------------- lifecycle
    def register_poster(self, platform: str, poster: ChannelPoster) -> None:
        """Called by an adapter once. Results that finished while the platform had no poster
        (jobs resumed at start run before the adapters are up) are delivered now; an adapter
        that can only post later (Discord, after login) calls :meth:`deliver_pending` again."""
        self._posters[platform] = poster
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._spawn(self.deliver_pending(platform))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _ensure_started(self) -> None:
        if self._started or self._closing:
            return
        self._started = True
        # The data-dir lock makes this the only deliverer: a lease still held was a dead
        # process's. (With a shared store other deliverers hold live leases: theirs run out.)
        # Finished jobs without a row died between their final state and it.
        if not self._ctx.runner.shared:
            await self._outbox.release_leases()
        await takedown.enqueue_missing(self)
        self._wake.set()
        self._loop_task = asyncio.get_running_loop().create_task(self._run_loop())

    async def aclose(self) -> None:
        """Stop the deliverer; rows still being sent keep their lease and resume at the next
        start (it releases every lease)."""
        self._closing = True
        self._wake.set()
        await self.pacer.aclose()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        await self._refs.aclose()
        if self._background:
            _, pending = await asyncio.wait(set(self._background), timeout=10)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # ------------------------------------------------------------------- the deliverer
    async def _run_loop(self) -> None:
        looked = self._ctx.clock()
        while not self._closing:
            try:
                await self._pass(None)
                # A shared store: another process may have died that way at any time, not
                # only before this one started.
                if self._ctx.runner.shared and self._ctx.clock() - looked >= (
                    self.policy.missing_every_s
                ):
                    looked = self._ctx.clock()
                    await takedown.enqueue_missing(self)
            except Exception:
                log.exception("the deliverer's pass failed; trying again")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.policy.poll_s)

    async def _pass(self, platform: str | None) -> None:
        """Claim what is due (for one platform, or every registered one) and send it; each row
        in its own task, so a slow or dead channel holds up nothing else."""
        free = self.policy.parallel - len(self._in_flight)
        platforms = [platform] if platform else list(self._posters)
        platforms = [p for p in platforms if p in self._posters]
        if free <= 0 or not platforms:
            return
        rows = await self._outbox.claim_due(
            now=self._ctx.clock(), lease_s=self.policy.lease_s, platforms=platforms, limit=free
        )
        tasks = [asyncio.get_running_loop().create_task(self._send(row)) for row in rows]
        for task in tasks:
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        if platform is not None and tasks:  # an explicit deliver_pending waits for its rows
            await asyncio.gather(*tasks, return_exceptions=True)

    async def deliver_pending(self, platform: str) -> None:
        """Send what is due for ``platform`` now (after a login, at registration)."""
        await self._ensure_started()
        await self._pass(platform)

    async def _send(self, row: OutboxRow) -> None:
        if row.id in self._in_flight:
            return
        self._in_flight.add(row.id)
        renew = asyncio.get_running_loop().create_task(self._renew(row.id))
        try:
            await self._attempt(row)
        except takedown.Later:
            await self._outbox.reschedule(row.id, self._ctx.clock() + 0.5, "waiting")
        except DeliveryError as exc:
            await self._failed(
                row, exc.reason, permanent=exc.permanent, retry_after=exc.retry_after
            )
        except Exception as exc:
            log.exception("delivering %s of job %s failed", row.kind, row.job_id)
            await self._failed(
                row, f"internal error ({type(exc).__name__})", permanent=False, retry_after=None
            )
        else:
            await self._outbox.complete(row.id, self._ctx.clock())
        finally:
            renew.cancel()
            self._in_flight.discard(row.id)

    async def _renew(self, row_id: int) -> None:
        while True:
            await asyncio.sleep(self.policy.lease_s / 3)
            await self._outbox.extend_lease(row_id, self._ctx.clock() + self.policy.lease_s)

    async def _failed(
        self, row: OutboxRow, reason: str, *, permanent: bool, retry_after: float | None
    ) -> None:
        now = self._ctx.clock()
        if permanent or now - row.created_at >= self.policy.give_up_after_s:
            await self._outbox.give_up(row.id, reason, now)
            log.error(
                "gave up delivering the %s of job %s to %s:%s: %s",
                row.kind,
                row.job_id,
                row.target.platform,
                row.target.channel_id,
                reason,
            )
            if row.kind != "alert":
                await self._alert_admins(
                    f"Undelivered: the {row.kind} of job {row.job_id} could not be posted to "
                    f"{row.target.platform} channel {row.target.channel_id} ({reason}).",
                    key=f"undelivered:{row.target.platform}:{row.target.channel_id}",
                )
            return
        delay = min(
            self.policy.backoff_cap_s, self.policy.backoff_s * 2 ** max(0, row.attempts - 1)
        )
        delay *= random.uniform(0.8, 1.2)
        if retry_after is not None:
            delay = max(delay, retry_after)
        log.warning(
            "delivering the %s of job %s failed (%s); retrying in %.1f s",
            row.kind,
            row.job_id,
            reason,
            delay,
        )
        await self._outbox.reschedule(row.id, now + delay, reason)
        self._wake.set()

    async def _attempt(self, row: OutboxRow) -> None:
        poster = self._posters.get(row.target.platform)
        if poster is None:
            raise takedown.Later
        steps = _Steps(self, row)
        if row.kind == "alert":
            if not steps.get("message"):
                ref = await poster.post(row.target, Reply(row.payload), steps)
                await steps.record("message", ref or "")
            return
        job = await self.job(row.job_id or "")
        if job is None:
            return
        if row.kind == "result":
            await self._post_result(poster, job, steps)
        else:
            await takedown.take_down(self, poster, job, steps)

    async def _post_result(self, poster: ChannelPoster, job: Job, steps: _Steps) -> None:
        if job.deleted:  # Delete came first: its take-down removes whatever was done
            return
        reply = await self._ctx.render(job)
        await self.pacer.settle(job.id)  # no paced status edit lands on top of the settled one
        # A poster with threads (Slack) keeps one compact line per job in the channel: the
        # job's status message, the root of a thread that holds its result and children.
        threads = bool(getattr(poster, "threads", False))
        if job.status_ref and steps.get("message") is None:
            # Settle the status message first, so it does not stay at "generating" above
            # the result. A status message someone deleted is no reason to lose the result.
            # (An edit is idempotent: it is not recorded as a step of its own, so nothing
            # comes between it and the post; the web playground shows both on one card.)
            settled = (
                render.thread_line(job, ())
                if threads and job.thread_id is None
                else render.settled_status(job, reply)
            )
            try:
                await poster.update(target(job), job.status_ref, settled)
            except DeliveryError as exc:
                if not exc.permanent:
                    raise
        ref = steps.get("message")
        if ref is None:
            where = replace(target(job), reply_to=await takedown.reply_to(self, job))
            ref = await poster.post(where, reply, steps) or ""
            await steps.record("message", ref)
        await self._jobs.set_result_ref(job.id, ref)
        if threads and job.thread_id:
            await takedown.update_thread_root(self, job)

    # --------------------------------------------------------------- what the core calls
    async def set_status_ref(self, job_id: str, ref: str) -> None:
        """Keep the reference of the job's status message, so later updates edit it: written
        soon, not awaited (:mod:`bot.status_refs`)."""
        self._refs.keep(job_id, ref)

    async def job(self, job_id: str) -> Job | None:
        """The job as stored, once its status reference (if one is being written) is in."""
        await self._refs.written(job_id)
        return await self._jobs.get(job_id)

    async def record_post(self, job: Job, ref: str | None, kind: str) -> None:
        """Another message posted for ``job`` (a Pick): Delete takes it down too."""
        if ref:
            await self._posts.add(job.id, job.platform, ref, kind)

    async def on_job_event(self, event: JobEvent) -> None:
        job = await self.job(event.job_id)
        if job is None or job.deleted:
            return
        if event.remote:
            # Another process ran it: refresh what only this process shows (its web pages);
            # the chat platforms' messages and the result are that process's (the outbox's).
            poster = self._posters.get(job.platform)
            if poster is not None and getattr(poster, "mirrors", False):
                await self._best_effort_update(job, await self._ctx.render(job))
            return
        if job.state in FINAL_STATES:
            sent = await self._enqueue_and_send(job_id=job.id, kind="result", target=target(job))
            if not sent and job.status_ref and job.result_ref and job.status_ref != job.result_ref:
                # submit's catch-up: the status message was sent after the result was posted
                await self._best_effort_update(
                    job, render.settled_status(job, await self._ctx.render(job))
                )
            return
        reply = await self._ctx.render(job)
        if event.progress is not None and job.state == "running":
            reply = replace(reply, progress=event.progress)
            if event.note:
                reply = replace(reply, text=f"{reply.text} - {event.note}")
        if event.position is not None and job.state == "queued":
            reply = replace(reply, position=event.position)
        budget = budget_for(self._ctx, job.platform)
        if budget is None:
            await self._best_effort_update(job, reply)
            return
        # Coalesced within the channel's budget: a position or progress edit is superseded by
        # the next; a change of state (a fresh job, running) keeps the last of the job's share.
        state_change = event.position is None and event.progress is None
        where = (job.platform, job.tenant, job.channel_id)

        async def send() -> None:
            await self._best_effort_update(job, reply)

        self.pacer.offer(job.id, budget, where, send, state_change=state_change)

    async def _best_effort_update(self, job: Job, reply: Reply) -> None:
        poster = self._posters.get(job.platform)
        if poster is None or not job.status_ref:
            return
        try:
            await poster.update(target(job), job.status_ref, reply)
        except DeliveryError as exc:  # superseded by the next update, settled by the result
            log.info("status update of job %s not shown: %s", job.id, exc.reason)

    async def _enqueue_and_send(
        self, *, job_id: str | None, kind: Kind, target: Target, payload: str = ""
    ) -> bool:
        """Write a row and send it at once, in the caller's task (a result lands before its
        job counts as settled); a failure goes to the deliverer's retries. A platform whose
        adapter is not up yet gets it when it registers. False when the row existed."""
        await self._ensure_started()
        up = target.platform in self._posters
        row = await self._outbox.enqueue(
            job_id=job_id,
            kind=kind,
            target=target,
            payload=payload,
            at=self._ctx.clock(),
            lease_s=self.policy.lease_s if up else 0.0,
        )
        if row is None:
            return False
        if up:
            await self._send(row)
        return True

    async def take_down(self, job: Job) -> None:
        """Delete: mark the job deleted; take down everything it put anywhere."""
        await self._jobs.mark_deleted(job.id)
        await self.pacer.settle(job.id)
        await self._enqueue_and_send(job_id=job.id, kind="takedown", target=target(job))

    async def undelivered_note(self, job_id: str) -> str:
        """For Info: "" when nothing is amiss."""
        row = await self._outbox.of_job(job_id, "result")
        if row is None or row.state == "done":
            return ""
        if row.state == "failed":
            return f"Undelivered: {row.last_error}"
        return f"Delivery pending (attempt {row.attempts}" + (
            f", last error: {row.last_error})" if row.last_error else ")"
        )

    # ----------------------------------------------------------------------- alerts
    async def on_alert(self, provider: str, error: ProviderError) -> None:
        if await self._alert_admins(
            f"Admin alert: the {provider} provider reports {type(error).__name__}: "
            f"{error.user_message}",
            key=f"{provider}:{type(error).__name__}",
        ):
            log.error(
                "ADMIN ALERT: provider %s: %s (%s). Jobs fail until an admin acts.",
                provider,
                type(error).__name__,
                error.status,
            )

    async def _send_alert(self, where: Target, text: str) -> None:
        await self._enqueue_and_send(job_id=None, kind="alert", target=where, payload=text)

    async def _alert_admins(self, text: str, *, key: str) -> bool:
        """At most once an hour per key, to the configured alert channel (an outbox row)."""
        if not await self._alerts.claim(key, self._ctx.clock(), ALERT_EVERY_S):
            return False
        alert_channel = self._ctx.settings.bot.alert_channel
        if alert_channel.count(":") >= 2:
            platform, tenant, channel = alert_channel.split(":", 2)
            await self._send_alert(Target(platform, tenant, channel), text)
        return True


__all__ = ["ALERT_EVERY_S", "Delivery", "DeliveryPolicy", "budget_for", "target"]
