"""Defaults, --from, team avatars and the family tree through real slack-bolt and slack_sdk,
against the fake Slack (``tests.fakes.slack_api``), which checks Slack's documented limits."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.slack_api import TEAM_ID, SlackFake
from tests.slack_workspace import CHANNEL, TOKEN, button_ids, has_buttons, workspace_on


@pytest.fixture(autouse=True)
def _no_slack_oauth_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET", "SLACK_VERIFICATION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def fake() -> AsyncIterator[SlackFake]:
    async with SlackFake(TOKEN) as f:
        yield f


async def test_settings_then_a_job_then_from_through_slack(tmp_path: Path, fake: SlackFake) -> None:
    async with workspace_on(tmp_path, fake) as ws:
        alice = ws.user("alice")
        assert (await ws.slash(alice, "/imagine", "settings n=2 ar=3:2 remix=on"))[0] == 200
        assert "Your defaults: n=2 ar=3:2 remix=on" in await ws.ephemeral(1)
        await ws.slash(alice, "/imagine", "a paper crane")
        first = await ws.result()
        [job] = await ws.jobs()
        assert job["n"] == 2 and json.loads(job["request_json"])["display_remix"] is True
        await ws.click(alice, first, f"info:{job['id']}")
        info = await ws.ephemeral(2)
        assert "n: your default" in info and f"--seed {job['seed']}" in info
        await ws.slash(alice, "/imagine", f"--from {job['id']}")
        await ws.result(2)
        jobs = await ws.jobs()
        assert len(jobs) == 2 and (jobs[1]["seed"], jobs[1]["n"]) == (job["seed"], 2)
        assert ws.fake.violations == []


async def test_avatars_for_mentioned_members_and_the_tree_upload(
    tmp_path: Path, fake: SlackFake
) -> None:
    async with workspace_on(tmp_path, fake) as ws:
        owner = ws.user("olga", owner=True)
        bob = ws.user("bob")
        await ws.slash(owner, "/imagine-admin", "avatar-style channel anime seed=7")
        assert "avatar style: style anime, base seed 7" in await ws.ephemeral(1)
        # Slack writes mentions as <@U…|name> when the command escapes them.
        await ws.slash(bob, "/imagine", "avatar <@UOLGA|olga> <@UBOB> smiling")
        assert "2 avatars" in await ws.ephemeral(2)
        await ws.result(2)
        jobs = await ws.jobs()
        assert [(j["seed"], j["n"]) for j in jobs] == [(7, 1), (8, 1)]
        assert "for user UOLGA" in jobs[0]["notice"]
        first = f"pick:{jobs[0]['id']}:1"  # the two results may come in either order
        picked_from = next(
            r
            for r in await ws.fake.wait_for("chat.postMessage", 2, where=has_buttons)
            if first in button_ids(r)
        )
        await ws.click(bob, picked_from, f"pick:{jobs[0]['id']}:1")
        pick = await ws.result(3)
        assert f"sizes:{jobs[0]['id']}:1" in button_ids(pick)
        assert f"tree:{jobs[0]['id']}" in button_ids(pick)
        uploads_before = len(ws.fake.uploads)
        await ws.click(bob, pick, f"sizes:{jobs[0]['id']}:1")
        await ws.fake.wait_for("files.completeUploadExternal", 4)
        names = sorted(u.filename for u in ws.fake.uploads.values())
        assert len(ws.fake.uploads) == uploads_before + 5
        assert any(n.endswith("-128px.png") for n in names)
        assert any(n.endswith("-round.png") for n in names)
        await ws.slash(bob, "/imagine", f"tree {jobs[0]['id']}")
        await ws.fake.wait_for("files.completeUploadExternal", 5)
        assert any(u.filename.startswith("lineage-") for u in ws.fake.uploads.values())
        assert ws.fake.violations == []


async def test_the_settings_button_opens_a_slack_modal_that_saves(
    tmp_path: Path, fake: SlackFake
) -> None:
    async with workspace_on(tmp_path, fake) as ws:
        dana = ws.user("dana")
        await ws.slash(dana, "/imagine", "settings")
        (shown,) = await ws.fake.wait_for("chat.postEphemeral")
        assert "settings:yourdefaults" in json.dumps(shown.params["blocks"])
        # A click on the ephemeral message, the way Slack reports one (no "message" in it).
        trigger = ws.fake.new_trigger()
        await ws.interactive(
            {
                "type": "block_actions",
                "api_app_id": "A0IMAGINE",
                "team": {"id": TEAM_ID, "domain": "fake"},
                "user": {"id": dana, "username": "dana", "name": "dana", "team_id": TEAM_ID},
                "container": {
                    "type": "message",
                    "message_ts": "1700000000.000100",
                    "channel_id": CHANNEL,
                    "is_ephemeral": True,
                },
                "trigger_id": trigger,
                "channel": {"id": CHANNEL, "name": "general"},
                "response_url": ws.fake.response_url("click"),
                "actions": [
                    {
                        "type": "button",
                        "action_id": "settings:yourdefaults",
                        "block_id": "imagine-actions-0",
                        "value": "settings:yourdefaults",
                        "text": {"type": "plain_text", "text": "Edit my defaults"},
                        "action_ts": "1700000001.000200",
                    }
                ],
            }
        )
        (opened,) = await ws.fake.wait_for("views.open")
        assert opened.params["trigger_id"] == trigger
        view = opened.params["view"]
        assert [b["block_id"] for b in view["blocks"]] == ["n", "ar", "style", "engine", "remix"]
        status, body = await ws.submit(dana, view, {"n": "2", "ar": "2:3", "remix": "on"})
        assert (status, body) == (200, "")
        saved = await ws.ephemeral(2)
        assert "Your defaults: n=2 ar=2:3 remix=on" in saved
        await ws.slash(dana, "/imagine", "a teapot")
        await ws.result()
        [job] = await ws.jobs()
        assert job["n"] == 2
        assert ws.fake.violations == []
