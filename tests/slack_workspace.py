"""A Slack workspace seen from the bot, for the Slack adapter's tests: people send signed slash
commands and clicks to bolt's ``/slack/events``; the Slack fake answers the bot's Web API calls.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from adapters.slack.adapter import build_bolt_app, create_web_app
from bot.app import App
from tests.conftest import make_settings
from tests.fakes.slack_api import TEAM_ID, ApiCall, SlackFake

TOKEN = "xoxb-test-token"
SECRET = "signing-secret-for-tests"
CHANNEL = "C0GENERAL"
FAST = {"grammar": {"base_side": 256}}


def has_buttons(call: ApiCall) -> bool:
    """A result or a pick: buttons other than a queued job's Cancel."""
    return any(
        el["action_id"].split(":")[0] != "cancel"
        for b in call.params.get("blocks") or []
        if b.get("type") == "actions"
        for el in b["elements"]
    )


def button_ids(call: ApiCall) -> list[str]:
    return [
        el["action_id"]
        for b in call.params["blocks"]
        if b["type"] == "actions"
        for el in b["elements"]
    ]


def texts(call: ApiCall) -> str:
    return json.dumps(call.params.get("blocks")) + call.params.get("text", "")


@dataclass
class Workspace:
    """A Slack workspace seen from the bot: people type commands and click buttons."""

    fake: SlackFake
    app: App
    url: str
    http: aiohttp.ClientSession
    secret: str = SECRET
    names: dict[str, str] = field(default_factory=dict)

    def user(self, name: str, *, admin: bool = False, owner: bool = False) -> str:
        uid = "U" + name.upper()
        self.fake.add_user(uid, name, admin=admin, owner=owner)
        self.names[uid] = name
        return uid

    async def post(
        self,
        body: str,
        content_type: str,
        *,
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> tuple[int, str]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        sig = signature or SignatureVerifier(self.secret).generate_signature(
            timestamp=ts, body=body
        )
        async with self.http.post(
            self.url,
            data=body.encode(),
            headers={
                "Content-Type": content_type,
                "X-Slack-Request-Timestamp": ts,
                "X-Slack-Signature": sig,
            },
        ) as resp:
            return resp.status, await resp.text()

    def slash_body(
        self, uid: str, command: str, text: str, trigger: str, channel: str = CHANNEL
    ) -> str:
        return urlencode(
            {
                "token": "legacy-unused",
                "team_id": TEAM_ID,
                "team_domain": "fake",
                "channel_id": channel,
                "channel_name": "general",
                "user_id": uid,
                "user_name": self.names.get(uid, uid),
                "command": command,
                "text": text,
                "api_app_id": "A0IMAGINE",
                "is_enterprise_install": "false",
                "response_url": self.fake.response_url(),
                "trigger_id": trigger,
            }
        )

    async def slash(
        self, uid: str, command: str, text: str = "", *, trigger: str | None = None, **kw: Any
    ) -> tuple[int, str]:
        body = self.slash_body(uid, command, text, trigger or self.fake.new_trigger())
        return await self.post(body, "application/x-www-form-urlencoded", **kw)

    async def interactive(self, payload: Mapping[str, Any]) -> tuple[int, str]:
        body = "payload=" + quote(json.dumps(payload))
        return await self.post(body, "application/x-www-form-urlencoded")

    async def click(
        self,
        uid: str,
        message: ApiCall,
        action_id: str,
        *,
        trigger: str | None = None,
        thread_ts: str | None = None,
    ) -> tuple[int, str]:
        ts = message.params.get("ts") or self.ts_of(message)
        # Slack names the thread of a message in one (container.thread_ts), as it does here.
        thread_ts = thread_ts or message.params.get("thread_ts")
        element = next(
            el
            for b in message.params["blocks"]
            if b["type"] == "actions"
            for el in b["elements"]
            if el["action_id"] == action_id
        )
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": ts,
            "channel_id": message.params["channel"],
            "is_ephemeral": False,
        }
        msg: dict[str, Any] = {
            "type": "message",
            "ts": ts,
            "user": "UBOT",
            "text": message.params["text"],
            "blocks": message.params["blocks"],
        }
        if thread_ts:
            container["thread_ts"] = msg["thread_ts"] = thread_ts
        return await self.interactive(
            {
                "type": "block_actions",
                "api_app_id": "A0IMAGINE",
                "token": "legacy-unused",
                "team": {"id": TEAM_ID, "domain": "fake"},
                "user": {
                    "id": uid,
                    "username": self.names.get(uid, uid),
                    "name": self.names.get(uid, uid),
                    "team_id": TEAM_ID,
                },
                "container": container,
                "trigger_id": trigger or self.fake.new_trigger(),
                "channel": {"id": message.params["channel"], "name": "general"},
                "message": msg,
                "response_url": self.fake.response_url("click"),
                "actions": [
                    {
                        "type": "button",
                        "action_id": element["action_id"],
                        "block_id": "imagine-actions-0",
                        "value": element["value"],
                        "text": element["text"],
                        "action_ts": f"{time.time():.6f}",
                    }
                ],
            }
        )

    async def submit(
        self,
        uid: str,
        view: Mapping[str, Any],
        values: Mapping[str, str],
        *,
        files: Sequence[Mapping[str, Any]] = (),
        conversation: str | None = CHANNEL,
    ) -> tuple[int, str]:
        """Fill the modal the bot opened, the way Slack reports its state: a text or number
        input as ``value``, a file input as ``files`` (the file objects, as files.info would
        show them), a conversations menu as ``selected_conversation`` (with a
        ``response_urls`` entry when the menu asked for one)."""
        state: dict[str, Any] = {}
        response_urls: list[dict[str, str]] = []
        for block in view["blocks"]:
            if block["type"] != "input":
                continue
            el = block["element"]
            aid = el["action_id"]
            entry: dict[str, Any] = {"type": el["type"]}
            if el["type"] == "file_input":
                entry["files"] = [dict(f) for f in files][: el.get("max_files", 10)]
            elif el["type"] == "conversations_select":
                entry["selected_conversation"] = conversation
                if el.get("response_url_enabled") and conversation:
                    response_urls.append(
                        {
                            "block_id": block["block_id"],
                            "action_id": aid,
                            "channel_id": conversation,
                            "response_url": self.fake.response_url("modal"),
                        }
                    )
            else:
                entry["value"] = values.get(aid, el.get("initial_value"))
            state[block["block_id"]] = {aid: entry}
        extra: dict[str, Any] = {"response_urls": response_urls} if response_urls else {}
        return await self.interactive(
            {
                **extra,
                "type": "view_submission",
                "api_app_id": "A0IMAGINE",
                "token": "legacy-unused",
                "team": {"id": TEAM_ID, "domain": "fake"},
                "user": {
                    "id": uid,
                    "username": self.names.get(uid, uid),
                    "name": self.names.get(uid, uid),
                    "team_id": TEAM_ID,
                },
                "trigger_id": self.fake.new_trigger(),
                "view": {
                    **view,
                    "id": "V0MODAL",
                    "team_id": TEAM_ID,
                    "state": {"values": state},
                    "hash": "1.abc",
                    "app_id": "A0IMAGINE",
                    "bot_id": "BBOT",
                },
            }
        )

    def ts_of(self, call: ApiCall) -> str:
        for ts, msg in self.fake.messages.items():
            if msg.blocks == call.params.get("blocks") and msg.channel == call.params["channel"]:
                return ts
        raise AssertionError("message was not stored")

    async def jobs(self) -> list[Any]:
        return await self.app.store.fetchall("SELECT * FROM jobs ORDER BY created_at")

    async def result(self, n: int = 1) -> ApiCall:
        """The n-th posted message that carries buttons (a finished job or a pick)."""
        await self.app.runner.wait_idle(20)
        return (await self.fake.wait_for("chat.postMessage", n, where=has_buttons))[n - 1]

    async def ephemeral(self, n: int = 1) -> str:
        return (await self.fake.wait_for("chat.postEphemeral", n))[n - 1].params["text"]


@asynccontextmanager
async def bolt_server(app: App) -> AsyncIterator[str]:
    runner = web.AppRunner(create_web_app(build_bolt_app(app)), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/slack/events"
    finally:
        await runner.cleanup()


def slack_env(fake: SlackFake, **extra: str) -> dict[str, str]:
    return {
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": fake.api_url,
        **extra,
    }


@asynccontextmanager
async def workspace_on(tmp_path: Path, fake: SlackFake) -> AsyncIterator[Workspace]:
    settings = make_settings(tmp_path, FAST, slack_env(fake))
    async with App.open(settings) as app, bolt_server(app) as url, aiohttp.ClientSession() as http:
        yield Workspace(fake, app, url, http)
