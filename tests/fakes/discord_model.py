"""The Discord fake's model: ids, messages, interactions, and Discord's limits on a message."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes import RecordedRequest, require

APP_ID = "1100000000000000001"
BOT_USER = {
    "id": APP_ID,
    "username": "imagine",
    "discriminator": "0",
    "avatar": None,
    "bot": True,
    "global_name": None,
}
# Shaped like a real bot token: the bot user's id in base64, a timestamp, an HMAC.
TOKEN = (
    base64.b64encode(APP_ID.encode()).decode().rstrip("=") + ".GfAkE1.fake-discord-bot-token-hmac"
)
GUILD_ID = "1200000000000000001"
CHANNEL_ID = "1300000000000000001"
MAX_FILE = 10 * 1024 * 1024
EPHEMERAL = 1 << 6
MANAGE_GUILD = 1 << 5
ADMINISTRATOR = 1 << 3
NONCE_WINDOW_S = 300.0  # "the past few minutes"


@dataclass
class Msg:
    id: str
    channel_id: str
    content: str
    flags: int = 0
    components: list[Any] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    files: list[tuple[str, bytes]] = field(default_factory=list)
    via: str = "channel"  # channel | interaction
    edits: int = 0
    nonce: str | None = None
    created: float = 0.0

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    def custom_ids(self) -> list[str]:
        return [
            c["custom_id"]
            for row in self.components
            for c in row.get("components", [])
            if "custom_id" in c
        ]


@dataclass
class FakeInteraction:
    id: str
    token: str
    type: int
    channel_id: str
    callback: int | None = None  # the initial response's type
    loading: bool = False  # a "thinking" message not yet replaced
    ephemeral: bool = False
    original: str | None = None
    modal: dict[str, Any] | None = None


def payload_of(rec: RecordedRequest) -> dict[str, Any]:
    """The JSON body of a request, whether sent as JSON or multipart ``payload_json``."""
    data = json.loads(rec.form["payload_json"]) if "payload_json" in rec.form else rec.json
    return data if isinstance(data, dict) else {}


def _response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(data).encode(), content_type="application/json"
    )


def check_components(rows: Any) -> None:
    require(isinstance(rows, list) and len(rows) <= 5, "at most 5 action rows", name="50035")
    seen: set[str] = set()
    for row in rows:
        require(row.get("type") == 1, "top-level components must be action rows", name="50035")
        items = row.get("components") or []
        require(1 <= len(items) <= 5, "an action row holds 1 to 5 buttons", name="50035")
        for c in items:
            if c.get("type") != 2 or c.get("style") == 5:
                continue
            cid = c.get("custom_id")
            require(
                isinstance(cid, str) and 1 <= len(cid) <= 100,
                "custom_id must be 1 to 100 characters",
                name="50035",
            )
            require(cid not in seen, f"custom_id {cid} is not unique", name="50035")
            seen.add(cid)
            require(len(c.get("label") or "") <= 80, "label over 80 characters", name="50035")


def check_message(data: dict[str, Any], files: dict[str, tuple[str, bytes, str]]) -> None:
    am = data.get("allowed_mentions")
    require(
        isinstance(am, dict)
        and am.get("parse") == []
        and not am.get("users")
        and not am.get("roles")
        and not am.get("replied_user"),
        f"allowed_mentions must ping nobody, got {am!r}",
        name="pings",
    )
    text = data.get("content") or ""
    require(len(text) <= 2000, "content over 2000 characters", name="50035")
    check_components(data.get("components") or [])
    uploads = [f for k, f in files.items() if k.startswith("files[")]
    require(len(uploads) <= 10, "at most 10 files", name="50035")
    for name, blob, _ in uploads:
        require(len(blob) <= MAX_FILE, f"{name} is over 10 MiB", 413, name="40005")
