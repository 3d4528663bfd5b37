"""The fake Discord's gateway: HELLO, IDENTIFY -> READY, heartbeats, dispatches, and sharding.

What it follows from Discord's gateway documentation ("Sharding", "Session Start Limit",
close codes) and the OpenAPI spec's ``GatewayBotResponse``:

* ``GET /gateway/bot`` (bot token) answers ``url``, ``shards`` (the recommended count,
  ``recommended_shards``) and ``session_start_limit`` (``total``, ``remaining``,
  ``reset_after`` in ms, ``max_concurrency``); each IDENTIFY uses up one start.
* IDENTIFY may carry ``shard: [shard_id, num_shards]`` with ``0 <= shard_id < num_shards``;
  anything else is closed with 4010 (Invalid shard). A connection that would hold more than
  ``max_guilds_per_shard`` guilds (2,500 on Discord) is closed with 4011 (Sharding required).
* IDENTIFYs in one ``max_concurrency`` bucket (``shard_id % max_concurrency``) must be 5 s
  apart: a faster one is answered with op 9 (Invalid Session) and recorded in
  ``violations``.
* READY lists the shard's guilds as unavailable, each followed by its GUILD_CREATE; a guild
  event goes only to shard ``(guild_id >> 22) % num_shards``, an event without a guild (a DM)
  only to shard 0. ``routed`` records which shard got each dispatch.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes import RecordedRequest
from tests.fakes.discord_model import APP_ID, BOT_USER, _response

IDENTIFY_WINDOW_S = 5.0
Shard = tuple[int, int] | None  # (shard_id, num_shards); None: an unsharded connection


def shard_of(guild_id: str | int, num_shards: int) -> int:
    """Discord's routing rule: which shard gets a guild's events."""
    return (int(guild_id) >> 22) % num_shards


def guild_create(guild_id: str) -> dict[str, Any]:
    """A minimal GUILD_CREATE: the guild, its @everyone role, no channels or members."""
    return {
        "id": guild_id,
        "name": f"guild {guild_id[-4:]}",
        "icon": None,
        "owner_id": "1",
        "roles": [
            {
                "id": guild_id,
                "name": "@everyone",
                "permissions": "0",
                "position": 0,
                "color": 0,
                "hoist": False,
                "managed": False,
                "mentionable": False,
                "flags": 0,
            }
        ],
        "channels": [],
        "threads": [],
        "members": [],
        "member_count": 1,
        "features": [],
        "emojis": [],
        "stickers": [],
        "voice_states": [],
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "joined_at": "2024-01-01T00:00:00+00:00",
        "large": False,
        "unavailable": False,
        "preferred_locale": "en-US",
        "premium_tier": 0,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "system_channel_flags": 0,
        "afk_timeout": 300,
    }


class GatewayFake:
    """Mixed into :class:`~tests.fakes.discord_api.DiscordFake`; call ``_init_gateway()``."""

    violations: list[str]

    @property
    def gateway_url(self) -> str:
        raise NotImplementedError

    def _bot_auth(self, request: web.Request) -> None:
        raise NotImplementedError

    def _init_gateway(self) -> None:
        import asyncio

        self.identified = asyncio.Event()
        self.identify_tokens: list[str] = []
        self.identifies: list[Shard] = []  # every IDENTIFY's shard, in order
        self.identify_times: list[float] = []  # and when it came (time.monotonic())
        self.recommended_shards = 1
        self.max_concurrency = 1
        self.session_starts = 1000
        self.max_guilds_per_shard = 2500
        # Guilds the bot is in, as the gateway tells them (READY, GUILD_CREATE); none by
        # default: interactions carry what the adapter needs.
        self.guild_ids: list[str] = []
        self.routed: list[tuple[str, Shard]] = []
        self._sockets: list[tuple[web.WebSocketResponse, Shard]] = []  # identified
        self._open: list[web.WebSocketResponse] = []
        self._seq = itertools.count(2)
        self._bucket_at: dict[int, float] = {}

    def _guilds_on(self, shard: Shard) -> list[str]:
        if shard is None:
            return list(self.guild_ids)
        return [g for g in self.guild_ids if shard_of(g, shard[1]) == shard[0]]

    def _gets(self, shard: Shard, guild_id: str | None) -> bool:
        if shard is None:
            return True
        if guild_id is None:
            return shard[0] == 0  # DMs only reach shard 0
        return shard_of(guild_id, shard[1]) == shard[0]

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        guild_id = data.get("guild_id") or (data.get("id") if event == "GUILD_CREATE" else None)
        for ws, shard in list(self._sockets):
            if self._gets(shard, None if guild_id is None else str(guild_id)):
                self.routed.append((event, shard))
                await self._send(ws, event, data)

    async def _send(self, ws: web.WebSocketResponse, event: str, data: dict[str, Any]) -> None:
        await ws.send_str(json.dumps({"op": 0, "t": event, "s": next(self._seq), "d": data}))

    async def _gateway_bot(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        self._bot_auth(request)
        return _response(
            {
                "url": self.gateway_url,
                "shards": self.recommended_shards,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": self.session_starts,
                    "reset_after": 86_400_000,
                    "max_concurrency": self.max_concurrency,
                },
            }
        )

    async def _gateway(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 45000}}))
        entry: tuple[web.WebSocketResponse, Shard] | None = None
        self._open.append(ws)
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                if frame.get("op") == 1:
                    await ws.send_str(json.dumps({"op": 11}))
                elif frame.get("op") == 2 and entry is None:
                    entry = await self._identify(ws, frame.get("d") or {})
        finally:
            self._open.remove(ws)
            if entry is not None:
                self._sockets.remove(entry)
        return ws

    async def close_gateway(self) -> None:
        for ws in list(self._open):
            await ws.close()

    async def _identify(
        self, ws: web.WebSocketResponse, d: dict[str, Any]
    ) -> tuple[web.WebSocketResponse, Shard] | None:
        self.identify_tokens.append(str(d.get("token")))
        raw = d.get("shard")
        shard: Shard = None
        if raw is not None:
            ok = (
                isinstance(raw, list)
                and len(raw) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in raw)
                and 0 <= raw[0] < raw[1]
            )
            if not ok:
                await ws.close(code=4010, message=b"Invalid shard.")
                return None
            shard = (raw[0], raw[1])
        self.identifies.append(shard)
        self.identify_times.append(time.monotonic())
        self.session_starts -= 1
        bucket = (shard[0] if shard else 0) % self.max_concurrency
        now = time.monotonic()
        last = self._bucket_at.get(bucket)
        self._bucket_at[bucket] = now
        if last is not None and now - last < IDENTIFY_WINDOW_S:
            self.violations.append(
                f"IDENTIFY of shard {shard} {now - last:.2f} s after another in its "
                f"max_concurrency bucket {bucket} (5 s apart)"
            )
            await ws.send_str(json.dumps({"op": 9, "d": False}))
            return None
        guilds = self._guilds_on(shard)
        if len(guilds) > self.max_guilds_per_shard:
            await ws.close(code=4011, message=b"Sharding required.")
            return None
        ready: dict[str, Any] = {
            "v": 10,
            "user": BOT_USER,
            "guilds": [{"id": g, "unavailable": True} for g in guilds],
            "session_id": f"fake-session-{len(self.identifies)}",
            "resume_gateway_url": self.gateway_url,
            "private_channels": [],
            "application": {"id": APP_ID, "flags": 0},
        }
        if shard is not None:
            ready["shard"] = list(shard)
        await ws.send_str(json.dumps({"op": 0, "t": "READY", "s": 1, "d": ready}))
        entry = (ws, shard)
        self._sockets.append(entry)
        for g in guilds:
            self.routed.append(("GUILD_CREATE", shard))
            await self._send(ws, "GUILD_CREATE", guild_create(g))
        self.identified.set()
        return entry
