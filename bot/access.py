"""Who may do what: the one place that decides whether an actor is an admin."""

from __future__ import annotations

from bot.config import Settings
from bot.types import Actor


class Access:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def is_admin(self, actor: Actor) -> bool:
        """The platform says so (a Discord administrator, a Slack workspace admin), or the
        operator listed ``platform:user_id`` in ``bot.admins``."""
        return actor.is_admin or f"{actor.platform}:{actor.user_id}" in self._settings.bot.admins


__all__ = ["Access"]
