"""``/imagine``: parse, store an input image, build the specs, reserve and queue, show the status.

:func:`submit` is shared with the verbs that start a child job (Refine, Vary, Reroll): the jobs
and their quota reservation are written in one transaction by the runner, then each job's
status message is sent and its reference kept, so later updates edit it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from bot import confirm, defaults, grammar, images, reproduce, specs
from bot.events import JobEvent
from bot.jobs import JobSpec
from bot.providers.base import NotSupported
from bot.render import plural
from bot.types import Invocation, Reply, Responder

if TYPE_CHECKING:
    from bot.context import Context
    from bot.delivery import Delivery

log = logging.getLogger(__name__)


async def imagine(ctx: Context, delivery: Delivery, inv: Invocation, responder: Responder) -> None:
    from bot import team  # settings, info, tree, avatar: the words that are not a prompt

    if await team.route(ctx, delivery, inv, responder):
        return
    result = grammar.parse(inv.text, ctx.limits)
    if isinstance(result, grammar.HelpRequest):
        text = f"{result.text}\n{ctx.verbs.help_text(ctx.capabilities)}\n{team.help_text()}"
        await responder.send(Reply(text, ephemeral=True))
        return
    mine, channel = await defaults.load(ctx, inv.actor, inv.channel_id)
    merged = [
        defaults.merge(
            r,
            mine,
            channel,
            ctx.limits,
            providers=ctx.providers.names(),
            keep_size=inv.init_image is not None,
        )
        for r in result.requests
        if r.from_job is None
    ]
    # No flag names a provider, so every request of one command goes to the same one.
    name = next((m.provider for m in merged if m.provider), None) or ctx.provider()[0]
    provider = ctx.providers.get(name)
    init_sha = init_ext = None
    init_size = None
    if inv.init_image is not None and merged:
        if not provider.capabilities.img2img:  # before anything is stored or charged
            raise NotSupported(f"{provider.label} cannot work from an input image.")
        init_sha, init_ext, init_size = await store_input(ctx, inv.init_image)
    job_specs = [
        await reproduce.from_job(ctx, inv, r.from_job)
        for r in result.requests
        if r.from_job is not None
    ]
    for m in merged:
        r = m.request
        spec = specs.build_spec(
            r,
            kind="imagine",
            provider_name=name,
            caps=provider.capabilities,
            provider_label=provider.label,
            styles=ctx.styles,
            init_sha=init_sha,
            init_ext=init_ext,
            init_size=init_size,
            strength=r.strength if r.strength is not None else ctx.settings.actions.refine_strength,
        )
        remix = spec.remix or m.remix  # --remix, or a saved default
        display = replace(spec.display, remix=remix, sources=m.sources)
        job_specs.append(replace(spec, remix=remix, display=display))
    total = sum(s.request.n for s in job_specs)
    if confirm.needs_asking(ctx, inv, len(job_specs)):
        # Over the configured number of jobs, nothing runs before the owner says so.
        init = (init_sha, init_ext) if init_sha and init_ext else None
        await confirm.ask(ctx, inv, responder, jobs=len(job_specs), images=total, init=init)
        return
    if len(job_specs) > 1 and not inv.confirmed:
        # The cost is told before anything runs (a Confirm told it already).
        await responder.send(
            Reply(
                f"Your prompt expands to {plural(len(job_specs), 'job')} "
                f"({plural(total, 'image')} from your quota; the cap is "
                f"{ctx.limits.max_permutations} jobs).",
                ephemeral=True,
            )
        )
    await submit(ctx, delivery, inv, responder, job_specs)


async def store_input(ctx: Context, data: bytes) -> tuple[str, str, tuple[int, int]]:
    """An uploaded starting picture through the one image gate, stored content-addressed:
    its sha256, extension and size, as a spec's ``init_*`` names them. Raises
    :class:`bot.images.ImageRejected` (a friendly message) when the bytes are no usable image."""
    png = await images.normalize_input(data, ctx.image_limits)
    stored = await images.store_generated(
        ctx.settings.data_dir, png, {"source": "upload"}, ctx.image_limits
    )
    return stored.sha256, stored.path.suffix.lstrip("."), (stored.width, stored.height)


async def submit(
    ctx: Context,
    delivery: Delivery,
    inv: Invocation,
    responder: Responder,
    job_specs: Sequence[JobSpec],
) -> None:
    jobs = await ctx.runner.submit(
        inv.actor, inv.channel_id, inv.thread_id, job_specs, interaction_id=inv.interaction_id
    )
    for job in jobs:
        job_id = job.id
        try:
            ref = await responder.send(await ctx.render(job))
        except Exception:
            # Accepted and charged already: the result still reaches the channel through
            # the poster, so this must not become "nothing was charged".
            log.exception("could not show the status of job %s", job_id)
            continue
        if ref is not None:
            await delivery.set_status_ref(job_id, ref)
            # The job may have started while we posted; show its current state.
            if ctx.runner.position(job_id) is None:
                await delivery.on_job_event(JobEvent(job_id))


__all__ = ["imagine", "submit"]
