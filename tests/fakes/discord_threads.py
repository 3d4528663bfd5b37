"""Start Thread from Message (POST /channels/{channel.id}/messages/{message.id}/threads), as
the Discord fake serves it; a mixin of :class:`tests.fakes.discord_api.DiscordFake`.

The contract, from the vendored OpenAPI (``CreateTextThreadWithMessageRequest``: ``name``
required, 1..100 characters; ``auto_archive_duration`` null or one of 60, 1440, 4320, 10080;
``rate_limit_per_user`` null or 0..21600; 201 with the thread channel) and Discord's channel
docs: the thread's id is the source message's id; a message holds at most one thread (400,
code 160004); a thread cannot be started in a thread or a DM (400, 50024); the message must be
in that channel (404, 10008); the bot needs Create Public Threads (403, 50013).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from tests.fakes import RecordedRequest, require
from tests.fakes.discord_model import APP_ID, GUILD_ID, Msg, _response, payload_of

CREATE_PUBLIC_THREADS = 1 << 35
PUBLIC_THREAD = 11
ARCHIVE_DURATIONS = (60, 1440, 4320, 10080)


def thread_channel(thread_id: str, parent_id: str, name: str, archive: int) -> dict[str, Any]:
    """A public thread as Discord shows it (the 201 body, and an interaction's ``channel``)."""
    now = dt.datetime.now(dt.UTC).isoformat()
    return {
        "id": thread_id,
        "type": PUBLIC_THREAD,
        "guild_id": GUILD_ID,
        "parent_id": parent_id,
        "owner_id": APP_ID,
        "name": name,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "message_count": 0,
        "member_count": 1,
        "total_message_sent": 0,
        "flags": 0,
        "thread_metadata": {
            "archived": False,
            "auto_archive_duration": archive,
            "archive_timestamp": now,
            "locked": False,
        },
        "member": {"id": thread_id, "user_id": APP_ID, "join_timestamp": now, "flags": 0},
    }


class ThreadRoutes:
    """Needs ``messages``, ``bot_permissions`` and ``_bot_auth`` from the fake."""

    messages: dict[str, Msg]
    bot_permissions: int
    threads: dict[str, dict[str, Any]]

    def _bot_auth(self, request: web.Request) -> None:
        raise NotImplementedError

    async def _start_thread(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        self._bot_auth(request)
        cid, mid = request.match_info["cid"], request.match_info["mid"]
        data = payload_of(rec)
        name = data.get("name")
        require(
            isinstance(name, str) and 1 <= len(name) <= 100,
            "name: must be 1 to 100 characters",
            name="50035",
        )
        archive = data.get("auto_archive_duration")
        require(
            archive is None or archive in ARCHIVE_DURATIONS,
            "auto_archive_duration: must be one of 60, 1440, 4320, 10080",
            name="50035",
        )
        slow = data.get("rate_limit_per_user")
        require(
            slow is None or (isinstance(slow, int) and 0 <= slow <= 21600),
            "rate_limit_per_user: 0 to 21600",
            name="50035",
        )
        if not self.bot_permissions & CREATE_PUBLIC_THREADS:
            return _response({"message": "Missing Permissions", "code": 50013}, 403)
        if cid in self.threads:
            return _response(
                {"message": "Cannot execute action on this channel type", "code": 50024}, 400
            )
        m = self.messages.get(mid)
        if m is None or m.ephemeral or m.channel_id != cid:
            return _response({"message": "Unknown Message", "code": 10008}, 404)
        if mid in self.threads:
            return _response(
                {"message": "A thread has already been created for this message", "code": 160004},
                400,
            )
        self.threads[mid] = thread_channel(mid, cid, str(name), int(archive or 1440))
        return _response(self.threads[mid], 201)
