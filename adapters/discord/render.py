"""Core :class:`~bot.types.Reply` -> Discord message parts (text, files, buttons, modals).

Pure translation: no I/O except reading the image files the core already wrote (in a thread).

Button budget: a legacy message holds at most 5 action rows of 5 buttons (25). A finished job
of n images offers Pick/Refine/Vary (Strong) per image plus Reroll/Info/Delete, i.e. 3n + 3
buttons, so above n = 7 it does not fit. We keep every Pick and Refine (the only way to reach
an image and its img2img path) and drop the Vary buttons from the highest image index down
until the rest fits; they stay reachable from the Pick reply, which has the image verbs for that
one image (11 at most: three rows).
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Sequence
from typing import Any

import discord

from adapters.discord.markdown import clip_escaped, escape_markdown
from bot.types import ACTION_RE, Button, Form, ImageFile, Reply

log = logging.getLogger(__name__)

MAX_CONTENT = 2000  # message content limit
MAX_BUTTONS = 25  # 5 action rows x 5 buttons (non-Components-V2 messages)
ROW_WIDTH = 5
MAX_ROWS = 5
MAX_CUSTOM_ID = 100
MAX_LABEL = 80  # button label
MAX_FILES = 10  # files per message
MODAL_TITLE = 45
MODAL_LABEL = 45
MODAL_DESCRIPTION = 100
TEXT_INPUT_MAX = 4000

# The core's own button grammar, wrapped so discord.py's DynamicItem can name the whole id.
ACTION_TEMPLATE = re.compile(f"(?P<action>{ACTION_RE.pattern})")

STYLES: dict[str, discord.ButtonStyle] = {
    "primary": discord.ButtonStyle.primary,
    "secondary": discord.ButtonStyle.secondary,
    "danger": discord.ButtonStyle.danger,
}


def no_mentions() -> discord.AllowedMentions:
    return discord.AllowedMentions.none()


def escape(text: str) -> str:
    """Plain core text -> Discord markdown that shows literally and pings nobody (our own
    escaper: discord.py's leaves a second masked link live, see :mod:`.markdown`)."""
    return discord.utils.escape_mentions(escape_markdown(text))


def clip(text: str, limit: int) -> str:
    # Never end on a lone escape backslash: it would swallow the ellipsis' meaning.
    return clip_escaped(text, limit)


def content(reply: Reply) -> str:
    body = escape(reply.text)
    if reply.state == "running" and reply.progress:
        body += f" ({reply.progress:.0%})"
    if reply.notice:
        body += "\n-# " + escape(reply.notice)  # subtext: small grey line
    return clip(body, MAX_CONTENT)


# Dropped first when a grid has more than 25 buttons (the Pick reply repeats them).
DROPPABLE = ("vary", "vary-strong", "vary-subtle")


def _verb(button: Button) -> str:
    return button.action.split(":", 1)[0]


def fit_buttons(buttons: Sequence[Button]) -> list[list[Button]]:
    """Rows of at most 5 buttons, at most 5 rows; see the module docstring for what is cut."""
    usable = [b for b in buttons if 0 < len(b.action) <= MAX_CUSTOM_ID]
    if len(usable) != len(buttons):
        log.warning("dropped %d button(s) with an over-long id", len(buttons) - len(usable))
    while len(usable) > MAX_BUTTONS:
        varies = [i for i, b in enumerate(usable) if _verb(b) in DROPPABLE]
        if not varies:
            log.warning("dropped %d button(s) beyond Discord's 25", len(usable) - MAX_BUTTONS)
            usable = usable[:MAX_BUTTONS]
            break
        del usable[varies[-1]]
    # One verb per row (Pick 1-4 / Refine 1-4 / Vary 1-4 / Reroll Info Delete) reads best;
    # when that needs more than 5 rows, fill the rows in order instead.
    groups: list[list[Button]] = []
    for b in usable:
        if groups and _group(groups[-1][0]) == _group(b):
            groups[-1].append(b)
        else:
            groups.append([b])
    rows = [g[i : i + ROW_WIDTH] for g in groups for i in range(0, len(g), ROW_WIDTH)]
    if len(rows) > MAX_ROWS:
        rows = [usable[i : i + ROW_WIDTH] for i in range(0, len(usable), ROW_WIDTH)]
    return rows


def _group(button: Button) -> str:
    # A per-image button (its id ends in an index) rows up with its verb; the rest share rows.
    return (
        _verb(button)
        if ACTION_RE.fullmatch(button.action) and button.action.count(":") == 2
        else "job"
    )


class ActionButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=ACTION_TEMPLATE):
    """Every button we send: its custom_id is the core's ``verb:job_id[:index]`` and nothing
    else, so a click after a restart is matched by the template, not by memory."""

    def __init__(
        self,
        action: str,
        *,
        label: str | None = None,
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
        row: int | None = None,
    ) -> None:
        super().__init__(discord.ui.Button(label=label, custom_id=action, style=style), row=row)
        self.action = action

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> ActionButton:
        label = getattr(item, "label", None)
        return cls(match["action"], label=label)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        on_action = getattr(interaction.client, "on_action", None)
        if on_action is not None:
            await on_action(interaction, self.action)


def view_for(buttons: Sequence[Button]) -> discord.ui.View | None:
    if not buttons:
        return None
    view = discord.ui.View(timeout=None)
    for row_no, row in enumerate(fit_buttons(buttons)):
        for b in row:
            view.add_item(
                ActionButton(
                    b.action,
                    label=clip(b.label, MAX_LABEL) or b.action,
                    style=STYLES.get(b.style, discord.ButtonStyle.secondary),
                    row=row_no,
                )
            )
    # A stopped view still serialises, but discord.py then does not keep it in its view store:
    # clicks are dispatched by the DynamicItem template, so one entry per message would only
    # grow memory for the life of the process.
    view.stop()
    return view


class FormModal(discord.ui.Modal):
    """A core :class:`Form` as a modal. Its submit is handled by the client's
    ``on_interaction`` from the raw payload (custom_id = the form's action), so a form
    opened before a restart can still be submitted after it; ``on_submit`` does nothing."""

    def __init__(self, form: Form) -> None:
        super().__init__(
            title=clip(form.title, MODAL_TITLE), custom_id=form.action, timeout=15 * 60
        )
        # A Discord modal here takes text only: an optional picture field is left out.
        for f in [f for f in form.fields if f.kind != "image"][:5]:
            number = f.kind == "number"
            placeholder = None
            if number and f.min_value is not None and f.max_value is not None:
                placeholder = f"{f.min_value:g} to {f.max_value:g}"
            text_input: discord.ui.TextInput[Any] = discord.ui.TextInput(
                custom_id=f.name,
                style=discord.TextStyle.short if number else discord.TextStyle.paragraph,
                default=f.value[:TEXT_INPUT_MAX] or None,
                placeholder=placeholder,
                required=not number,
                max_length=32 if number else TEXT_INPUT_MAX,
            )
            label = clip(f.label, MODAL_LABEL)
            self.add_item(
                discord.ui.Label(
                    text=label,
                    component=text_input,
                    description=clip(f.label, MODAL_DESCRIPTION) if label != f.label else None,
                )
            )


def modal_fields(components: Sequence[Any]) -> dict[str, str]:
    """custom_id -> value from a MODAL_SUBMIT payload (action rows or labels, any depth)."""
    out: dict[str, str] = {}
    for c in components:
        if not isinstance(c, dict):
            continue
        if c.get("type") == 1:
            out.update(modal_fields(c.get("components") or []))
        elif c.get("type") == 18:
            out.update(modal_fields([c.get("component")]))
        elif isinstance(c.get("custom_id"), str) and isinstance(c.get("value"), str):
            out[c["custom_id"]] = c["value"]
    return out


async def files_for(images: Sequence[ImageFile]) -> list[discord.File]:
    files = []
    for img in images[:MAX_FILES]:
        try:
            data = await asyncio.to_thread(img.path.read_bytes)
        except OSError:
            log.warning("image %s is missing from the data dir; sent without it", img.filename)
            continue
        files.append(discord.File(io.BytesIO(data), filename=img.filename))
    return files
