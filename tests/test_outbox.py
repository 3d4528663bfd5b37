"""The outbox: every result delivered once whatever the platform does, every Delete complete.

Each test goes through the real SDK (discord.py, slack-sdk/bolt) against the fake servers, and
each reproduces a finding that lost or left something before the outbox.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.discord.adapter import DiscordPoster
from adapters.web.server import start
from bot.app import App
from bot.delivery import DeliveryPolicy
from bot.types import Reply, Target
from tests.conftest import Chat, make_settings, open_chat
from tests.fakes.discord_api import CHANNEL_ID, GUILD_ID, DiscordFake
from tests.fakes.slack_api import SlackFake
from tests.slack_workspace import CHANNEL, TOKEN, button_ids, workspace_on
from tests.test_discord import imagine as discord_imagine
from tests.test_discord import inject, result_posts, running

FAST = DeliveryPolicy(backoff_s=0.05, backoff_cap_s=0.2, poll_s=0.05, give_up_after_s=30)


def fast(app: Any) -> None:
    app.handler.delivery.policy = FAST


def slack_results(fake: SlackFake) -> dict[str, int]:
    """Result messages in the channel per job (a pick's Info button names the job too)."""
    count: dict[str, int] = {}
    for msg in fake.messages.values():
        ids = [
            el["action_id"]
            for b in msg.blocks
            if b.get("type") == "actions"
            for el in b["elements"]
        ]
        picks = [a for a in ids if a.startswith("pick:")]
        if picks:
            job = picks[0].split(":")[1]
            count[job] = count.get(job, 0) + 1
    return count


async def until(predicate: Any, within: float = 30.0) -> None:
    """Poll a fake's state (the fakes have no event for every kind of change)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


@pytest.fixture
async def discord_fake() -> Any:
    async with DiscordFake() as f:
        yield f


@pytest.fixture
async def slack() -> Any:
    async with SlackFake(TOKEN) as f:
        yield f


# ------------------------------------------------------------------------------ Discord
async def test_discord_a_result_post_through_an_outage_lands_once(
    tmp_path: Path, discord_fake: DiscordFake
) -> None:
    """Six 500s (about 16 s: longer than discord.py's own retries) lost the result for good."""
    async with running(tmp_path, discord_fake) as (app, client):
        fast(app)
        discord_fake.fail_next(
            500,
            json={"message": "Internal", "code": 0},
            path=f"POST /api/v10/channels/{CHANNEL_ID}/messages",
            times=6,
        )
        inject(client, discord_fake.slash("imagine", {"prompt": "a lighthouse --n 1"}))
        posts = await discord_fake.wait_for(lambda: result_posts(discord_fake), within=60)
        await asyncio.sleep(0.5)
        assert len(result_posts(discord_fake)) == 1
        job_id = posts[0].custom_ids()[0].split(":")[1]
        row = await app.store.fetchone(
            "SELECT state, attempts FROM outbox WHERE job_id = ? AND kind = 'result'", (job_id,)
        )
        assert row is not None and row["state"] == "done" and row["attempts"] >= 2
        job = await app.store.fetchone("SELECT result_ref FROM jobs WHERE id = ?", (job_id,))
        assert job is not None and job["result_ref"] == posts[0].id


async def test_discord_a_retried_post_with_its_key_is_one_message(
    tmp_path: Path, discord_fake: DiscordFake
) -> None:
    """The answer to a post was lost (a kill, a timeout): the retry sends the same nonce and
    Discord returns the message it already made."""

    class Steps:
        key = "ib7r"

        def get(self, step: str) -> str | None:
            return None

        async def record(self, step: str, value: str) -> None:
            return None

    async with running(tmp_path, discord_fake) as (_, client):
        poster = DiscordPoster(client)
        where = Target("discord", GUILD_ID, CHANNEL_ID)
        first = await poster.post(where, Reply("the result"), Steps())
        again = await poster.post(where, Reply("the result"), Steps())
        assert first == again
        assert [m.content for m in discord_fake.messages.values()] == ["the result"]
        assert discord_fake.violations == []


async def test_discord_delete_takes_down_status_result_and_pick(
    tmp_path: Path, discord_fake: DiscordFake
) -> None:
    async with running(tmp_path, discord_fake) as (app, client):
        job_id, result = await discord_imagine(client, discord_fake, "a kite --n 2")
        click = discord_fake.click(f"pick:{job_id}:1", result)
        inject(client, click)
        await discord_fake.wait_for(
            lambda: any(m.via == "interaction" and m.files for m in discord_fake.messages.values())
        )
        pick = next(m for m in discord_fake.messages.values() if m.via == "interaction" and m.files)
        row = await app.store.fetchone("SELECT status_ref FROM jobs WHERE id = ?", (job_id,))
        assert row is not None
        inject(client, discord_fake.click(f"delete:{job_id}", result))
        await discord_fake.wait_for(
            lambda: result.id not in discord_fake.messages and pick.id not in discord_fake.messages
        )
        gone = {m.id for m in discord_fake.deleted}
        assert {result.id, pick.id, row["status_ref"]} <= gone
        assert discord_fake.violations == []


# -------------------------------------------------------------------------------- Slack
async def test_slack_a_failed_upload_is_retried_while_the_bot_runs(
    tmp_path: Path, slack: SlackFake
) -> None:
    async with workspace_on(tmp_path, slack) as ws:
        fast(ws.app)
        slack.fail_next(500, path="/api/files.getUploadURLExternal", times=3)
        alice = ws.user("alice")
        await ws.slash(alice, "/imagine", "a red kite --n 2")
        await ws.app.runner.wait_idle(20)
        await until(lambda: slack_results(slack))
        assert list(slack_results(slack).values()) == [1]
        assert slack.violations == []


async def test_slack_a_failed_post_after_the_upload_does_not_upload_again(
    tmp_path: Path, slack: SlackFake
) -> None:
    async with workspace_on(tmp_path, slack) as ws:
        fast(ws.app)
        alice = ws.user("alice")
        # The status message goes out first; the result's post fails twice after its upload.
        await ws.slash(alice, "/imagine", "an orange kite --n 2")
        await slack.wait_for("chat.postMessage", 1)
        slack.fail_next(500, path="/api/chat.postMessage", times=2)
        await ws.app.runner.wait_idle(20)
        await until(lambda: slack_results(slack))
        assert list(slack_results(slack).values()) == [1]
        assert len(slack.calls_to("files.completeUploadExternal")) == 1
        assert slack.violations == []


async def test_slack_one_undeliverable_result_blocks_no_other(
    tmp_path: Path, slack: SlackFake
) -> None:
    async with workspace_on(tmp_path, slack) as ws:
        fast(ws.app)
        alice = ws.user("alice")
        # The bot was removed from the archive channel: its results can never be posted.
        slack.member_channels = {CHANNEL}
        await ws.post(
            ws.slash_body(
                alice, "/imagine", "a lost kite --n 1", slack.new_trigger(), channel="CARCHIVE"
            ),
            "application/x-www-form-urlencoded",
        )
        await ws.slash(alice, "/imagine", "a found kite --n 1")
        await ws.app.runner.wait_idle(20)
        await until(lambda: slack_results(slack))
        assert list(slack_results(slack).values()) == [1]
        for _ in range(200):
            if await ws.app.store.fetchone("SELECT 1 FROM outbox WHERE state = 'failed'"):
                break
            await asyncio.sleep(0.05)
        lost = await ws.app.store.fetchone(
            "SELECT o.state, o.last_error, j.id FROM outbox o JOIN jobs j ON j.id = o.job_id "
            "WHERE j.channel_id = 'CARCHIVE'"
        )
        assert lost is not None and lost["state"] == "failed"
        assert "not_in_channel" in lost["last_error"]
        note = await ws.app.handler.delivery.undelivered_note(lost["id"])
        assert note.startswith("Undelivered") and "not_in_channel" in note


async def test_slack_delete_removes_messages_and_the_bots_uploads(
    tmp_path: Path, slack: SlackFake
) -> None:
    async with workspace_on(tmp_path, slack) as ws:
        alice = ws.user("alice")
        await ws.slash(alice, "/imagine", "a blue kite --n 2")
        result = await ws.result()
        job_id = button_ids(result)[0].split(":")[1]
        assert all(not u.deleted for u in slack.uploads.values())
        await ws.click(alice, result, f"delete:{job_id}")
        await until(lambda: all(u.deleted for u in slack.uploads.values()))
        assert not [
            m
            for m in slack.messages.values()
            if job_id in json.dumps(m.blocks) or "blue kite" in m.text
        ]
        assert len(slack.calls_to("chat.delete")) == 2  # the status and the result
        assert slack.violations == []


async def test_slack_delete_during_delivery_takes_the_result_down_once_it_lands(
    tmp_path: Path, slack: SlackFake
) -> None:
    async with workspace_on(tmp_path, slack) as ws:
        alice = ws.user("alice")
        await ws.slash(alice, "/imagine", "a green kite --n 1")
        await slack.wait_for("chat.postMessage", 1)  # the status message
        gate = slack.hold("chat.postMessage")  # the result's post waits
        await slack.wait_for("files.completeUploadExternal", 1)
        job_id = (await ws.jobs())[0]["id"]
        status = slack.calls_to("chat.postMessage")[0]
        # Delete from the status message's Cancel is gone (it is running); use the core.
        job = await ws.app.runner.load(job_id)
        assert job is not None
        deleting = asyncio.ensure_future(ws.app.handler.delivery.take_down(job))
        await asyncio.sleep(0.3)
        gate.set()
        await deleting
        await ws.app.runner.wait_idle(20)
        await until(
            lambda: not slack_results(slack) and all(u.deleted for u in slack.uploads.values())
        )
        assert status.params["channel"] == CHANNEL
        assert slack.violations == []


# --------------------------------------------------------------------------- web and disk
async def test_delete_removes_the_files_unless_a_live_job_shows_them(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat:
        a = await _done(chat, "a twin --n 1 --seed 9")
        img = (await chat.app.runner.load_images(a))[0]
        [varied] = await chat.click("alice", f"vary:{a}:1")  # starts from a's image
        assert varied.job_id
        await chat.settle()
        grid = await chat.app.store.fetchone("SELECT grid_sha FROM jobs WHERE id = ?", (a,))
        assert grid is not None and chat.app.image_path(grid["grid_sha"]) is not None
        await chat.click("alice", f"delete:{a}")
        assert chat.app.image_path(img.sha256) is not None  # the variation still starts from it
        assert chat.app.image_path(grid["grid_sha"]) is None  # nothing else shows the grid
        await chat.click("alice", f"delete:{varied.job_id}")
        assert chat.app.image_path(img.sha256) is None
        for sha in [i.sha256 for i in await chat.app.runner.load_images(varied.job_id)]:
            assert chat.app.image_path(sha) is None


async def _done(chat: Chat, line: str) -> str:
    [status] = await chat.say("alice", f"/imagine {line}")
    assert status.job_id
    await chat.settle()
    return status.job_id


async def test_the_playground_answers_404_for_a_deleted_jobs_image(tmp_path: Path) -> None:
    from tests.test_web import command, next_reply, open_socket

    async with App.open(make_settings(tmp_path)) as app, aiohttp.ClientSession() as http:
        server = await start(app, "127.0.0.1", 0)
        try:
            ws, _ = await open_socket(http, server)
            body = await command(http, server, "alice", "/imagine a lonely kite --n 1")
            job_id = next(r["job_id"] for r in body["replies"] if r["job_id"])
            done = await next_reply(ws, job_id=job_id, state="done")
            url = server.url + done["images"][0]["url"]
            async with http.get(url) as resp:
                assert resp.status == 200
            async with http.post(
                f"{server.url}/api/action",
                json={"name": "alice", "channel": "general", "action": f"delete:{job_id}"},
            ) as r:
                assert r.status == 200, await r.text()
            await next_reply(ws, job_id=job_id, state="deleted")
            async with http.get(url) as resp:
                assert resp.status == 404
        finally:
            await server.close()


async def test_info_follows_the_rule_of_the_other_verbs(chat: Chat) -> None:
    """Info showed the prompt and seeds to anyone, from any channel, collaboration or not."""
    job = await _done(chat, "a secret kite --n 1")
    [other_channel] = await chat.click("bob", f"info:{job}", channel="random")
    assert "Only Alice" in other_channel.text and "secret" not in other_channel.text
    await chat.say("root", "/admin collab off", admin=True)
    [closed] = await chat.click("bob", f"info:{job}")
    assert "Only Alice" in closed.text
    [own] = await chat.click("alice", f"info:{job}")
    assert "Prompt: a secret kite" in own.text


async def test_doctor_lists_what_the_outbox_gave_up_on(tmp_path: Path, slack: SlackFake) -> None:
    from tests.test_cli import run

    async with workspace_on(tmp_path, slack) as ws:
        fast(ws.app)
        slack.member_channels = {CHANNEL}
        alice = ws.user("alice")
        await ws.post(
            ws.slash_body(
                alice, "/imagine", "a lost kite --n 1", slack.new_trigger(), channel="CARCHIVE"
            ),
            "application/x-www-form-urlencoded",
        )
        for _ in range(200):  # the command is handled after Slack's ack
            row = await ws.app.store.fetchone("SELECT job_id FROM outbox WHERE state = 'failed'")
            if row is not None:
                break
            await asyncio.sleep(0.05)
        assert row is not None
        job = row["job_id"]
    proc = await asyncio.to_thread(run, tmp_path, "doctor")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "[FAIL] 1 undelivered" in proc.stdout
    assert f"result of job {job} to slack channel CARCHIVE: " in proc.stdout
    assert "not_in_channel" in proc.stdout


async def test_slack_admin_block_resolves_every_mention_form(ws_admin: Any) -> None:
    """``block <@U123|bob>`` answered "Blocked" and blocked nobody."""
    ws = ws_admin
    owner = ws.user("olga", owner=True)
    bob = ws.user("bob")
    await ws.slash(owner, "/imagine-admin", f"block <@{bob}|bob> spam")
    assert await ws.ephemeral(1) == f"Blocked {bob}."
    await ws.slash(bob, "/imagine", "a fox --n 1")
    assert "blocked" in (await ws.ephemeral(2)).lower()
    await ws.slash(owner, "/imagine-admin", "unblock @bob")
    assert "could not tell who @bob is" in await ws.ephemeral(3)
    await ws.slash(owner, "/imagine-admin", f"unblock <@{bob}>")
    assert await ws.ephemeral(4) == f"Unblocked {bob}."


@pytest.fixture
async def ws_admin(tmp_path: Path, slack: SlackFake) -> Any:
    async with workspace_on(tmp_path, slack) as ws:
        yield ws
