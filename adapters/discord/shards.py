"""The sharded client: :class:`ImagineClient` on discord.py's ``AutoShardedClient``.

``[discord] shards`` (see ``bot/sharding.py`` and the README's "Sharding") picks it in
``serve``: ``"auto"`` leaves the count to Discord (``GET /gateway/bot``), a number fixes
the total over all processes, and ``shard_ids`` names the ones this process connects. The
commands, buttons, modals and the poster work as on one connection: REST calls do not
depend on the shard, and Discord routes each guild's interactions to the shard that holds it.

IDENTIFYs follow Discord's session start rule instead of discord.py's fixed 5 s between
shards: shards whose ``shard_id % max_concurrency`` differ may start together, and one
bucket's shards start at least :data:`IDENTIFY_WINDOW_S` apart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import discord

from adapters.discord.adapter import ImagineClient
from bot.core import Core, Ready

log = logging.getLogger(__name__)

# Discord: max_concurrency IDENTIFYs per 5 s; the margin covers the time between this hook
# and the IDENTIFY frame reaching Discord.
IDENTIFY_WINDOW_S = 5.5


class ShardedClient(ImagineClient, discord.AutoShardedClient):
    """``count`` None: Discord's recommended count; ``ids`` None: every shard; ``label``
    the setting in words, for the ready line."""

    def __init__(
        self,
        core: Core,
        count: int | None,
        ids: Sequence[int] | None,
        *,
        label: str,
        ready: Ready | None = None,
    ) -> None:
        self.shard_setting = label

        def announce(text: str) -> None:
            if ready is not None:
                ready(f"{text} ({self.shard_setting})")

        super().__init__(
            core,
            ready=announce,
            shard_count=count,
            shard_ids=None if ids is None else list(ids),
        )
        self._buckets: int | None = None  # session_start_limit.max_concurrency
        self._started: dict[int, float] = {}  # bucket -> when its last IDENTIFY went

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        if self._buckets is None:
            try:
                limits = await self.fetch_session_start_limits()
                self._buckets = max(1, limits.max_concurrency)
                if limits.remaining < 1:
                    log.warning("Discord's session start limit is used up for now")
            except discord.DiscordException:
                self._buckets = 1  # the safe assumption: one IDENTIFY per 5 s
        bucket = (shard_id or 0) % self._buckets
        last = self._started.get(bucket)
        if last is not None:
            wait = last + IDENTIFY_WINDOW_S - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        self._started[bucket] = time.monotonic()

    async def on_shard_ready(self, shard_id: int) -> None:
        log.info("Discord shard %s of %s ready", shard_id, self.shard_count)
