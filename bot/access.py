"""Who may do what: admins, owners, and who may continue a result in a channel.

Every rule is read from the settings and the database, never from a button's payload. Each
verb in :mod:`bot.actions` names one of the rules here (:data:`Rule`).
"""

from __future__ import annotations

from typing import Literal

from bot.config import Settings
from bot.errors import NotAllowed
from bot.storage.protocols import ChannelRepository
from bot.storage.records import Job
from bot.types import Actor, Invocation

Rule = Literal["anyone", "owner", "continue"]
"""``anyone`` who can see the button; the ``owner`` (or an admin); anyone who may
``continue`` the result: the owner, an admin, or anyone in its channel when the channel
allows collaboration."""


class Access:
    def __init__(self, settings: Settings, channels: ChannelRepository) -> None:
        self._settings = settings
        self._channels = channels

    def is_admin(self, actor: Actor) -> bool:
        """The platform says so (a Discord administrator, a Slack workspace admin), or the
        operator listed ``platform:user_id`` in ``bot.admins``."""
        return actor.is_admin or f"{actor.platform}:{actor.user_id}" in self._settings.bot.admins

    def is_owner_or_admin(self, actor: Actor, job: Job) -> bool:
        return actor.user_id == job.owner_id or self.is_admin(actor)

    async def collaborative(self, job: Job, inv: Invocation) -> bool:
        """The channel's own setting (``/admin collab``), else what the platform says of the
        channel, else the configured default."""
        own = await self._channels.collaborative(job.platform, job.tenant, job.channel_id)
        if own is not None:
            return own
        if inv.channel_allows_collaboration is not None:
            return inv.channel_allows_collaboration
        return self._settings.actions.collaborative

    async def check(self, rule: Rule, job: Job, inv: Invocation, refusal: str) -> None:
        """Raise :class:`NotAllowed` with ``refusal`` unless ``inv``'s actor passes ``rule``."""
        if rule == "anyone":
            return
        if self.is_owner_or_admin(inv.actor, job):
            return
        if (
            rule == "continue"
            and inv.channel_id == job.channel_id
            and await self.collaborative(job, inv)
        ):
            return
        raise NotAllowed(refusal.format(owner=job.owner_name))


__all__ = ["Access", "Rule"]
