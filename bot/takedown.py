"""What delivery does besides posting: where a result replies, a thread's root line, Delete's
take-down (every message of a job, then its files unless a live job still uses them), and the
results a dead process left without an outbox row.

Functions of :class:`bot.delivery.Delivery`'s state, split out to keep that class readable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from bot import render
from bot.errors import DeliveryError
from bot.jobs import Job, image_path
from bot.types import FINAL_STATES, ChannelPoster, PostSteps

if TYPE_CHECKING:
    from bot.delivery import Delivery

log = logging.getLogger(__name__)


class Later(Exception):
    """Not an error: try this row again shortly (a take-down waiting for its result)."""


async def reply_to(d: Delivery, job: Job) -> str | None:
    """The message a result answers, from the database: the result a child was started
    from (its parent's), else the job's own status message."""
    if job.parent_job_id:
        parent = await d.job(job.parent_job_id)
        if parent is not None and parent.result_ref and not parent.deleted:
            return parent.result_ref
    return job.status_ref


async def update_thread_root(d: Delivery, job: Job) -> None:
    """A child settled in a thread: the root's line counts it (best effort, paced)."""
    from bot.delivery import budget_for  # bot.delivery imports this module

    assert job.thread_id is not None
    await d._refs.all_written()  # the root is found by its status message's reference
    jobs = await d._jobs.in_thread(job.platform, job.tenant, job.channel_id, job.thread_id)
    root = next((j for j in jobs if j.status_ref == job.thread_id), None)
    if root is None or root.state not in FINAL_STATES:
        return
    line = render.thread_line(root, [j for j in jobs if j.id != root.id])
    budget = budget_for(d._ctx, root.platform)

    async def send() -> None:
        await d._best_effort_update(root, line)

    if budget is None:
        await send()
    else:  # coalesced in the channel's budget, but never capped: every child counts
        where = (root.platform, root.tenant, root.channel_id)
        unbounded = replace(budget, per_job=1 << 30)
        d.pacer.offer(root.id, unbounded, where, send, state_change=True)


async def take_down(d: Delivery, poster: ChannelPoster, job: Job, steps: PostSteps) -> None:
    """Delete: every message of the job (recorded step by step), then its files."""
    from bot.delivery import target  # bot.delivery imports this module

    result = await d._outbox.of_job(job.id, "result")
    refs: list[str] = [r for r in (job.status_ref, job.result_ref) if r]
    if result is not None:
        if result.state == "pending":
            if result.id in d._in_flight:
                raise Later  # it is being posted right now: take it down once it is up
            await d._outbox.complete(result.id, d._ctx.clock())  # never post it now
        refs += [r for r in (result.steps.get("message"), result.steps.get("undo")) if r]
    refs += [p.ref for p in await d._posts.of_job(job.id) if p.platform == job.platform]
    done = set(json.loads(steps.get("deleted") or "[]"))
    for ref in dict.fromkeys(refs):
        if ref in done:
            continue
        try:
            await poster.delete(target(job), ref)
        except DeliveryError as exc:
            if not exc.permanent:
                raise
            log.info("could not take down %s of job %s: %s", ref, job.id, exc.reason)
        done.add(ref)
        await steps.record("deleted", json.dumps(sorted(done)))
    await remove_files(d, job)


async def remove_files(d: Delivery, job: Job) -> None:
    """The job's images leave the disk unless a live job shows or starts from them."""
    files = [(img.sha256, img.ext) for img in await d._ctx.runner.load_images(job.id)]
    if job.grid_sha:
        files.append((job.grid_sha, job.grid_ext or "jpg"))
    if job.request.init_sha:  # an upload, or a parent's image a deleted parent left up
        files.append((job.request.init_sha, job.request.init_ext or "png"))
    for sha, ext in files:
        if await d._posts.sha_in_use(sha):
            continue
        path = image_path(d._ctx.settings.data_dir, sha, ext)
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(path.unlink)


async def enqueue_missing(d: Delivery) -> None:
    """Results of finished jobs that have no outbox row (their process died between the
    job's final state and the row) get one; enqueue is once per job, so a process racing
    the one that finished it costs nothing."""
    from bot.delivery import target  # bot.delivery imports this module

    for job_id in await d._outbox.missing_results():
        job = await d.job(job_id)
        if job is not None:
            await d._outbox.enqueue(
                job_id=job.id, kind="result", target=target(job), at=d._ctx.clock()
            )
