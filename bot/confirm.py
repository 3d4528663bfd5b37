"""Ask first: a command that expands to many jobs waits for its owner's Confirm.

``/imagine a {red, blue, green} car`` is three jobs. Over ``grammar.confirm_over`` of them the
core stores the command (:class:`~bot.storage.records.PendingCommand`, with its input image
already in the image store) and answers, to its owner only, what it would cost with a Confirm
and a Cancel button. Nothing is charged or queued until Confirm; the buttons carry only the
pending id (``confirm:<id>``), so they work after a restart, once, and for the owner alone.
The CLI says the same and takes ``--yes``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING

from bot.admission import new_job_id
from bot.errors import JobNotFound, UserError
from bot.jobs import image_path
from bot.render import plural
from bot.storage.records import PendingCommand
from bot.types import Action, Button, Invocation, Reply, Responder

if TYPE_CHECKING:
    from bot.context import Context
    from bot.delivery import Delivery

CONFIRM, DISMISS = "confirm", "dismiss"
VERBS = frozenset({CONFIRM, DISMISS})
# A confirmation older than this is refused (the quota, the queue and the person's mind have
# moved on); rows twice as old are deleted when a new one is written.
EXPIRES_S = 30 * 60.0


def needs_asking(ctx: Context, inv: Invocation, jobs: int) -> bool:
    return jobs > ctx.settings.grammar.confirm_over and not inv.confirmed


async def ask(
    ctx: Context,
    inv: Invocation,
    responder: Responder,
    *,
    jobs: int,
    images: int,
    init: tuple[str, str] | None,
) -> None:
    """Store the command and ask its owner (ephemeral) whether to run it."""
    now = ctx.clock()
    actor = inv.actor
    pending = PendingCommand(
        id=new_job_id(),
        platform=actor.platform,
        tenant=actor.tenant,
        channel_id=inv.channel_id,
        owner_id=actor.user_id,
        text=inv.text,
        init_sha=init[0] if init else None,
        init_ext=init[1] if init else None,
        created_at=now,
    )
    await ctx.store.confirmations.forget_before(now - 2 * EXPIRES_S)
    await ctx.store.confirmations.put(pending)
    await responder.send(
        Reply(
            f"Your prompt expands to {plural(jobs, 'job')}: {plural(images, 'image')} from "
            "your quota. Run them all? Nothing is charged until you confirm.",
            buttons=(
                Button(
                    f"Run {plural(jobs, 'job')}", Action(CONFIRM, pending.id).encode(), "primary"
                ),
                Button("Cancel", Action(DISMISS, pending.id).encode(), "secondary"),
            ),
            ephemeral=True,
            meta={"confirm": pending.id, "jobs": str(jobs), "images": str(images)},
        )
    )


async def press(
    ctx: Context, delivery: Delivery, inv: Invocation, responder: Responder, action: Action
) -> None:
    """Confirm or Cancel: run the stored command once, or forget it."""
    from bot.imagine import imagine  # imagine asks through this module

    store = ctx.store.confirmations
    pending = await store.get(action.job_id)
    actor = inv.actor
    if pending is None or (pending.platform, pending.tenant) != (actor.platform, actor.tenant):
        raise JobNotFound("That button has expired. Send the command again.")
    if pending.owner_id != actor.user_id:
        raise UserError("Only the person who sent this command can confirm it.")
    now = ctx.clock()
    if now - pending.created_at > EXPIRES_S:
        raise UserError("That confirmation has expired; nothing was charged. Send it again.")
    if not await store.use(pending.id, now):
        raise UserError("That was already answered.")
    if action.verb == DISMISS:
        await responder.send(Reply("Cancelled; nothing was charged.", ephemeral=True))
        return
    init_image = None
    if pending.init_sha:
        path = image_path(ctx.settings.data_dir, pending.init_sha, pending.init_ext or "png")
        try:
            init_image = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise UserError(
                "The image that went with this command is no longer here. Send it again."
            ) from None
    run = dataclasses.replace(
        inv,
        command="imagine",
        text=pending.text,
        action="",
        fields={},
        init_image=init_image,
        confirmed=True,
    )
    try:
        await imagine(ctx, delivery, run, responder)
    except BaseException:
        await store.unuse(pending.id)  # refused (no quota, a full queue): may be pressed again
        raise


__all__ = ["CONFIRM", "DISMISS", "EXPIRES_S", "VERBS", "ask", "needs_asking", "press"]
