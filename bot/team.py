"""The ``/imagine`` words that are not a prompt: ``settings``, ``info``, ``tree``, ``avatar``.

:func:`route` looks at the first word; each entry of :data:`SUBCOMMANDS` says when the rest
of the line is its own (``/imagine settings of a castle`` is still a prompt: only ``settings``
alone, ``settings reset`` or ``settings key=value ...`` are the command), runs it, and gives
its line of ``/imagine help``. Every surface reaches these through the handler as text, so the
Discord, Slack and web forms all work the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot import defaults, render
from bot.errors import NotAllowed, UserError
from bot.reproduce import load_visible
from bot.types import Invocation, Reply, Responder

if TYPE_CHECKING:
    from bot.context import Context
    from bot.delivery import Delivery

Run = Callable[["Context", "Delivery", Invocation, Responder, Sequence[str]], Awaitable[None]]
_INFO_REFUSAL = (
    "Only {owner} can see this job's details here: this channel keeps results to their owner."
)


@dataclass(frozen=True)
class Subcommand:
    name: str
    usage: str
    help: str
    claims: Callable[[Sequence[str]], bool]  # the words after the name
    run: Run


# -------------------------------------------------------------------------------- settings
def _claims_settings(rest: Sequence[str]) -> bool:
    return not rest or rest[0].lower() in ("reset", "--channel") or "=" in rest[0]


async def _settings(
    ctx: Context, delivery: Delivery, inv: Invocation, responder: Responder, rest: Sequence[str]
) -> None:
    words = list(rest)
    channel = "--channel" in (w.lower() for w in words)
    words = [w for w in words if w.lower() != "--channel"]
    actor = inv.actor
    if channel and words and not ctx.access.is_admin(actor):
        raise NotAllowed("Only admins can change this channel's defaults.")
    scope, subject = ("channel", inv.channel_id) if channel else ("user", actor.user_id)
    mine, chan = await defaults.load(ctx, actor, inv.channel_id)
    current = chan if channel else mine
    whose = "This channel's" if channel else "Your"
    if not words:
        await responder.send(Reply(_shown(mine, chan), ephemeral=True))
        return
    if [w.lower() for w in words] == ["reset"]:
        await defaults.save(ctx, actor, scope, subject, defaults.Defaults())
        await responder.send(Reply(f"{whose} defaults are cleared.", ephemeral=True))
        return
    given, cleared = defaults.parse_assignments(words, ctx.limits, ctx.providers.names())
    updated = current.updated(given, cleared)
    await defaults.save(ctx, actor, scope, subject, updated)
    if channel:
        await ctx.store.admin_log.append(
            actor.key, "channel-defaults", updated.to_json(), ctx.clock()
        )
    await responder.send(
        Reply(
            f"{whose} defaults: {updated.describe()}. Flags you type still win.",
            ephemeral=True,
        )
    )


def _shown(mine: defaults.Defaults, chan: defaults.Defaults) -> str:
    return "\n".join(
        [
            f"Your defaults: {mine.describe()}",
            f"This channel's defaults: {chan.describe()}",
            "A flag you type wins, then your default, then the channel's, then the built-in.",
            "Change: /imagine settings n=2 ar=3:2 style=anime remix=on (key=none clears one); "
            "/imagine settings reset; admins add --channel for the channel's.",
        ]
    )


# ------------------------------------------------------------------------------ info, tree
def _one_job(rest: Sequence[str]) -> bool:
    return len(rest) == 1


async def _info(
    ctx: Context, delivery: Delivery, inv: Invocation, responder: Responder, rest: Sequence[str]
) -> None:
    job = await load_visible(ctx, inv, rest[0], _INFO_REFUSAL)
    imgs = await ctx.runner.load_images(job.id) if job.state == "done" else []
    text = render.info_text(job, imgs, ctx.provider_label(job.provider))
    note = await delivery.undelivered_note(job.id)
    await responder.send(Reply(text + (f"\n{note}" if note else ""), ephemeral=True))


async def _tree(
    ctx: Context, delivery: Delivery, inv: Invocation, responder: Responder, rest: Sequence[str]
) -> None:
    from bot.lineage_image import post_tree

    await post_tree(ctx, delivery, inv, responder, rest[0])


async def _avatar(
    ctx: Context, delivery: Delivery, inv: Invocation, responder: Responder, rest: Sequence[str]
) -> None:
    from bot.avatars import avatar_command

    await avatar_command(ctx, delivery, inv, responder, rest)


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand(
        "settings",
        "/imagine settings [key=value ...] [--channel] | reset",
        "your defaults (n, ar, style, provider, model, remix); alone: show them",
        _claims_settings,
        _settings,
    ),
    Subcommand(
        "info",
        "/imagine info JOB",
        "a job's parameters and the line that repeats it",
        _one_job,
        _info,
    ),
    Subcommand(
        "tree", "/imagine tree JOB", "post a job's family tree as one picture", _one_job, _tree
    ),
    Subcommand(
        "avatar",
        "/imagine avatar DESCRIPTION | @user ...",
        "square portraits in the channel's avatar style; one per mentioned member",
        lambda rest: True,
        _avatar,
    ),
)


def help_text() -> str:
    width = max(len(s.usage) for s in SUBCOMMANDS) + 2
    return "\n".join(["More:", *(f"  {s.usage.ljust(width)}{s.help}" for s in SUBCOMMANDS)])


async def route(ctx: Context, delivery: Delivery, inv: Invocation, responder: Responder) -> bool:
    """Run the subcommand ``inv.text`` names; False when the text is a prompt."""
    words = inv.text.split()
    if not words:
        return False
    sub = next((s for s in SUBCOMMANDS if s.name == words[0].lower()), None)
    if sub is None or not sub.claims(words[1:]):
        return False
    if inv.init_image is not None:
        raise UserError(f"/imagine {sub.name} takes no image.")
    await sub.run(ctx, delivery, inv, responder, words[1:])
    return True


__all__ = ["SUBCOMMANDS", "Subcommand", "help_text", "route"]
