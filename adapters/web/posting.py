"""The web playground's Responder and ChannelPoster: how the core's replies reach the pages."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from adapters.web.live import Message
from bot.types import (
    PostSteps,
    Reply,
    Target,
)

log = logging.getLogger(__name__)


if TYPE_CHECKING:
    from adapters.web.playground import Playground


class RequestResponder:
    """The Responder for one POST: ephemeral replies go back in its answer (or, once it has
    been answered, to that user's open pages); the rest also go to everyone in the channel."""

    def __init__(self, playground: Playground, channel: str, user_id: str) -> None:
        self.playground = playground
        self.channel = channel
        self.user_id = user_id
        self.messages: list[Message] = []
        self.closed = False

    async def send(self, reply: Reply) -> str | None:
        ref = self.playground.new_ref(reply)
        await self._show(ref, reply)
        return ref

    async def edit(self, ref: str, reply: Reply) -> None:
        await self._show(ref, reply)

    async def _show(self, ref: str, reply: Reply) -> None:
        if reply.ephemeral and not self.closed:
            message = self.playground.reply_json(reply, ref=ref, owner=self.user_id)
        else:
            message = await self.playground.deliver(
                self.channel, reply, ref=ref, owner=self.user_id
            )
        if not self.closed:
            self.messages.append(message)


class ChannelPosterImpl:
    """Registered with the core for platform "web": job updates long after the request."""

    # Each process shows its own pages: a job another process (on a shared store) ran is
    # shown here too (the core sends it as an update; see Delivery.on_job_event).
    mirrors = True

    def __init__(self, playground: Playground) -> None:
        self.playground = playground

    async def post(
        self, target: Target, reply: Reply, steps: PostSteps | None = None
    ) -> str | None:
        ref = self.playground.new_ref(reply)
        await self.playground.deliver(target.channel_id, reply, ref=ref, owner=target.user_id)
        return ref

    async def update(self, target: Target, ref: str, reply: Reply) -> None:
        if reply.state == "done" and not reply.images and ref == reply.job_id:
            # The chat platforms' "done, see below" over a result posted below it: here the
            # result is the same card, and it follows at once.
            return
        await self.playground.deliver(target.channel_id, reply, ref=ref, owner=target.user_id)

    async def delete(self, target: Target, ref: str) -> None:
        """Take the card off every open page of its channel (a job's card takes its picks)."""
        self.playground.hub.remove(target.channel_id, ref)
