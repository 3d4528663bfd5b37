"""Pictures in from Slack: the "Refine with imagine" message shortcut, through slack-bolt."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import make_png
from tests.fakes.slack_api import TEAM_ID, SlackFake
from tests.slack_workspace import CHANNEL, TOKEN, Workspace, workspace_on


@pytest.fixture(autouse=True)
def _no_slack_oauth_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET", "SLACK_VERIFICATION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def ws(tmp_path: Path) -> AsyncIterator[Workspace]:
    async with SlackFake(TOKEN) as fake, workspace_on(tmp_path, fake) as w:
        yield w


def shortcut(ws: Workspace, uid: str, text: str, files: list[dict[str, Any]]) -> dict[str, Any]:
    """A message_action payload, as Slack sends a message shortcut."""
    return {
        "type": "message_action",
        "callback_id": "imagine_refine",
        "trigger_id": ws.fake.new_trigger(),
        "action_ts": "1700000000.000100",
        "message_ts": "1700000000.000001",
        "team": {"id": TEAM_ID, "domain": "fake"},
        "user": {"id": uid, "name": ws.names[uid], "team_id": TEAM_ID},
        "channel": {"id": CHANNEL, "name": "general"},
        "message": {
            "type": "message",
            "user": "UPOSTER",
            "ts": "1700000000.000001",
            "text": text,
            "files": files,
        },
        "response_url": ws.fake.response_url("shortcut"),
    }


async def test_the_shortcut_starts_a_job_from_the_messages_picture(ws: Workspace) -> None:
    ivy = ws.user("ivy")
    shared = ws.fake.add_file("harbor.png", make_png("theirs", 256, 256))
    status, _ = await ws.interactive(shortcut(ws, ivy, "a harbor at dawn", [shared]))
    assert status == 200
    result = await ws.result()
    assert "a harbor at dawn" in result.params["text"]
    [job] = await ws.jobs()
    assert json.loads(job["request_json"]).get("init_sha")
    [download] = ws.fake.requests_to("/files-pri/")
    assert download.headers.get("Authorization") == f"Bearer {TOKEN}"  # the bot token
    assert ws.fake.violations == []


async def test_the_shortcut_refuses_no_picture_and_foreign_hosts_kindly(ws: Workspace) -> None:
    ivy = ws.user("ivy")
    await ws.interactive(shortcut(ws, ivy, "just words", []))
    assert "no picture" in await ws.ephemeral(1)
    elsewhere = {
        "id": "F0EVIL",
        "name": "x.png",
        "mimetype": "image/png",
        "size": 10,
        "url_private_download": "https://files.example.com/x.png",
    }
    await ws.interactive(shortcut(ws, ivy, "a fox", [elsewhere]))
    assert "not a file Slack holds" in await ws.ephemeral(2)
    big = ws.fake.add_file("big.png", make_png("big", 64, 64))
    big["size"] = 10**9
    await ws.interactive(shortcut(ws, ivy, "a fox", [big]))
    assert "limit" in await ws.ephemeral(3)
    assert await ws.jobs() == [] and not ws.fake.requests_to("/files-pri/")
