"""The ``/imagine`` words that are not a prompt: ``settings``, ``info``, ``tree``, ``avatar``.

:func:`route` looks at the first word; each entry of :data:`SUBCOMMANDS` says when the rest
of the line is its own (``/imagine settings of a castle`` is still a prompt: only ``settings``
alone, ``settings reset`` or ``settings key=value ...`` are the command), runs it, and gives
its line of ``/imagine help``. Every surface reaches these through the handler as text, so the
Discord, Slack and web forms all work the same way.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot import defaults, render
from bot.errors import NotAllowed, UserError
from bot.reproduce import load_visible
from bot.types import Button, Form, FormField, Invocation, Reply, Responder

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
        edit = [Button("Edit my defaults", FORM_ACTIONS["user"], "primary")]
        if ctx.access.is_admin(actor):
            edit.append(Button("Edit the channel's", FORM_ACTIONS["channel"]))
        await responder.send(Reply(_shown(mine, chan), ephemeral=True, buttons=tuple(edit)))
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


# The settings form: a button under "/imagine settings" opens it (a click can open a modal on
# every platform; a slash command on Discord cannot), and its submit comes back here. Each
# action fits the button codec; neither names a job.
FORM_ACTIONS = {"user": "settings:yourdefaults", "channel": "settings:channeldefts"}
_UNSET = "default"


def _form(ctx: Context, scope: str, current: defaults.Defaults) -> Form:
    def text(value: object) -> str:
        return _UNSET if value is None else str(value)

    engine = " ".join(x for x in (current.provider, current.model) if x) or _UNSET
    remix = _UNSET if current.remix is None else ("on" if current.remix else "off")
    return Form(
        title="Channel defaults" if scope == "channel" else "Your defaults",
        action=FORM_ACTIONS[scope],
        submit_label="Save",
        fields=(
            FormField(
                "n",
                "Images per job (empty: default)",
                "" if current.n is None else str(current.n),
                kind="number",
                min_value=1,
                max_value=ctx.limits.max_images,
            ),
            FormField("ar", "Aspect ratio W:H, or default", text(current.ar)),
            FormField("style", "Style name, or default", text(current.style)),
            FormField("engine", "Provider and/or model, or default", engine),
            FormField("remix", "Remix: on, off or default", remix),
        ),
    )


def _form_words(ctx: Context, fields: Mapping[str, str]) -> list[str]:
    """The form's values as ``key=value`` words (an empty or "default" value clears)."""

    def value(name: str) -> str:
        raw = " ".join(fields.get(name, "").split())
        return raw if raw and raw.lower() != _UNSET else "none"

    words = [f"{k}={value(k)}" for k in ("n", "ar", "style", "remix")]
    engine = value("engine").split()
    provider = engine[0] if engine and engine[0] in ctx.providers.names() else None
    model = " ".join(engine[1:] if provider else engine)
    words.append(f"provider={provider or 'none'}")
    if " " in model:
        raise UserError("A model name is one word here; type /imagine settings model=NAME.")
    words.append(f"model={model}" if model and model != "none" else "model=none")
    return words


async def press(ctx: Context, inv: Invocation, responder: Responder) -> bool:
    """A settings button or form submit; False for every other button."""
    scope = next((k for k, v in FORM_ACTIONS.items() if v == inv.action), None)
    if scope is None:
        return False
    actor = inv.actor
    if scope == "channel" and not ctx.access.is_admin(actor):
        raise NotAllowed("Only admins can change this channel's defaults.")
    subject = inv.channel_id if scope == "channel" else actor.user_id
    mine, chan = await defaults.load(ctx, actor, inv.channel_id)
    current = chan if scope == "channel" else mine
    if "ar" not in inv.fields:  # the click: open the form, prefilled
        await responder.send(
            Reply("Edit defaults", ephemeral=True, form=_form(ctx, scope, current))
        )
        return True
    words = _form_words(ctx, inv.fields)
    given, cleared = defaults.parse_assignments(words, ctx.limits, ctx.providers.names())
    updated = defaults.Defaults().updated(given, cleared)
    await defaults.save(ctx, actor, scope, subject, updated)
    if scope == "channel":
        await ctx.store.admin_log.append(
            actor.key, "channel-defaults", updated.to_json(), ctx.clock()
        )
    whose = "This channel's" if scope == "channel" else "Your"
    await responder.send(Reply(f"{whose} defaults: {updated.describe()}.", ephemeral=True))
    return True


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
_JOB_SHAPE = re.compile(r"[a-km-np-z2-9]{12}")  # bot.jobs.new_job_id's alphabet


def _one_job(rest: Sequence[str]) -> bool:
    """``info JOB``: one word shaped like a job id (``/imagine tree house`` is a prompt)."""
    return len(rest) == 1 and _JOB_SHAPE.fullmatch(rest[0].lower()) is not None


async def _is_prose(ctx: Context, word: str) -> bool:
    """A twelve-letter word without a digit that names no job is prose ("tree construction");
    one with a digit, or a job that exists, is a job id, and a mistyped one gets an answer."""
    return not any(c.isdigit() for c in word) and await ctx.runner.load(word.lower()) is None


async def _info(
    ctx: Context, delivery: Delivery, inv: Invocation, responder: Responder, rest: Sequence[str]
) -> None:
    job = await load_visible(ctx, inv, rest[0].lower(), _INFO_REFUSAL)
    imgs = await ctx.runner.load_images(job.id) if job.state == "done" else []
    text = render.info_text(job, imgs, ctx.provider_label(job.provider))
    note = await delivery.undelivered_note(job.id)
    await responder.send(Reply(text + (f"\n{note}" if note else ""), ephemeral=True))


async def _tree(
    ctx: Context, delivery: Delivery, inv: Invocation, responder: Responder, rest: Sequence[str]
) -> None:
    from bot.lineage_image import post_tree

    await post_tree(ctx, delivery, inv, responder, rest[0].lower())


async def _avatar(
    ctx: Context, delivery: Delivery, inv: Invocation, responder: Responder, rest: Sequence[str]
) -> None:
    from bot.avatars import avatar_command

    await avatar_command(ctx, delivery, inv, responder, rest)


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand(
        "settings",
        "/imagine settings [n= ar= style= provider= model= remix=]|reset",
        "your defaults",
        _claims_settings,
        _settings,
    ),
    Subcommand(
        "info",
        "/imagine info JOB",
        "how to repeat a job",
        _one_job,
        _info,
    ),
    Subcommand("tree", "/imagine tree JOB", "a job's family tree", _one_job, _tree),
    Subcommand(
        "avatar",
        "/imagine avatar TEXT | @user ...",
        "portraits in the team's style",
        lambda rest: True,
        _avatar,
    ),
)


def help_text() -> str:
    # Usages only: /imagine help must fit one Discord message; each answers its own mistakes.
    return "Also: " + "; ".join(s.usage for s in SUBCOMMANDS).rstrip(".") + "."


async def route(ctx: Context, delivery: Delivery, inv: Invocation, responder: Responder) -> bool:
    """Run the subcommand ``inv.text`` names; False when the text is a prompt."""
    words = inv.text.split()
    if not words:
        return False
    sub = next((s for s in SUBCOMMANDS if s.name == words[0].lower()), None)
    if sub is None or not sub.claims(words[1:]):
        return False
    if sub.claims is _one_job and await _is_prose(ctx, words[1]):
        return False
    if inv.init_image is not None:
        raise UserError(f"/imagine {sub.name} takes no image.")
    await sub.run(ctx, delivery, inv, responder, words[1:])
    return True


__all__ = ["FORM_ACTIONS", "SUBCOMMANDS", "Subcommand", "help_text", "press", "route"]
