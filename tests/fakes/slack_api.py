"""A fake Slack Web API on loopback, reached through the real ``slack_sdk`` AsyncWebClient.

Point ``SLACK_API_URL`` at ``fake.api_url`` (``http://127.0.0.1:<port>/api/``). Methods::

    auth.test  users.info  chat.postMessage  chat.postEphemeral  chat.update  chat.delete
    views.open  files.delete  conversations.history  conversations.replies
    files.getUploadURLExternal -> POST /upload/<file_id> -> files.completeUploadExternal

plus ``POST /response/<id>`` as a ``response_url``, and Socket Mode: ``apps.connections.open``
(app token) hands out ``ws://.../link``, where the fake says hello, pushes the envelopes a
test queues with ``socket_send`` and records the client's acks in ``socket_acks``.

Answers have Slack's shape: HTTP 200 and ``{"ok": false, "error": "..."}`` for errors
(``not_authed`` without a token, ``invalid_auth`` for an unknown one). Every answer to the bot
token carries ``x-oauth-scopes``, the scopes it was granted (``fake.scopes``: by default what
``imagine-bot setup slack`` asks for), as Slack's do, and a method whose scope was not granted
(``NEEDS_SCOPE``) is answered ``missing_scope``: so every Slack test also checks that the
manifest's scopes cover what the adapter calls.
Requests are checked against Slack's documented limits (Block Kit sizes, unique action ids,
modal title length, one use per trigger id, an upload's declared length, a known ``ts`` for
chat.update); a breach is answered with Slack's error *and* appended to ``fake.violations``.
Every Web API call is kept in ``fake.calls``. Rate limits are Slack's documented ones
(``tests/fakes/slack_limits.py``): a call over them is answered 429 with ``Retry-After`` and
kept in ``fake.refused``; a call inside a ``Retry-After`` its method was given is a violation.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

from bot.setup import slack_bot_scopes
from tests.fakes import ContractViolation, FakeServer, Handler, RecordedRequest, require
from tests.fakes.slack_blocks import check_message_blocks, check_modal
from tests.fakes.slack_limits import RateLimits

TEAM_ID = "T0FAKE"
BOT_USER = "UBOT"
# Fields slack_sdk sends as JSON-encoded strings when it posts a form.
JSON_FIELDS = ("blocks", "view", "files", "attachments", "metadata")
# The bot scopes each method's reference page asks for (one of them); history depends on the
# kind of conversation. A call without one is answered missing_scope, needed, provided.
WRITE = ("chat:write",)
HISTORY = ("channels:history", "groups:history", "im:history", "mpim:history")
NEEDS_SCOPE: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        ("chat.postMessage", "chat.postEphemeral", "chat.update", "chat.delete"), WRITE
    ),
    **dict.fromkeys(
        ("files.getUploadURLExternal", "files.completeUploadExternal"), ("files:write",)
    ),
    "files.delete": ("files:write",),
    "files.info": ("files:read",),
    "users.info": ("users:read",),
    **dict.fromkeys(("conversations.history", "conversations.replies"), HISTORY),
}


@dataclass
class ApiCall:
    method: str
    params: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Upload:
    file_id: str
    filename: str
    length: int
    data: bytes | None = None
    alt_txt: str = ""
    deleted: bool = False


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[Any]
    thread_ts: str | None = None
    updates: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] | None = None


ApiHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class SlackFake(FakeServer):
    """State the tests script: ``users`` (id -> user object), ``triggers`` (valid trigger ids),
    ``member_channels`` (None: the bot is in every channel)."""

    def __init__(
        self,
        token: str = "xoxb-test-token",
        team_id: str = TEAM_ID,
        app_token: str = "xapp-test-token",
        rate_limits: RateLimits | None = None,
    ) -> None:
        super().__init__()
        # Slack's documented limits (tests/fakes/slack_limits.py); RateLimits({}) for none.
        self.rate_limits = RateLimits() if rate_limits is None else rate_limits
        self.refused: list[ApiCall] = []  # answered 429 (not in ``calls``)
        self.token = token
        self.app_token = app_token
        self.sockets: list[web.WebSocketResponse] = []
        self.socket_acks: list[dict[str, Any]] = []
        self.team_id = team_id
        self.calls: list[ApiCall] = []
        self.users: dict[str, dict[str, Any]] = {}
        self.triggers: set[str] = set()
        self.used_triggers: set[str] = set()
        self.member_channels: set[str] | None = None
        self.scopes: list[str] = list(slack_bot_scopes())
        self.messages: dict[str, Message] = {}
        self.uploads: dict[str, Upload] = {}
        self.responses: list[tuple[str, Any]] = []  # (response id, JSON posted to it)
        # method -> gate: calls to it wait until the test sets the event
        self.holds: dict[str, asyncio.Event] = {}
        self.answer_delay: dict[str, float] = {}
        self._seq = 0
        self._changed = asyncio.Condition()
        self._methods: dict[str, ApiHandler] = {
            "auth.test": self.auth_test,
            "users.info": self.users_info,
            "chat.postMessage": self.post_message,
            "chat.postEphemeral": self.post_ephemeral,
            "chat.update": self.update,
            "views.open": self.views_open,
            "files.getUploadURLExternal": self.get_upload_url,
            "files.completeUploadExternal": self.complete_upload,
            "files.delete": self.files_delete,
            "chat.delete": self.chat_delete,
            "conversations.history": self.history,
            "conversations.replies": self.replies,
        }
        self.deleted_messages: list[Message] = []

    # ----------------------------------------------------------------------- scripting
    @property
    def api_url(self) -> str:
        return self.base_url + "/api/"

    def add_user(
        self, user_id: str, name: str, *, admin: bool = False, owner: bool = False
    ) -> None:
        self.users[user_id] = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "real_name": name.title(),
            "is_admin": admin,
            "is_owner": owner,
            "is_primary_owner": False,
            "is_bot": False,
            "deleted": False,
        }

    def new_trigger(self) -> str:
        self._seq += 1
        trigger = f"{self._seq}.{1000 + self._seq}.trig{self._seq:04d}"
        self.triggers.add(trigger)
        return trigger

    def add_file(self, name: str, data: bytes, mimetype: str = "image/png") -> dict[str, Any]:
        """A file someone shared in the workspace, as a message's ``files`` shows it; its
        ``url_private_download`` answers the bot token only (as files.slack.com does)."""
        self._seq += 1
        file_id = f"F{self._seq:08d}"
        up = Upload(file_id, name, len(data), data=data)
        self.uploads[file_id] = up
        url = f"{self.base_url}/files-pri/{file_id}/{name}"
        return {
            "id": file_id,
            "name": name,
            "mimetype": mimetype,
            "size": len(data),
            "url_private": url,
            "url_private_download": url,
        }

    def hold(self, method: str) -> asyncio.Event:
        """Calls to ``method`` wait until the returned event is set."""
        gate = self.holds[method] = asyncio.Event()
        return gate

    def calls_to(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method]

    def response_url(self, rid: str = "r1") -> str:
        return f"{self.base_url}/response/{rid}"

    async def wait_until(self, predicate: Callable[[], bool], within: float = 15.0) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(predicate)

    async def wait_for(
        self,
        method: str,
        count: int = 1,
        within: float = 15.0,
        where: Callable[[ApiCall], bool] | None = None,
    ) -> list[ApiCall]:
        """Wait until ``count`` calls to ``method`` (matching ``where``) were answered."""

        def matching() -> list[ApiCall]:
            return [c for c in self.calls_to(method) if where is None or where(c)]

        await self.wait_until(lambda: len(matching()) >= count, within)
        return matching()

    # ------------------------------------------------------------------------ plumbing
    async def __aexit__(self, *exc: object) -> None:
        for gate in self.holds.values():  # never leave a held request hanging at teardown
            gate.set()
        await super().__aexit__(*exc)

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/api/{method}", self.api),
            ("GET", "/api/{method}", self.api),
            ("POST", "/upload/{file_id}", self.upload),
            ("POST", "/response/{rid}", self.response),
            ("GET", "/files-pri/{file_id}/{name}", self.file_download),
            ("GET", "/link", self.link),
        ]

    def violation_response(
        self, request: web.Request, exc: ContractViolation
    ) -> web.StreamResponse:
        return web.json_response({"ok": False, "error": exc.name, "detail": exc.message})

    def _params(self, rec: RecordedRequest) -> dict[str, Any]:
        params: dict[str, Any] = dict(rec.query)
        if rec.content_type == "application/x-www-form-urlencoded" and rec.body:
            params.update(parse_qsl(rec.body.decode(), keep_blank_values=True))
        elif isinstance(rec.json, Mapping):
            params.update(rec.json)
        for key in JSON_FIELDS:
            if isinstance(params.get(key), str):
                try:
                    params[key] = json.loads(params[key])
                except ValueError:
                    raise ContractViolation(
                        f"{key} is not valid JSON", name="invalid_arguments"
                    ) from None
        return params

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def api(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        method = request.match_info["method"]
        auth = rec.headers.get("Authorization", "")
        if not auth:
            return web.json_response({"ok": False, "error": "not_authed"})
        if method == "apps.connections.open":  # the only method that takes the app token
            if auth != f"Bearer {self.app_token}":
                return web.json_response({"ok": False, "error": "invalid_auth"})
            self.calls.append(ApiCall(method, {}, rec.headers))
            return web.json_response(
                {"ok": True, "url": self.base_url.replace("http://", "ws://") + "/link"}
            )
        if auth != f"Bearer {self.token}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        handler = self._methods.get(method)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        needed = NEEDS_SCOPE.get(method, ())
        if needed and not set(needed) & set(self.scopes):
            return web.json_response(
                {
                    "ok": False,
                    "error": "missing_scope",
                    "needed": needed[0],
                    "provided": ",".join(self.scopes),
                }
            )
        params = self._params(rec)
        channel = str(params.get("channel") or params.get("channel_id") or "")
        unhonoured = len(self.rate_limits.unhonoured)
        retry_after = self.rate_limits.check(method, channel)
        if retry_after is not None:
            self.refused.append(ApiCall(method, params, rec.headers))
            self.violations.extend(self.rate_limits.unhonoured[unhonoured:])
            return web.json_response(
                {"ok": False, "error": "ratelimited"},
                status=429,
                headers={"Retry-After": str(retry_after)},
            )
        gate = self.holds.get(method)
        if gate is not None:
            await gate.wait()
        try:
            answer = await handler(params)
        finally:
            self.calls.append(ApiCall(method, params, rec.headers))
            await self._notify()
        # A slow answer after the work is done: the window in which a client that dies has
        # made a message it never heard about.
        await asyncio.sleep(self.answer_delay.get(method, 0.0))
        return web.json_response(answer, headers={"x-oauth-scopes": ",".join(self.scopes)})

    # ------------------------------------------------------------------------- methods
    def _ts(self) -> str:
        self._seq += 1
        return f"{int(time.time())}.{self._seq:06d}"

    def _in_channel(self, channel: str) -> dict[str, Any] | None:
        if self.member_channels is not None and channel not in self.member_channels:
            return {"ok": False, "error": "not_in_channel"}
        return None

    async def auth_test(self, p: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://fake-slack.test/",
            "team": "Fake Team",
            "user": "imagine",
            "team_id": self.team_id,
            "user_id": BOT_USER,
            "bot_id": "BBOT",
            "is_enterprise_install": False,
        }

    async def users_info(self, p: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(p.get("user", "")))
        if user is None:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": user}

    def _check_message(self, p: dict[str, Any]) -> None:
        require(
            isinstance(p.get("channel"), str) and p["channel"] != "",
            "channel is required",
            name="channel_not_found",
        )
        require(
            bool(p.get("text")) or bool(p.get("blocks")),
            "text or blocks is required",
            name="no_text",
        )
        if p.get("blocks") is not None:
            check_message_blocks(p["blocks"])

    async def post_message(self, p: dict[str, Any]) -> dict[str, Any]:
        self._check_message(p)
        refused = self._in_channel(p["channel"])
        if refused:
            return refused
        meta = p.get("metadata")
        if meta is not None:  # Slack's message metadata: an event_type and an object payload
            require(
                isinstance(meta, Mapping)
                and isinstance(meta.get("event_type"), str)
                and isinstance(meta.get("event_payload"), Mapping),
                "metadata needs event_type and event_payload",
                name="invalid_metadata",
            )
        ts = self._ts()
        msg = Message(
            p["channel"],
            ts,
            str(p.get("text", "")),
            list(p.get("blocks") or []),
            p.get("thread_ts"),
            metadata=dict(meta) if meta else None,
        )
        self.messages[ts] = msg
        return {
            "ok": True,
            "channel": msg.channel,
            "ts": ts,
            "message": {
                "type": "message",
                "user": BOT_USER,
                "text": msg.text,
                "ts": ts,
                "blocks": msg.blocks,
            },
        }

    async def post_ephemeral(self, p: dict[str, Any]) -> dict[str, Any]:
        self._check_message(p)
        require(
            isinstance(p.get("user"), str) and p["user"] != "",
            "user is required",
            name="user_not_in_channel",
        )
        refused = self._in_channel(p["channel"])
        if refused:
            return refused
        return {"ok": True, "message_ts": self._ts()}

    async def update(self, p: dict[str, Any]) -> dict[str, Any]:
        self._check_message(p)
        msg = self.messages.get(str(p.get("ts", "")))
        require(
            msg is not None and msg.channel == p["channel"],
            "chat.update needs the ts of a message in that channel",
            name="message_not_found",
        )
        assert msg is not None
        msg.text, msg.blocks = str(p.get("text", "")), list(p.get("blocks") or [])
        msg.updates.append(p)
        return {"ok": True, "channel": msg.channel, "ts": msg.ts, "text": msg.text}

    async def chat_delete(self, p: dict[str, Any]) -> dict[str, Any]:
        msg = self.messages.get(str(p.get("ts", "")))
        if msg is None or msg.channel != p.get("channel"):
            return {"ok": False, "error": "message_not_found"}
        del self.messages[msg.ts]
        self.deleted_messages.append(msg)
        return {"ok": True, "channel": msg.channel, "ts": msg.ts}

    async def files_delete(self, p: dict[str, Any]) -> dict[str, Any]:
        up = self.uploads.get(str(p.get("file", "")))
        if up is None:
            return {"ok": False, "error": "file_not_found"}
        if up.deleted:
            return {"ok": False, "error": "file_deleted"}
        up.deleted = True
        return {"ok": True}

    def _listing(self, p: dict[str, Any], msgs: list[Message]) -> dict[str, Any]:
        oldest = float(p.get("oldest") or 0)
        with_meta = str(p.get("include_all_metadata", "")).lower() in ("1", "true")
        limit = int(p.get("limit") or 100)
        out = []
        for m in sorted(msgs, key=lambda m: m.ts, reverse=True):
            if float(m.ts) <= oldest:
                continue
            item: dict[str, Any] = {"type": "message", "user": BOT_USER, "text": m.text, "ts": m.ts}
            if m.thread_ts:
                item["thread_ts"] = m.thread_ts
            if with_meta and m.metadata:
                item["metadata"] = m.metadata
            out.append(item)
        return {"ok": True, "messages": out[:limit], "has_more": len(out) > limit}

    async def history(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = str(p.get("channel", ""))
        refused = self._in_channel(channel)
        if refused:
            return refused
        return self._listing(
            p, [m for m in self.messages.values() if m.channel == channel and not m.thread_ts]
        )

    async def replies(self, p: dict[str, Any]) -> dict[str, Any]:
        channel, root = str(p.get("channel", "")), str(p.get("ts", ""))
        refused = self._in_channel(channel)
        if refused:
            return refused
        return self._listing(
            p,
            [
                m
                for m in self.messages.values()
                if m.channel == channel and (m.thread_ts == root or m.ts == root)
            ],
        )

    async def views_open(self, p: dict[str, Any]) -> dict[str, Any]:
        trigger = p.get("trigger_id")
        require(
            isinstance(trigger, str) and trigger in self.triggers,
            "views.open needs a trigger_id from an interaction",
            name="invalid_trigger_id",
        )
        require(
            trigger not in self.used_triggers,
            "a trigger_id can be used once",
            name="expired_trigger_id",
        )
        self.used_triggers.add(str(trigger))
        check_modal(p.get("view"))
        self._seq += 1
        return {"ok": True, "view": {"id": f"V{self._seq:08d}", **p["view"]}}

    async def get_upload_url(self, p: dict[str, Any]) -> dict[str, Any]:
        filename = p.get("filename")
        length = str(p.get("length", ""))
        require(
            isinstance(filename, str) and filename != "",
            "filename is required",
            name="invalid_arguments",
        )
        require(
            length.isdigit() and int(length) > 0,
            "length must be a positive integer",
            name="invalid_arguments",
        )
        self._seq += 1
        file_id = f"F{self._seq:08d}"
        self.uploads[file_id] = Upload(
            file_id, str(filename), int(length), alt_txt=str(p.get("alt_txt") or "")
        )
        return {"ok": True, "file_id": file_id, "upload_url": f"{self.base_url}/upload/{file_id}"}

    async def upload(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        up = self.uploads.get(request.match_info["file_id"])
        if up is None:
            return web.Response(status=404, text="not found")
        if len(rec.body) != up.length:
            self.violations.append(
                f"upload {up.file_id}: {len(rec.body)} bytes, declared {up.length}"
            )
            return web.Response(status=400, text="length mismatch")
        up.data = rec.body
        await self._notify()
        return web.Response(status=200, text=f"OK - {len(rec.body)}")

    async def complete_upload(self, p: dict[str, Any]) -> dict[str, Any]:
        files = p.get("files")
        require(
            isinstance(files, list) and 0 < len(files) <= 10,
            "files: a list of 1..10",
            name="invalid_arguments",
        )
        out = []
        for f in files:
            up = self.uploads.get(str(f.get("id"))) if isinstance(f, Mapping) else None
            require(
                up is not None and up.data is not None,
                "files.completeUploadExternal for a file that was not uploaded",
                name="file_not_found",
            )
            assert up is not None
            # Slack's documented answer: each file's id and title, nothing else (no permalink).
            out.append({"id": up.file_id, "title": f.get("title") or up.filename})
        channel = p.get("channel_id")
        if channel:
            refused = self._in_channel(str(channel))
            if refused:
                return refused
        return {"ok": True, "files": out}

    async def socket_send(self, envelope: Mapping[str, Any]) -> None:
        """Deliver one Socket Mode envelope to the newest connection."""
        await self.wait_until(lambda: bool(self.sockets))
        await self.sockets[-1].send_json(dict(envelope))

    async def link(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": 1,
                "debug_info": {"host": "fake-slack"},
                "connection_info": {"app_id": "A0IMAGINE"},
            }
        )
        self.sockets.append(ws)
        await self._notify()
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                self.socket_acks.append(json.loads(msg.data))
                await self._notify()
        return ws

    async def file_download(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        if rec.headers.get("Authorization", "") != f"Bearer {self.token}":
            return web.Response(status=403, text="forbidden")  # a file needs the bot token
        up = self.uploads.get(request.match_info["file_id"])
        if up is None or up.data is None or up.deleted:
            return web.Response(status=404, text="not found")
        return web.Response(body=up.data, content_type="application/octet-stream")

    async def response(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        self.responses.append((request.match_info["rid"], rec.json))
        await self._notify()
        return web.Response(status=200, text="ok")


__all__ = ["BOT_USER", "TEAM_ID", "ApiCall", "SlackFake", "check_message_blocks", "check_modal"]
