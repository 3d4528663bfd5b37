"""The adapters' contract: everything an adapter may use of the core, in one module.

An adapter imports this module, :mod:`bot.types` and :mod:`bot.errors`, and nothing else of
``bot``. It turns platform events into :class:`~bot.types.Invocation`s, hands them to
:meth:`Core.handle` with a :class:`~bot.types.Responder`, registers one
:class:`~bot.types.ChannelPoster` for its platform, and renders the
:class:`~bot.types.Reply`s it gets back. Business rules, SQL and provider calls stay behind
this line.

Each adapter package exports one :class:`AdapterSpec` named ``ADAPTER``; the CLI's ``serve``
loops over the registry in :mod:`adapters` (``adapters.REGISTRY``, module names imported
lazily) and starts those whose ``enabled(settings)`` is true.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bot.config import ImageSettings, Settings, WebSettings
from bot.types import Actor, ChannelPoster, FlagHelp, Invocation, Reply, Responder


class Core(Protocol):
    """What the running bot offers its adapters (implemented by :class:`bot.app.App`)."""

    @property
    def settings(self) -> Settings: ...

    async def handle(self, inv: Invocation, responder: Responder) -> None:
        """Run one command or button press; never raises for a user's mistake."""
        ...

    def register_poster(self, platform: str, poster: ChannelPoster) -> None:
        """Once per platform: where job updates and results for that platform are posted.
        Results that finished while the platform had no poster are delivered now."""
        ...

    async def deliver_pending(self, platform: str) -> None:
        """Post what finished while ``platform`` could not be reached (e.g. after a login)."""
        ...

    async def history(
        self, platform: str, tenant: str, channel_id: str, limit: int = 50
    ) -> list[Reply]:
        """The channel's latest jobs, oldest first, rendered as replies."""
        ...

    def image_path(self, sha256: str) -> Path | None:
        """The stored image with this content hash, or None (never a path built from input)."""
        ...

    async def quota_badge(self, actor: Actor) -> str:
        """A short line such as "46 of 50 images left today"."""
        ...

    def flag_help(self) -> Sequence[FlagHelp]:
        """The ``/imagine`` flags, from the grammar's table (option descriptions, hints)."""
        ...


Ready = Callable[[str], None]
"""Called by an adapter once it is serving, with a line for the operator (e.g. its URL)."""


@dataclass(frozen=True)
class AdapterSpec:
    """One platform adapter, as ``serve`` sees it."""

    name: str
    enabled: Callable[[Settings], bool]
    serve: Callable[[Core, Settings, Ready], Awaitable[None]]
    """Runs until cancelled; raises :class:`~bot.errors.ConfigError` for a bad setup."""


__all__ = ["AdapterSpec", "Core", "ImageSettings", "Ready", "Settings", "WebSettings"]
