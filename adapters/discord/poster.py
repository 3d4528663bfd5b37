"""The Discord poster: results, status edits and take-downs posted long after the interaction
(the core's ChannelPoster), through discord.py's HTTP client."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import aiohttp
import discord

from adapters.discord.render import (
    content,
    files_for,
    no_mentions,
    view_for,
)
from adapters.discord.threads import is_ref, make_ref, open_thread, split_ref, thread_name
from bot.errors import DeliveryError
from bot.types import PostSteps, Reply, Target

log = logging.getLogger(__name__)


async def _message_kwargs(reply: Reply) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"content": content(reply), "allowed_mentions": no_mentions()}
    files = await files_for(reply.images)
    if files:
        kwargs["files"] = files
    view = view_for(reply.buttons)
    if view is not None:
        kwargs["view"] = view
    return kwargs


# --------------------------------------------------------------------------------- poster
class DiscordPoster:
    """The core's :class:`~bot.types.ChannelPoster` for Discord: ordinary channel messages
    with the bot token, so job results land whatever happened to the interaction."""

    def __init__(self, client: discord.Client, *, threads: bool = False) -> None:
        self._client = client
        # discord.threads: each job's result opens a thread on its status message (see
        # :mod:`.threads`); the core then keeps the status message one line, as on Slack.
        self.threads = threads

    async def post(
        self, target: Target, reply: Reply, steps: PostSteps | None = None
    ) -> str | None:
        if reply.ephemeral:
            log.debug("not posting an ephemeral reply to a channel")
            return None
        kwargs = await _message_kwargs(reply)
        if steps is not None:
            # discord.py sends enforce_nonce with a nonce: a retry of a post whose answer was
            # lost (a kill, a timeout) returns the message already created, not a second one.
            kwargs["nonce"] = steps.key[:25]
        home = int(target.thread_id or target.channel_id)
        channel = home
        reply_to = target.reply_to or ""
        answers = split_ref(reply_to, home) if is_ref(reply_to) else None
        if self.threads and target.thread_id is None and answers is not None:
            with _delivery_errors(f"start a thread in channel {answers[0]}"):
                channel, answers = await self._thread_for(home, answers, reply)
        if answers is not None and answers[0] == channel:
            # A result replies to the message it came from (its status message, or the result
            # a refine, vary or reroll was started from); never failing if that was deleted.
            kwargs["reference"] = discord.MessageReference(
                message_id=answers[1], channel_id=channel, fail_if_not_exists=False
            )
        with _delivery_errors(f"post to channel {channel}"):
            msg = await self._client.get_partial_messageable(channel).send(**kwargs)
        return make_ref(channel, msg.id, home)

    async def _thread_for(
        self, home: int, answers: tuple[int, int], reply: Reply
    ) -> tuple[int, tuple[int, int] | None]:
        """``discord.threads``: where a job's result goes, and what it replies to there. The
        message it answers is in the channel (the job's status message): the thread on it,
        opened now or found, replying to nothing (the thread starts from that message). In a
        thread already (the result a child came from): that thread, replying to it."""
        channel, message = answers
        if channel != home:
            return channel, answers
        opened = await open_thread(self._client.http, channel, message, thread_name(reply))
        return (opened, None) if opened is not None else (channel, answers)

    async def update(self, target: Target, ref: str, reply: Reply) -> None:
        kwargs = await _message_kwargs(reply)
        files = kwargs.pop("files", [])
        message = self._message(target, ref)
        with _delivery_errors(f"edit message {ref}"):
            await message.edit(attachments=files, view=kwargs.pop("view", None), **kwargs)

    def _message(self, target: Target, ref: str) -> discord.PartialMessage:
        channel, message = split_ref(ref, int(target.thread_id or target.channel_id))
        return self._client.get_partial_messageable(channel).get_partial_message(message)

    async def delete(self, target: Target, ref: str) -> None:
        message = self._message(target, ref)
        try:
            with _delivery_errors(f"delete message {ref}"):
                await message.delete()
        except DeliveryError as exc:
            if exc.reason.endswith("HTTP 404"):  # already gone: that is what we wanted
                return
            raise


@contextlib.contextmanager
def _delivery_errors(what: str) -> Iterator[None]:
    """discord.py's failures as the core's :class:`DeliveryError`: 403 and 404 cannot get
    better by retrying (no access, no such channel or message); 5xx, 429 and the network can."""
    try:
        yield
    except discord.HTTPException as exc:
        retry_after = getattr(exc, "retry_after", None)
        if exc.status == 429 and retry_after is None:
            header = exc.response.headers.get("Retry-After") if exc.response else None
            retry_after = float(header) if header else None
        raise DeliveryError(
            f"{what}: HTTP {exc.status}",
            permanent=exc.status in (403, 404),
            retry_after=retry_after,
        ) from exc
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise DeliveryError(f"{what}: {type(exc).__name__}") from exc


# --------------------------------------------------------------------------------- client
