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

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bot.config import ImageSettings, Settings, WebSettings
from bot.types import Actor, ChannelPoster, FlagHelp, ImageFile, Invocation, Reply, Responder


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

    async def job_details(
        self, platform: str, tenant: str, job_ids: Sequence[str]
    ) -> Mapping[str, JobDetails]:
        """What a job's card shows beyond its reply: each image on its own, how the job ended
        (``cancelled`` told apart from ``failed``) and the picks made from it, as they are in
        the channel's history. Ids that are unknown or of another tenant are left out."""
        ...

    async def gallery(
        self,
        platform: str,
        tenant: str,
        *,
        channel_id: str | None = None,
        owner_id: str | None = None,
        query: str = "",
        before: str | None = None,
        limit: int = 30,
    ) -> GalleryPage:
        """Finished images, newest first: a channel's (``channel_id``), someone's
        (``owner_id``), or both, whose prompt contains ``query`` (any case). ``before`` is
        the ``next`` of the previous page (infinite scroll)."""
        ...

    async def lineage(self, platform: str, tenant: str, job_id: str) -> Lineage | None:
        """The family of a job: its root and every refinement, variation and reroll below it,
        who made each, oldest first; None for an unknown job or another tenant's."""
        ...


Ready = Callable[[str], None]
"""Called by an adapter once it is serving, with a line for the operator (e.g. its URL)."""


@dataclass(frozen=True)
class TokenCheck:
    """What ``doctor`` learnt about one platform credential. ``detail`` names what works or
    what is wrong (invalid, the wrong kind of token, unreachable) and never holds the token."""

    name: str  # the environment variable, e.g. SLACK_BOT_TOKEN
    ok: bool
    detail: str
    scopes: frozenset[str] | None = None  # what the platform says the token may do, if told


@dataclass(frozen=True)
class AdapterSpec:
    """One platform adapter, as ``serve`` and ``doctor`` see it."""

    name: str
    enabled: Callable[[Settings], bool]
    serve: Callable[[Core, Settings, Ready], Awaitable[None]]
    """Runs until cancelled; raises :class:`~bot.errors.ConfigError` for a bad setup."""
    check: Callable[[Settings], Awaitable[Sequence[TokenCheck]]] | None = None
    """``doctor``: asks the platform, through its SDK, whether each configured token works.
    Never raises for a bad token or a dead network: that is a failed :class:`TokenCheck`."""


# ---------------------------------------------------------------- gallery and lineage values
Outcome = str
"""``queued``, ``running``, ``done``, ``failed``, ``filtered``, ``cancelled`` or ``deleted``."""


@dataclass(frozen=True)
class JobDetails:
    """One job as a gallery or a card shows it (see :meth:`Core.job_details`)."""

    job_id: str
    outcome: Outcome
    prompt: str
    owner_id: str
    owner_name: str
    kind: str  # imagine, refine, vary, reroll
    channel_id: str
    parent_job_id: str | None = None
    parent_index: int | None = None
    created_at: float = 0.0
    images: tuple[ImageFile, ...] = ()  # in index order: image i is images[i - 1]
    picks: tuple[Reply, ...] = ()  # the Pick messages made from it, as they were posted


@dataclass(frozen=True)
class GalleryItem:
    job_id: str
    index: int
    image: ImageFile
    prompt: str
    owner_id: str
    owner_name: str
    channel_id: str
    kind: str
    created_at: float


@dataclass(frozen=True)
class GalleryPage:
    items: tuple[GalleryItem, ...]
    next: str | None = None  # pass as ``before`` for the next page; None at the end


@dataclass(frozen=True)
class Lineage:
    """A job's family: ``nodes`` oldest first, the root among them; each names its parent.
    A deleted job that still has children stays as a node without prompt or images."""

    root_id: str
    focus_id: str
    nodes: tuple[JobDetails, ...] = field(default_factory=tuple)
    truncated: bool = False  # more descendants than one view holds


__all__ = [
    "AdapterSpec",
    "Core",
    "GalleryItem",
    "GalleryPage",
    "ImageSettings",
    "JobDetails",
    "Lineage",
    "Outcome",
    "Ready",
    "Settings",
    "TokenCheck",
    "WebSettings",
]
