"""Reply / Form -> Block Kit JSON, and a modal submission back to form fields. Pure functions.

Slack's limits that shape this (docs.slack.dev Block Kit reference): a message holds at most
50 blocks, an ``actions`` block at most 25 elements, a button label 75 characters, an
``action_id`` 255 and a ``value`` 2000; a section's text 3000; a modal's title and submit
label 24 characters, its ``private_metadata`` 3000.

Every piece of user text goes into ``mrkdwn`` only after :func:`escape`, so a prompt such as
``<!channel>`` or ``<@U123>`` is shown literally and never pings anyone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.types import Button, Form, Reply

MAX_BLOCKS = 50
MAX_ACTIONS_PER_BLOCK = 25
# Rows of five read like Discord's action rows and keep each row short on a phone.
BUTTONS_PER_ROW = 5
MAX_BUTTON_LABEL = 75
MAX_ACTION_ID = 255
MAX_SECTION_TEXT = 3000
MAX_CONTEXT_TEXT = 2000
MAX_FALLBACK_TEXT = 3000
MAX_MODAL_TITLE = 24
MAX_METADATA = 3000
MAX_TEXT_INPUT = 3000  # plain_text_input: max_length 1..3000
MODAL_CALLBACK_ID = "imagine_form"
NEW_IMAGE_CALLBACK_ID = "imagine_new_form"  # the new-image modal: its submit runs /imagine
# file_input (docs.slack.dev file input element): 1..10 files, a 10 MB cap per file, the
# extensions a convenience only (the core's image gate is the judge). One picture is used.
IMAGE_FILETYPES = ("png", "jpg", "jpeg", "webp", "gif")
CHANNEL_BLOCK = "imagine-channel"  # the new-image modal's "Post in" when Slack names no channel

Block = dict[str, Any]


@dataclass(frozen=True)
class PostedFile:
    """A file Slack accepted through ``files_upload_v2``; referenced from the message."""

    file_id: str
    title: str
    permalink: str = ""


def escape(text: str) -> str:
    """Slack's three control characters; everything else is shown as typed."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mrkdwn(text: str, limit: int) -> str:
    # Clip before escaping would cut an entity in half; clip the escaped text on a safe edge.
    escaped = escape(text)
    if len(escaped) <= limit:
        return escaped
    cut = escaped[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def fallback_text(reply: Reply) -> str:
    """The ``text`` Slack shows in notifications; mrkdwn too, so escaped the same way."""
    return _mrkdwn(reply.text or " ", MAX_FALLBACK_TEXT)


def button_element(button: Button) -> Block:
    element: Block = {
        "type": "button",
        "text": {
            "type": "plain_text",
            "text": _clip(button.label, MAX_BUTTON_LABEL),
            "emoji": False,
        },
        "action_id": button.action,
        "value": button.action,
    }
    if button.style in ("primary", "danger"):  # Slack has no "secondary": the default look
        element["style"] = button.style
    return element


def action_blocks(buttons: Iterable[Button], *, budget: int = MAX_BLOCKS) -> list[Block]:
    """Buttons in rows; action ids must be unique in a message, so repeats are dropped."""
    seen: set[str] = set()
    elements: list[Block] = []
    for b in buttons:
        if not b.action or len(b.action) > MAX_ACTION_ID or b.action in seen:
            continue
        seen.add(b.action)
        elements.append(button_element(b))
    rows = [elements[i : i + BUTTONS_PER_ROW] for i in range(0, len(elements), BUTTONS_PER_ROW)]
    return [
        {"type": "actions", "block_id": f"imagine-actions-{i}", "elements": row}
        for i, row in enumerate(rows[:budget])
    ]


def reply_blocks(reply: Reply, files: Sequence[PostedFile] = ()) -> list[Block]:
    blocks: list[Block] = [
        {
            "type": "section",
            "block_id": "imagine-text",
            "text": {"type": "mrkdwn", "text": _mrkdwn(reply.text or " ", MAX_SECTION_TEXT)},
        }
    ]
    if files:
        # Names only: files.completeUploadExternal answers with each file's id and title, no
        # permalink, and asking files.info for one per image would cost a call per image.
        links = [escape(f.title) for f in files]
        blocks.append(
            {
                "type": "context",
                "block_id": "imagine-files",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": _clip("Images: " + ", ".join(links), MAX_CONTEXT_TEXT),
                    },
                ],
            }
        )
    if reply.notice:
        blocks.append(
            {
                "type": "context",
                "block_id": "imagine-notice",
                "elements": [
                    {"type": "mrkdwn", "text": _mrkdwn(reply.notice, MAX_CONTEXT_TEXT)},
                ],
            }
        )
    blocks += action_blocks(reply.buttons, budget=MAX_BLOCKS - len(blocks))
    return blocks


# --------------------------------------------------------------------------------- modals
@dataclass(frozen=True)
class FormContext:
    """What a modal must carry to its submission: the action and where to answer."""

    action: str
    channel_id: str
    thread_id: str | None = None

    def dump(self) -> str:
        data = {"a": self.action, "c": self.channel_id}
        if self.thread_id:
            data["t"] = self.thread_id
        text = json.dumps(data, separators=(",", ":"))
        if len(text) > MAX_METADATA:
            raise ValueError("form context does not fit in private_metadata")
        return text

    @classmethod
    def load(cls, text: str) -> FormContext | None:
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        action, channel, thread = data.get("a"), data.get("c"), data.get("t")
        if not isinstance(action, str) or not isinstance(channel, str):
            return None
        return cls(action, channel, thread if isinstance(thread, str) else None)


def _number(value: float | None) -> str | None:
    return None if value is None else f"{value:g}"


def image_input(name: str, label: str) -> Block:
    """An optional one-picture ``file_input``; its files come back in ``view.state``."""
    return {
        "type": "input",
        "block_id": name,
        "optional": True,
        "label": {"type": "plain_text", "text": _clip(label, 2000)},
        "element": {
            "type": "file_input",
            "action_id": name,
            "filetypes": list(IMAGE_FILETYPES),
            "max_files": 1,
        },
    }


def modal_view(form: Form, context: FormContext) -> Block:
    inputs: list[Block] = []
    for f in form.fields:
        element: Block
        if f.kind == "image":
            inputs.append(image_input(f.name, f.label))
            continue
        if f.kind == "number":
            element = {"type": "number_input", "action_id": f.name, "is_decimal_allowed": True}
            for key, val in (
                ("min_value", _number(f.min_value)),
                ("max_value", _number(f.max_value)),
            ):
                if val is not None:
                    element[key] = val
        else:
            element = {
                "type": "plain_text_input",
                "action_id": f.name,
                "multiline": f.name == "prompt",
                "max_length": MAX_TEXT_INPUT,
            }
        if f.value:
            # Slack refuses the whole view when initial_value is longer than max_length
            # (and max_length is at most 3000): a longer prompt is shown cut to fit.
            value = f.value if f.kind == "number" else f.value[:MAX_TEXT_INPUT]
            element["initial_value"] = value
        inputs.append(
            {
                "type": "input",
                "block_id": f.name,
                "optional": f.kind == "number",
                "label": {"type": "plain_text", "text": _clip(f.label, 2000)},
                "element": element,
            }
        )
    return {
        "type": "modal",
        "callback_id": MODAL_CALLBACK_ID,
        "title": {"type": "plain_text", "text": _clip(form.title, MAX_MODAL_TITLE)},
        "submit": {"type": "plain_text", "text": _clip(form.submit_label, MAX_MODAL_TITLE)},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": context.dump(),
        "blocks": inputs,
    }


def new_image_view(context: FormContext, *, pick_channel: bool) -> Block:
    """The new-image modal (``/imagine`` with no prompt, or the "New image" shortcut): a prompt
    and an optional picture. A global shortcut names no channel, so ``pick_channel`` adds a
    "Post in" menu preset to the conversation the user is viewing; its ``response_url`` lets
    the bot answer there even before it is invited."""
    blocks: list[Block] = [
        {
            "type": "input",
            "block_id": "prompt",
            "label": {"type": "plain_text", "text": "Prompt (flags allowed)"},
            "element": {
                "type": "plain_text_input",
                "action_id": "prompt",
                "multiline": True,
                "max_length": MAX_TEXT_INPUT,
                "placeholder": {"type": "plain_text", "text": "a red fox in the snow --n 4"},
            },
        },
        image_input("image", "Start from a picture (optional)"),
    ]
    if pick_channel:
        blocks.append(
            {
                "type": "input",
                "block_id": CHANNEL_BLOCK,
                "label": {"type": "plain_text", "text": "Post in"},
                "element": {
                    "type": "conversations_select",
                    "action_id": CHANNEL_BLOCK,
                    "default_to_current_conversation": True,
                    "response_url_enabled": True,
                    "filter": {"include": ["public", "private"]},
                },
            }
        )
    return {
        "type": "modal",
        "callback_id": NEW_IMAGE_CALLBACK_ID,
        "title": {"type": "plain_text", "text": "New image"},
        "submit": {"type": "plain_text", "text": "Imagine"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": context.dump(),
        "blocks": blocks,
    }


def _states(view: Mapping[str, Any]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    values = (view.get("state") or {}).get("values") or {}
    for block_id, actions in values.items():
        if not isinstance(actions, Mapping):
            continue
        for action_id, state in actions.items():
            if isinstance(state, Mapping):
                yield str(action_id or block_id), state


def view_fields(view: Mapping[str, Any]) -> dict[str, str]:
    """``view.state.values`` -> {field name: text}; empty inputs come back as ``""``. A file
    input or a conversation menu is no text field: see :func:`view_files`,
    :func:`view_channel`."""
    out: dict[str, str] = {}
    for name, state in _states(view):
        if state.get("type") in ("file_input", "conversations_select"):
            continue
        value = state.get("value")
        out[name] = "" if value is None else str(value)
    return out


def view_files(view: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The file objects a modal's file inputs carry (``state.values.<b>.<a>.files``: each
    with ``id``, ``mimetype``, ``size`` and ``url_private``, so no ``files.info`` is needed)."""
    out: list[Mapping[str, Any]] = []
    for _, state in _states(view):
        files = state.get("files") if state.get("type") == "file_input" else None
        if isinstance(files, list):
            out += [f for f in files if isinstance(f, Mapping)]
    return out


def view_channel(view: Mapping[str, Any]) -> str | None:
    """The conversation picked in the new-image modal's "Post in" menu, if it has one."""
    for _, state in _states(view):
        if state.get("type") == "conversations_select":
            picked = state.get("selected_conversation")
            return str(picked) if picked else None
    return None
