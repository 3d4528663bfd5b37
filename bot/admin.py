"""``/admin``: a table of commands, each with its arguments, help and action.

The usage text is generated from the table, so a new command is one :class:`Command` entry.
Every successful command is written to the admin log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.errors import NotAllowed, UserError
from bot.quotas import user_scope, workspace_scope
from bot.render import plural
from bot.types import Invocation, Reply, Responder

if TYPE_CHECKING:
    from bot.context import Context


@dataclass(frozen=True)
class Arg:
    name: str  # as the usage shows it: USER, DAILY, on|off
    kind: str = "user"  # user | int | choice | text (the rest of the line)
    optional: bool = False
    choices: tuple[str, ...] = ()


Value = str | int | None


def _opt_int(v: Value) -> int | None:
    return None if v is None else int(v)


@dataclass(frozen=True)
class Command:
    name: str
    args: tuple[Arg, ...]
    help: str
    run: Callable[[Context, Invocation, Sequence[Value]], Awaitable[str]]

    @property
    def usage(self) -> str:
        parts = [f"[{a.name}]" if a.optional else a.name for a in self.args]
        return " ".join([f"/admin {self.name}", *parts])


# Every form a platform writes a user in: Slack <@U123> and <@U123|bob>, Discord <@123> and
# <@!123>. A plain @name is only a name: the platforms do not say whom it means.
_MENTION = re.compile(r"<@!?([A-Za-z0-9]+)(?:\|[^>]*)?>")
_USER_ID = {
    "slack": re.compile(r"[UW][A-Z0-9]{2,20}"),
    "discord": re.compile(r"[0-9]{15,21}"),
}
_PLATFORM = {"slack": "Slack", "discord": "Discord"}


def resolve_user(token: str, platform: str) -> str:
    """The user id ``token`` names on ``platform``, or a UserError saying how to name them.

    Never a guess: an admin command reports success only for a user it really resolved.
    """
    m = _MENTION.fullmatch(token)
    uid = m.group(1) if m else token.removeprefix("@")
    if not uid:
        raise UserError("Name a user, e.g. /admin grant @alice 10")
    shape = _USER_ID.get(platform)
    if shape is None:  # the playground and the CLI: a user is their name
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", uid):
            raise UserError(f"{token} is not a user name here.")
        return uid
    if shape.fullmatch(uid):
        return uid
    where = _PLATFORM.get(platform, platform)
    raise UserError(
        f"I could not tell who {token} is. Mention them so {where} links the name (type @ and "
        f"pick them from the list), or give their {where} user ID."
    )


def _int(token: str, what: str) -> int:
    if not token.isdigit():
        raise UserError(f"{what} must be a whole number (got {token}).")
    return int(token)


def _bind(cmd: Command, words: Sequence[str], platform: str) -> list[Value] | None:
    """The command's arguments from ``words``, or None when the shape does not fit."""
    required = sum(1 for a in cmd.args if not a.optional)
    rest = bool(cmd.args) and cmd.args[-1].kind == "text"
    if len(words) < required or (not rest and len(words) > len(cmd.args)):
        return None
    out: list[Value] = []
    for i, arg in enumerate(cmd.args):
        if arg.kind == "text":
            out.append(" ".join(words[i:]))
            break
        if i >= len(words):
            out.append(None)
            continue
        word = words[i]
        if arg.kind == "choice":
            if word.lower() not in arg.choices:
                return None
            out.append(word.lower())
        elif arg.kind == "int":
            out.append(_int(word, arg.name))
        else:
            out.append(resolve_user(word, platform))
    return out


# --------------------------------------------------------------------------- the commands
def _limits_text(daily: int, monthly: int | None) -> str:
    return f"daily limit {daily or 'unlimited'}" + (
        f", monthly {monthly or 'unlimited'}." if monthly is not None else "."
    )


async def _limit(ctx: Context, inv: Invocation, a: Sequence[Value]) -> str:
    uid, daily, m = str(a[0]), int(a[1] or 0), _opt_int(a[2])
    actor = inv.actor
    await ctx.quotas.set_limits(user_scope(actor.platform, actor.tenant, uid), daily, m)
    return f"{uid}: {_limits_text(daily, m)}"


async def _workspace_limit(ctx: Context, inv: Invocation, a: Sequence[Value]) -> str:
    daily, m = int(a[0] or 0), _opt_int(a[1])
    await ctx.quotas.set_limits(workspace_scope(inv.actor.platform, inv.actor.tenant), daily, m)
    return f"Workspace daily limit {daily or 'unlimited'}."


async def _grant(ctx: Context, inv: Invocation, a: Sequence[Value]) -> str:
    uid, units = str(a[0]), int(a[1] or 0)
    await ctx.quotas.grant(user_scope(inv.actor.platform, inv.actor.tenant, uid), units)
    return f"Granted {uid} {plural(units, 'extra image')}."


async def _reset(ctx: Context, inv: Invocation, a: Sequence[Value]) -> str:
    uid = str(a[0])
    await ctx.quotas.reset(user_scope(inv.actor.platform, inv.actor.tenant, uid))
    return f"Reset {uid}'s usage for today and this month."


async def _block(ctx: Context, inv: Invocation, a: Sequence[Value]) -> str:
    uid = str(a[0])
    await ctx.quotas.block(user_scope(inv.actor.platform, inv.actor.tenant, uid), str(a[1]))
    return f"Blocked {uid}."


async def _unblock(ctx: Context, inv: Invocation, a: Sequence[Value]) -> str:
    uid = str(a[0])
    await ctx.quotas.unblock(user_scope(inv.actor.platform, inv.actor.tenant, uid))
    return f"Unblocked {uid}."


async def _collab(ctx: Context, inv: Invocation, a: Sequence[Value]) -> str:
    on = a[0] == "on"
    await ctx.store.channels.set_collaborative(
        inv.actor.platform, inv.actor.tenant, inv.channel_id, on
    )
    return (
        "Anyone in this channel may now continue results."
        if on
        else "Only a result's owner (and admins) may continue it here."
    )


async def _avatar_style(ctx: Context, inv: Invocation, a: Sequence[Value]) -> str:
    from bot.avatars import parse_style, set_style

    return await set_style(ctx, inv, str(a[0]), parse_style(str(a[1] or ""), ctx.limits))


_USER, _DAILY = Arg("USER"), Arg("DAILY", "int")
_MONTHLY = Arg("MONTHLY", "int", optional=True)
COMMANDS: tuple[Command, ...] = (
    Command("limit", (_USER, _DAILY, _MONTHLY), "set a user's limits (0 = unlimited)", _limit),
    Command(
        "workspace-limit", (_DAILY, _MONTHLY), "the whole workspace's limits", _workspace_limit
    ),
    Command("grant", (_USER, Arg("UNITS", "int")), "extra images in the current windows", _grant),
    Command("reset", (_USER,), "forget the current windows' usage", _reset),
    Command(
        "block",
        (_USER, Arg("reason", "text", optional=True)),
        "stop a user from generating",
        _block,
    ),
    Command("unblock", (_USER,), "let a blocked user generate again", _unblock),
    Command(
        "collab",
        (Arg("on|off", "choice", choices=("on", "off")),),
        "may others continue results in this channel?",
        _collab,
    ),
    Command(
        "avatar-style",
        (
            Arg("channel|workspace", "choice", choices=("channel", "workspace")),
            Arg("STYLE...", "text", optional=True),
        ),
        "/imagine avatar's look: STYLE|none [seed=N] [suffix]; off removes it",
        _avatar_style,
    ),
)


def usage(commands: Sequence[Command] = COMMANDS) -> str:
    width = max(len(c.usage) for c in commands) + 2
    return "\n".join(["Admin commands:"] + [f"{c.usage.ljust(width)}{c.help}" for c in commands])


async def run(ctx: Context, inv: Invocation, responder: Responder) -> None:
    if not ctx.access.is_admin(inv.actor):
        raise NotAllowed("Only admins can use /admin.")
    words = inv.text.split()
    if not words or words[0] == "help":
        await responder.send(Reply(usage(), ephemeral=True))
        return
    name, args = words[0].lower(), words[1:]
    cmd = next((c for c in COMMANDS if c.name == name), None)
    bound = _bind(cmd, args, inv.actor.platform) if cmd is not None else None
    if cmd is None or bound is None:
        raise UserError("I did not understand that.\n" + usage())
    message = await cmd.run(ctx, inv, bound)
    await ctx.store.admin_log.append(inv.actor.key, name, json.dumps(args), ctx.clock())
    await responder.send(Reply(message, ephemeral=True))


__all__ = ["COMMANDS", "Arg", "Command", "run", "usage"]
