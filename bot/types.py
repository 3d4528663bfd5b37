"""The core's own vocabulary: what adapters hand in and what they get back.

Adapters turn a platform event into an :class:`Invocation`, pass it to the handler together
with a :class:`Responder`, and render every :class:`Reply` the core sends through it. Nothing
here knows about Discord, Slack or HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

ButtonStyle = Literal["primary", "secondary", "danger"]
FINAL_STATES: frozenset[str] = frozenset({"done", "failed", "filtered"})


@dataclass(frozen=True)
class Actor:
    """Who is acting. ``tenant`` is the guild / workspace / web instance, from the verified
    request, never from a button payload."""

    platform: str
    tenant: str
    user_id: str
    display_name: str = ""
    roles: tuple[str, ...] = ()
    is_admin: bool = False

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.tenant}:{self.user_id}"


@dataclass(frozen=True)
class Invocation:
    """One command or one button press.

    ``command`` is ``imagine``, ``quota`` or ``admin`` (with ``text`` the rest of the line), or
    ``action`` for a button press (with ``action`` the button's ``verb:job_id:index`` id and
    ``fields`` what a form returned, e.g. the edited prompt of a refine).
    """

    actor: Actor
    channel_id: str
    command: str = "imagine"
    text: str = ""
    action: str = ""
    fields: Mapping[str, str] = field(default_factory=dict)
    thread_id: str | None = None
    init_image: bytes | None = None
    interaction_id: str | None = None
    channel_allows_collaboration: bool | None = None
    # The user already agreed to a large permutation (the CLI's --yes, a Confirm button).
    confirmed: bool = False


# The one button codec, used by every adapter and the core: ``verb:job_id[:index]``. A verb is
# lower-case letters and dashes, a job id 12 characters of the id alphabet, an index one or
# two digits.
ACTION_RE = re.compile(r"([a-z][a-z-]{0,23}):([a-z2-9]{12})(?::([0-9]{1,2}))?")
MAX_ACTION_CHARS = 24 + 1 + 12 + 3  # well under Discord's 100 and Slack's 255


@dataclass(frozen=True)
class Action:
    """A button's payload, decoded. Nothing else travels in a button: who may press it and what
    it does are read back from the database when it is pressed."""

    verb: str
    job_id: str
    index: int | None = None

    def encode(self) -> str:
        return f"{self.verb}:{self.job_id}" + ("" if self.index is None else f":{self.index}")

    @classmethod
    def decode(cls, text: str) -> Action | None:
        """The action in ``text``, or None when it is not one of ours (never raises)."""
        m = ACTION_RE.fullmatch(text.strip())
        if m is None:
            return None
        return cls(m.group(1), m.group(2), int(m.group(3)) if m.group(3) else None)


@dataclass(frozen=True)
class Button:
    label: str
    action: str  # Action(...).encode(): "verb:job_id:index", short and stateless
    style: ButtonStyle = "secondary"


@dataclass(frozen=True)
class FlagHelp:
    """One ``/imagine`` flag, as the grammar's table describes it: the source of ``/imagine
    help``, Discord's option descriptions and the web playground's hint."""

    name: str  # "--ar"
    value: str  # "W:H", "" for a switch
    help: str  # one line, under 100 characters (Discord's option description limit)
    example: str = ""


@dataclass(frozen=True)
class FormField:
    name: str
    label: str
    value: str = ""
    # "image": an optional picture the user uploads (Slack's file input); a platform whose
    # dialogs take no files leaves the field out, and the form works without it. What was
    # uploaded comes back as the invocation's ``init_image``, never as a field's text.
    kind: Literal["text", "number", "image"] = "text"
    min_value: float | None = None
    max_value: float | None = None


@dataclass(frozen=True)
class Form:
    """A small dialog the adapter shows (Discord modal, Slack view, web dialog). Submitting it
    comes back as an ``action`` invocation with the same ``action`` and the ``fields``."""

    title: str
    action: str
    fields: tuple[FormField, ...]
    submit_label: str = "Submit"


@dataclass(frozen=True)
class ImageFile:
    """An image stored in the data dir. Adapters upload or link ``path``; never build paths."""

    path: Path
    filename: str
    width: int
    height: int
    kind: Literal["grid", "image"] = "image"
    sha256: str = ""


@dataclass(frozen=True)
class Reply:
    """What the core asks an adapter to show.

    ``job_id`` ties replies about one job together: an adapter may update an earlier message
    (web card, Slack/Discord status message) when a reply with the same job id arrives.
    ``text`` is plain text: adapters escape it for their markup and never let it ping anyone.
    """

    text: str
    images: tuple[ImageFile, ...] = ()
    buttons: tuple[Button, ...] = ()
    ephemeral: bool = False
    form: Form | None = None
    job_id: str | None = None
    parent_job_id: str | None = None
    state: str | None = None
    position: int | None = None
    progress: float | None = None
    notice: str | None = None
    meta: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """Where a job's messages go: kept on the job row so results land after a restart."""

    platform: str
    tenant: str
    channel_id: str
    thread_id: str | None = None
    user_id: str = ""
    # The message a result answers (its job's status message, or for a refine, vary or
    # reroll the result it was started from): Slack opens the job's thread under it, Discord
    # replies to it. Read from the job's row each time, never remembered.
    reply_to: str | None = None


class Responder(Protocol):
    """Handed in by an adapter for one invocation."""

    async def send(self, reply: Reply) -> str | None:
        """Show ``reply``; return a reference that :meth:`edit` accepts, if the platform has one."""
        ...

    async def edit(self, ref: str, reply: Reply) -> None: ...


class WorkspaceIconResponder(Responder, Protocol):
    """A :class:`Responder` of a platform that lets the bot set the workspace's icon (Discord:
    the server icon). The core looks for ``set_workspace_icon`` on the responder it was
    handed; a platform without it simply has no such capability."""

    async def set_workspace_icon(self, png: bytes, reason: str) -> None:
        """Set the icon to ``png`` (square); raise :class:`~bot.errors.UserError` that says
        which permission the bot lacks, and how to give it, when the platform refuses."""
        ...


class PostSteps(Protocol):
    """What a resumed delivery already did, handed to :meth:`ChannelPoster.post`.

    A post may take several platform calls (Slack: upload the files, then post the message).
    The poster records each finished step's platform reference (``record("files", ids)``)
    before the next call, and on a retry skips the steps that :meth:`get` returns: a file
    already uploaded is shared, not uploaded again. ``key`` is stable across every retry of
    one delivery: an idempotency key (Discord's message ``nonce``).
    """

    @property
    def key(self) -> str: ...

    def get(self, step: str) -> str | None: ...

    async def record(self, step: str, value: str) -> None: ...


class ChannelPoster(Protocol):
    """Registered once per platform by its adapter: posts job updates as ordinary messages in a
    channel, so a result lands even when the original interaction has long expired.

    Every method raises :class:`bot.errors.DeliveryError` when the platform refuses or fails
    (never returns quietly on a failure: the outbox must know, to retry).
    """

    async def post(
        self, target: Target, reply: Reply, steps: PostSteps | None = None
    ) -> str | None: ...

    async def update(self, target: Target, ref: str, reply: Reply) -> None: ...

    async def delete(self, target: Target, ref: str) -> None:
        """Take down a message this poster posted, and the bot's own uploads in it (``ref`` as
        :meth:`post` returned it). A message already gone counts as deleted."""
        ...
