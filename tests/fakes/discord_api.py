"""A fake Discord (REST API v10 and a minimal gateway) on loopback, for the real discord.py.

Point ``DISCORD_API_BASE_URL`` at ``fake.api_url`` and ``DISCORD_GATEWAY_URL`` at
``fake.gateway_url``. Routes::

    GET  /users/@me   GET /oauth2/applications/@me   PUT /applications/{app}/commands
    POST /interactions/{id}/{token}/callback            (types 4, 5, 6, 7, 9)
    POST /webhooks/{app}/{token}                         follow-up
    PATCH|DELETE /webhooks/{app}/{token}/messages/{id|@original}
    POST /channels/{id}/messages   PATCH /channels/{id}/messages/{id}
    POST /channels/{id}/messages/{id}/threads            Start Thread from Message
    PATCH /guilds/{id}              Modify Guild: the icon, with Manage Server (``guild_icon``)
    GET  /attachments/{name}        (bytes a test put in ``fake.files``)
    GET  /gateway/bot               the recommended shard count and session start limit
    WS   /gateway                   HELLO, IDENTIFY -> READY, heartbeats, ``dispatch()``,
                                    shards and their routing (``discord_gateway.py``)

It behaves like Discord where the adapter's design depends on it: one initial response per
interaction (a second is 40060), no modal in reply to a modal submit, follow-ups need an
initial response, the first follow-up after a "thinking" defer edits that message and keeps
its visibility (the deprecated path, recorded in ``fake.deprecated``), ephemeral messages
cannot be edited through the channel endpoint (10008). Every message payload is checked
against Discord's limits (content 2000, 5 rows of 5 buttons, custom_id 1-100 and unique,
label 80, 10 files of 10 MiB, modal title 45) and must carry ``allowed_mentions.parse == []``:
a breach is answered with Discord's 400 *and* appended to ``fake.violations``.

JSON answers use exactly ``Content-Type: application/json``: discord.py parses nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import itertools
import re
import time
from typing import Any

import discord
from aiohttp import web

from tests.fakes import ContractViolation, FakeServer, Handler, RecordedRequest, require
from tests.fakes.discord_gateway import GatewayFake
from tests.fakes.discord_limits import EditLimit
from tests.fakes.discord_model import (
    ADMINISTRATOR,
    APP_ID,
    BOT_USER,
    CHANNEL_ID,
    EPHEMERAL,
    GUILD_ID,
    MANAGE_GUILD,
    NONCE_WINDOW_S,
    TOKEN,
    FakeInteraction,
    Msg,
    _response,
    check_message,
    payload_of,
)
from tests.fakes.discord_payloads import InteractionPayloads
from tests.fakes.discord_threads import ThreadRoutes


class DiscordFake(GatewayFake, ThreadRoutes, InteractionPayloads, FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.messages: dict[str, Msg] = {}
        self.deleted: list[Msg] = []
        self.interactions: dict[str, FakeInteraction] = {}
        self.deprecated: list[str] = []
        self.files: dict[str, bytes] = {}
        self.commands: list[dict[str, Any]] = []
        self._at: dict[int, float] = {}
        self._ids = itertools.count(1)
        self._init_gateway()  # discord_gateway.py: IDENTIFY, READY, shards, dispatch()
        # What the bot may do in the guild: sent as each interaction's app_permissions and
        # checked by Modify Guild. A test takes Manage Server away to see the bot ask for it.
        self.bot_permissions = 2147483647
        self.guild_icon: bytes | None = None
        self.edit_limit = EditLimit()  # 5 edits per 5 s per channel (discord_limits.py)
        self.threads: dict[str, dict[str, Any]] = {}  # by id: the message it started from

    # ------------------------------------------------------------------------ helpers
    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/gateway"

    def snowflake(self) -> str:
        return str(discord.utils.time_snowflake(dt.datetime.now(dt.UTC)) + next(self._ids))

    def at(self, rec: RecordedRequest) -> float:
        """When (``time.time()``) the request arrived."""
        return self._at[id(rec)]

    def callbacks(self, interaction_id: str) -> list[dict[str, Any]]:
        return [
            payload_of(r)
            for r in self.requests
            if r.path.startswith(f"/api/v10/interactions/{interaction_id}/")
        ]

    def for_token(self, token: str) -> list[RecordedRequest]:
        return [r for r in self.requests if f"/{token}" in r.path]

    def channel_posts(self) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if r.method == "POST" and r.path.endswith(f"/channels/{CHANNEL_ID}/messages")
        ]

    def message_payloads(self) -> list[dict[str, Any]]:
        """Every payload that could create or change a message (to check mentions on)."""
        out = []
        for r in self.requests:
            data = payload_of(r)
            if r.method in ("POST", "PATCH") and ("/messages" in r.path or "/webhooks/" in r.path):
                out.append(data)
            elif "/callback" in r.path and data.get("type") in (4, 7):
                out.append(data.get("data") or {})
        return out

    async def wait_for(self, predicate: Any, within: float = 10.0) -> Any:
        """Poll until ``predicate()`` is truthy; return its value."""
        deadline = time.monotonic() + within
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    "timed out waiting for the bot; requests seen:\n"
                    + "\n".join(f"{r.method} {r.path}" for r in self.requests)
                )
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------------------ routes
    def routes(self) -> list[tuple[str, str, Handler]]:
        p = "/api/v10"
        return [
            ("GET", f"{p}/users/@me", self._me),
            ("GET", f"{p}/oauth2/applications/@me", self._app_info),
            ("PUT", f"{p}/applications/{{app}}/commands", self._sync),
            ("PUT", f"{p}/applications/{{app}}/guilds/{{guild}}/commands", self._sync),
            ("POST", f"{p}/interactions/{{iid}}/{{token}}/callback", self._callback),
            ("POST", f"{p}/webhooks/{{app}}/{{token}}", self._followup),
            ("PATCH", f"{p}/webhooks/{{app}}/{{token}}/messages/{{mid}}", self._webhook_edit),
            ("DELETE", f"{p}/webhooks/{{app}}/{{token}}/messages/{{mid}}", self._webhook_delete),
            ("POST", f"{p}/channels/{{cid}}/messages", self._channel_post),
            ("PATCH", f"{p}/channels/{{cid}}/messages/{{mid}}", self._channel_edit),
            ("DELETE", f"{p}/channels/{{cid}}/messages/{{mid}}", self._channel_delete),
            ("POST", f"{p}/channels/{{cid}}/messages/{{mid}}/threads", self._start_thread),
            ("PATCH", f"{p}/guilds/{{guild}}", self._modify_guild),
            ("GET", "/attachments/{name}", self._attachment),
            ("GET", f"{p}/gateway/bot", self._gateway_bot),
            ("GET", "/gateway", self._gateway),
        ]

    async def __aenter__(self) -> DiscordFake:
        await super().__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close_gateway()
        await super().__aexit__(*exc)

    async def _record(self, request: web.Request) -> RecordedRequest:
        rec = await super()._record(request)
        self._at[id(rec)] = time.time()
        return rec

    def violation_response(
        self, request: web.Request, exc: ContractViolation
    ) -> web.StreamResponse:
        code = int(exc.name) if exc.name.isdigit() else 50035
        return _response({"message": exc.message, "code": code}, exc.status)

    def _bot_auth(self, request: web.Request) -> None:
        require(
            request.headers.get("Authorization") == f"Bot {TOKEN}",
            "401: Unauthorized",
            401,
            name="0",
        )

    async def _me(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        self._bot_auth(request)
        return _response(BOT_USER)

    async def _app_info(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        self._bot_auth(request)
        return _response(
            {
                "id": APP_ID,
                "name": "imagine",
                "description": "",
                "icon": None,
                "bot_public": False,
                "bot_require_code_grant": False,
                "owner": BOT_USER,
                "verify_key": "00" * 32,
                "flags": 0,
            }
        )

    async def _sync(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        self._bot_auth(request)
        body = rec.json if isinstance(rec.json, list) else []
        # Discord answers with each command as stored; a USER or MESSAGE command's
        # description is an empty string (application-commands: "Application Command Object").
        self.commands = [
            {
                "description": "",
                **c,
                "id": self.snowflake(),
                "application_id": APP_ID,
                "version": "1",
            }
            for c in body
        ]
        return _response(self.commands)

    async def _attachment(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        blob = self.files.get(request.match_info["name"])
        if blob is None:
            return web.Response(status=404)
        return web.Response(body=blob, content_type="image/png")

    # messages -----------------------------------------------------------------------
    def message_json(self, m: Msg) -> dict[str, Any]:
        return {
            "id": m.id,
            "channel_id": m.channel_id,
            "type": 0,
            "content": m.content,
            "author": BOT_USER,
            "attachments": m.attachments,
            "embeds": [],
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "pinned": False,
            "tts": False,
            "timestamp": dt.datetime.now(dt.UTC).isoformat(),
            "edited_timestamp": None,
            "flags": m.flags,
            "components": m.components,
            **({"nonce": m.nonce} if m.nonce is not None else {}),
            **({"webhook_id": APP_ID, "application_id": APP_ID} if m.via != "channel" else {}),
        }

    def _write(self, m: Msg, data: dict[str, Any], rec: RecordedRequest, *, edit: bool) -> None:
        check_message(data, rec.files)
        if "content" in data:
            m.content = data.get("content") or ""
        if "components" in data or not edit:
            m.components = data.get("components") or []
        new_files = [(f[0], f[1]) for k, f in sorted(rec.files.items()) if k.startswith("files[")]
        if new_files or "attachments" in data or not edit:
            m.files = new_files
            m.attachments = [
                {
                    "id": self.snowflake(),
                    "filename": n,
                    "size": len(b),
                    "url": f"{self.base_url}/attachments/{n}",
                    "proxy_url": f"{self.base_url}/attachments/{n}",
                }
                for n, b in new_files
            ]
        if edit:
            m.edits += 1

    def _new_message(
        self,
        channel_id: str,
        data: dict[str, Any],
        rec: RecordedRequest,
        *,
        via: str,
        flags: int = 0,
    ) -> Msg:
        m = Msg(self.snowflake(), channel_id, "", flags=flags, via=via)
        self._write(m, data, rec, edit=False)
        require(
            bool(m.content or m.files or m.components), "Cannot send an empty message", name="50006"
        )
        self.messages[m.id] = m
        return m

    async def _channel_post(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        self._bot_auth(request)
        data = payload_of(rec)
        nonce = data.get("nonce")
        if nonce is not None:
            require(
                isinstance(nonce, (str, int)) and len(str(nonce)) <= 25,
                "nonce: at most 25 characters",
                name="50035",
            )
            if data.get("enforce_nonce"):
                # Discord: another message by the same author with this nonce in the past few
                # minutes is returned, and no new message is created.
                for old in self.messages.values():
                    if (
                        old.nonce == str(nonce)
                        and old.via == "channel"
                        and time.time() - old.created < NONCE_WINDOW_S
                    ):
                        return _response(self.message_json(old))
        ref = data.get("message_reference")
        if ref is not None:  # a reply: to a message of this channel, unless told not to care
            require(
                isinstance(ref, dict) and str(ref.get("message_id", "")).isdigit(),
                "message_reference.message_id is required",
                name="50035",
            )
            target = self.messages.get(str(ref["message_id"]))
            # "the channel id of the referenced message must match the channel that you're
            # sending the message in" (a reply; fail_if_not_exists does not lift it).
            named = ref.get("channel_id")
            require(
                (named is None or str(named) == request.match_info["cid"])
                and (target is None or target.channel_id == request.match_info["cid"]),
                "message_reference: Cannot reply to a message in a different channel",
                name="50035",
            )
            require(
                ref.get("fail_if_not_exists") is False
                or (target is not None and target.channel_id == request.match_info["cid"]),
                "Unknown message",
                name="50035",
            )
        m = self._new_message(request.match_info["cid"], data, rec, via="channel")
        m.nonce = None if nonce is None else str(nonce)
        m.created = time.time()
        return _response(self.message_json(m))

    async def _channel_delete(
        self, request: web.Request, rec: RecordedRequest
    ) -> web.StreamResponse:
        self._bot_auth(request)
        m = self.messages.get(request.match_info["mid"])
        if m is None or m.ephemeral or m.channel_id != request.match_info["cid"]:
            return _response({"message": "Unknown Message", "code": 10008}, 404)
        del self.messages[m.id]
        self.deleted.append(m)
        return web.Response(status=204)

    async def _modify_guild(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        """Modify Guild: "Requires the MANAGE_GUILD permission"; ``icon`` is image data, a
        "base64 1024x1024 png/jpeg/gif image"; the audit-log reason is at most 512 chars."""
        self._bot_auth(request)
        if request.match_info["guild"] != GUILD_ID:
            return _response({"message": "Unknown Guild", "code": 10004}, 404)
        if not self.bot_permissions & (MANAGE_GUILD | ADMINISTRATOR):
            return _response({"message": "Missing Permissions", "code": 50013}, 403)
        reason = request.headers.get("X-Audit-Log-Reason", "")
        require(len(reason) <= 512, "X-Audit-Log-Reason over 512 characters", name="50035")
        data = rec.json if isinstance(rec.json, dict) else {}
        icon = data.get("icon")
        match = re.fullmatch(r"data:image/(png|jpeg|gif);base64,([A-Za-z0-9+/=]+)", str(icon))
        require(match is not None, "icon must be a png/jpeg/gif data URI", name="50035")
        assert match is not None
        self.guild_icon = base64.b64decode(match.group(2))
        icon_hash = hashlib.md5(self.guild_icon, usedforsecurity=False).hexdigest()
        return _response({"id": GUILD_ID, "name": "Fake Guild", "icon": icon_hash, "features": []})

    async def _channel_edit(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        self._bot_auth(request)
        unhonoured = len(self.edit_limit.unhonoured)
        headers, retry_after = self.edit_limit.check(request.match_info["cid"])
        self.violations.extend(self.edit_limit.unhonoured[unhonoured:])
        if retry_after is not None:
            body = {"message": "You are being rate limited.", "retry_after": retry_after}
            answer = _response({**body, "global": False}, 429)
            answer.headers.update(headers)
            return answer
        m = self.messages.get(request.match_info["mid"])
        # Ephemeral messages exist only for their viewer: the bot token cannot see them.
        if m is None or m.ephemeral or m.channel_id != request.match_info["cid"]:
            return _response({"message": "Unknown Message", "code": 10008}, 404)
        self._write(m, payload_of(rec), rec, edit=True)
        answer = _response(self.message_json(m))
        answer.headers.update(headers)
        return answer

    # interaction responses ----------------------------------------------------------
    def _by_token(self, token: str) -> FakeInteraction:
        for it in self.interactions.values():
            if it.token == token:
                return it
        raise ContractViolation("Unknown Webhook", 404, "10015")

    async def _callback(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        it = self.interactions.get(request.match_info["iid"])
        if it is None or it.token != request.match_info["token"]:
            return _response({"message": "Unknown interaction", "code": 10062}, 404)
        require(it.callback is None, "Interaction has already been acknowledged.", name="40060")
        body = payload_of(rec)
        ctype = body.get("type")
        data = body.get("data") or {}
        allowed = {2: (4, 5, 9), 3: (4, 5, 6, 7, 9), 5: (4, 5, 6, 7)}[it.type]
        require(
            ctype in allowed,
            f"callback type {ctype} is not allowed for interaction type {it.type}",
            name="50035",
        )
        it.callback = ctype
        answer: dict[str, Any] = {
            "id": it.id,
            "type": it.type,
            "response_message_loading": ctype == 5,
            "response_message_ephemeral": False,
        }
        if ctype == 5:
            require(
                (data.get("flags") or 0) & ~EPHEMERAL == 0,
                "a deferred response may only carry the EPHEMERAL flag",
                name="50035",
            )
            it.ephemeral = bool((data.get("flags") or 0) & EPHEMERAL)
            it.loading = True
            m = Msg(
                self.snowflake(),
                it.channel_id,
                "",
                flags=EPHEMERAL if it.ephemeral else 0,
                via="interaction",
            )
            self.messages[m.id] = m
            it.original = m.id
            answer["response_message_ephemeral"] = it.ephemeral
            answer["response_message_id"] = m.id
            return _response({"interaction": answer})
        if ctype == 9:
            title, cid, comps = data.get("title"), data.get("custom_id"), data.get("components")
            require(
                isinstance(title, str) and 1 <= len(title) <= 45, "modal title 1-45", name="50035"
            )
            require(
                isinstance(cid, str) and 1 <= len(cid) <= 100, "modal custom_id 1-100", name="50035"
            )
            require(
                isinstance(comps, list) and 1 <= len(comps) <= 5,
                "modal 1-5 components",
                name="50035",
            )
            it.modal = data
            return _response({"interaction": answer})
        if ctype == 4:
            flags = int(data.get("flags") or 0)
            m = self._new_message(it.channel_id, data, rec, via="interaction", flags=flags)
            it.original = m.id
            answer["response_message_ephemeral"] = bool(flags & EPHEMERAL)
            answer["response_message_id"] = m.id
            return _response(
                {"interaction": answer, "resource": {"type": 4, "message": self.message_json(m)}}
            )
        return _response({"interaction": answer})  # 6 (and 7, which this bot never sends)

    async def _followup(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        require(request.match_info["app"] == APP_ID, "Unknown Webhook", 404, name="10015")
        it = self._by_token(request.match_info["token"])
        require(it.callback is not None, "Unknown Webhook", 404, name="10015")
        data = payload_of(rec)
        if it.loading and it.original in self.messages:
            # Deprecated: the first follow-up after a thinking defer edits that message and
            # keeps its visibility, whatever flags the follow-up asked for.
            self.deprecated.append(f"follow-up edited the thinking message of {it.id}")
            it.loading = False
            m = self.messages[it.original]
            self._write(m, data, rec, edit=True)
            return _response(self.message_json(m))
        m = self._new_message(
            it.channel_id,
            data,
            rec,
            via="interaction",
            flags=int(data.get("flags") or 0) & EPHEMERAL,
        )
        return _response(self.message_json(m))

    def _webhook_target(self, request: web.Request) -> tuple[FakeInteraction, Msg]:
        require(request.match_info["app"] == APP_ID, "Unknown Webhook", 404, name="10015")
        it = self._by_token(request.match_info["token"])
        mid = request.match_info["mid"]
        if mid == "@original":
            mid = it.original or ""
        m = self.messages.get(mid)
        if m is None:
            raise ContractViolation("Unknown Message", 404, "10008")
        return it, m

    async def _webhook_edit(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        it, m = self._webhook_target(request)
        if m.id == it.original:
            it.loading = False
        self._write(m, payload_of(rec), rec, edit=True)
        return _response(self.message_json(m))

    async def _webhook_delete(
        self, request: web.Request, rec: RecordedRequest
    ) -> web.StreamResponse:
        it, m = self._webhook_target(request)
        if m.id == it.original:
            it.loading = False
        del self.messages[m.id]
        return web.Response(status=204)


__all__ = [
    "APP_ID",
    "CHANNEL_ID",
    "EPHEMERAL",
    "GUILD_ID",
    "MANAGE_GUILD",
    "TOKEN",
    "DiscordFake",
    "Msg",
    "payload_of",
]
