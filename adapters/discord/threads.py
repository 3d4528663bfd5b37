"""Discord threads: where an interaction happened, message references that name their
thread, and one thread per job when ``discord.threads`` is on.

A Discord thread is a channel of its own whose parent is the text channel. An interaction in
a thread becomes an invocation in the parent channel with the thread as ``thread_id`` (as
Slack's threads are), so a job started there keeps its messages in it.

With ``discord.threads`` the job's result opens a thread on the job's status message
(POST /channels/{channel}/messages/{message}/threads, "Start Thread from Message") and goes
into it; its buttons' children follow. Restart-proof without remembering anything: a thread
started from a message has that message's id, and the status message is the job's
``status_ref`` in the database. A message already holding a thread (a retry, a restart
between the two calls) answers 160004, which means the thread is there.

A poster reference is the message id when the message is in the target's own channel, else
``"<channel id>/<message id>"`` (a result or a pick in the job's thread), so an edit or a
Delete after a restart finds the message in the right channel.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Final

import discord

from bot.types import Reply

log = logging.getLogger(__name__)

THREAD_NAME_MAX = 100  # Start Thread from Message: name 1..100 characters
ARCHIVE_AFTER_MIN: Final = 1440  # one of 60, 1440, 4320, 10080: a day of quiet hides the thread
ALREADY_HAS_THREAD = 160004  # "A thread has already been created for this message"
# The thread cannot be: the bot lacks Create Public Threads (50013), the channel takes no
# threads (a DM, a thread itself, a forum: 50024), or the status message is gone (10008).
NO_THREAD_HERE = frozenset({50001, 50013, 50024, 10003, 10008})
_REF = re.compile(r"\A(?:([0-9]{1,21})/)?([0-9]{1,21})\Z")


def is_ref(ref: str | None) -> bool:
    return bool(ref) and _REF.match(ref or "") is not None


def split_ref(ref: str, channel_id: int) -> tuple[int, int]:
    """(channel, message) of a poster reference; a bare id is in ``channel_id``."""
    m = _REF.match(ref)
    if m is None:
        raise ValueError("not a Discord message reference")
    return (int(m.group(1)) if m.group(1) else channel_id), int(m.group(2))


def make_ref(channel_id: int, message_id: int, home: int) -> str:
    return str(message_id) if channel_id == home else f"{channel_id}/{message_id}"


def where(interaction: discord.Interaction[Any]) -> tuple[str, str | None]:
    """(channel, thread) of an interaction: a thread's parent channel and the thread."""
    channel = interaction.channel
    if isinstance(channel, discord.Thread) and channel.parent_id:
        return str(channel.parent_id), str(channel.id)
    return (str(interaction.channel_id) if interaction.channel_id is not None else ""), None


def thread_name(reply: Reply) -> str:
    """The job's prompt (or the reply's first line) on one line, at most 100 characters.
    A channel name is plain text: nothing in it is markdown or a mention."""
    text = reply.meta.get("prompt") or reply.text.partition("\n")[0]
    name = " ".join(text.split()) or "imagine"
    return name if len(name) <= THREAD_NAME_MAX else name[: THREAD_NAME_MAX - 1] + "…"


async def open_thread(
    http: discord.http.HTTPClient, channel_id: int, message_id: int, name: str
) -> int | None:
    """The thread on ``message_id``: started now, or found already there. None where Discord
    will not have one (the post then goes to the channel, replying as without threads).
    Anything else (5xx, 429, the network) is raised for the outbox to retry."""
    try:
        data = await http.start_thread_with_message(
            channel_id, message_id, name=name, auto_archive_duration=ARCHIVE_AFTER_MIN
        )
    except discord.HTTPException as exc:
        if exc.code == ALREADY_HAS_THREAD:
            return message_id  # a thread started from a message has the message's id
        if exc.code in NO_THREAD_HERE or exc.status in (403, 404):
            log.warning(
                "no thread for a job in channel %s (HTTP %s, code %s); posting in the channel",
                channel_id,
                exc.status,
                exc.code,
            )
            return None
        raise
    return int(data.get("id") or message_id)


__all__ = ["is_ref", "make_ref", "open_thread", "split_ref", "thread_name", "where"]
