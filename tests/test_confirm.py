"""Ask first: a prompt that expands to more jobs than ``grammar.confirm_over`` waits for its
owner's Confirm, charging nothing until then; the button is stateless and works once."""

from __future__ import annotations

import io
import json
from pathlib import Path

import aiohttp
from PIL import Image

from adapters.web.server import start
from bot.app import App
from bot.confirm import EXPIRES_S
from tests.conftest import Chat, open_chat
from tests.test_cli import run
from tests.test_web import command
from tests.test_web import make_settings as web_settings


async def jobs_in_db(chat: Chat) -> int:
    row = await chat.app.store.fetchone("SELECT COUNT(*) AS n FROM jobs")
    assert row is not None
    return int(row["n"])


async def test_three_jobs_ask_first_and_charge_nothing_until_confirmed(chat: Chat) -> None:
    [ask] = await chat.say("alice", "/imagine a {red, blue, green} car --n 2")
    assert ask.ephemeral and ask.job_id is None
    assert "3 jobs: 6 images from your quota" in ask.text
    assert [(b.label, b.style) for b in ask.buttons] == [
        ("Run 3 jobs", "primary"),
        ("Cancel", "secondary"),
    ]
    assert await jobs_in_db(chat) == 0
    assert "50 of 50" in (await chat.say("alice", "/quota"))[0].text

    confirm = ask.buttons[0].action
    # Only the person who asked may answer.
    [refused] = await chat.click("bob", confirm)
    assert refused.ephemeral and "Only the person who sent this command" in refused.text
    assert await jobs_in_db(chat) == 0

    sent = await chat.click("alice", confirm)
    started = [r.job_id for r in sent if r.job_id]
    assert len(started) == 3
    await chat.settle()
    loaded = [await chat.app.runner.load(j) for j in started]
    prompts = sorted(job.prompt for job in loaded if job is not None)
    assert prompts == ["a blue car", "a green car", "a red car"]
    assert "44 of 50" in (await chat.say("alice", "/quota"))[0].text

    # A second click (a double click, a replay) runs nothing more.
    [again] = await chat.click("alice", confirm)
    assert again.ephemeral and "already answered" in again.text
    assert await jobs_in_db(chat) == 3


async def test_two_jobs_run_at_once_with_their_cost_told(chat: Chat) -> None:
    sent = await chat.say("alice", "/imagine a {red, blue} car --n 1")
    assert "expands to 2 jobs" in sent[0].text and not sent[0].buttons
    assert len([r for r in sent if r.job_id]) == 2


async def test_cancel_forgets_the_command(chat: Chat) -> None:
    [ask] = await chat.say("alice", "/imagine a {red, blue, green} car")
    [done] = await chat.click("alice", ask.buttons[1].action)
    assert done.text == "Cancelled; nothing was charged."
    [late] = await chat.click("alice", ask.buttons[0].action)
    assert "already answered" in late.text
    assert await jobs_in_db(chat) == 0


async def test_the_button_survives_a_restart_and_keeps_the_input_image(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, "PNG")
    async with open_chat(tmp_path) as chat:
        [ask] = await chat.say(
            "alice", "/imagine a {red, blue, green} car --n 1", init_image=buf.getvalue()
        )
    async with open_chat(tmp_path) as chat:
        sent = await chat.click("alice", ask.buttons[0].action)
        jobs = [r.job_id for r in sent if r.job_id]
        assert len(jobs) == 3
        await chat.settle()
        for job_id in jobs:
            job = await chat.app.runner.load(job_id)
            assert job is not None and job.state == "done" and job.request.init_sha


async def test_an_old_confirmation_expires(tmp_path: Path) -> None:
    now = [1_000_000.0]
    async with open_chat(tmp_path) as chat:
        chat.app.handler.ctx.clock = lambda: now[0]  # type: ignore[misc]
        [ask] = await chat.say("alice", "/imagine a {red, blue, green} car")
        now[0] += EXPIRES_S + 1
        [late] = await chat.click("alice", ask.buttons[0].action)
        assert "expired" in late.text and "nothing was charged" in late.text
        assert await jobs_in_db(chat) == 0


async def test_a_refused_run_can_be_confirmed_again(tmp_path: Path) -> None:
    async with open_chat(tmp_path, {"quota": {"user_daily": 2}}) as chat:
        [ask] = await chat.say("alice", "/imagine a {red, blue, green} car --n 1")
        [refused] = await chat.click("alice", ask.buttons[0].action)
        assert "quota" in refused.text.lower() or "left" in refused.text.lower()
        assert await jobs_in_db(chat) == 0
        # Still pressable once the quota allows it (an admin raised it).
        await chat.say("root", "/admin limit alice 10", admin=True)
        sent = await chat.click("alice", ask.buttons[0].action)
        assert len([r for r in sent if r.job_id]) == 3


async def test_the_threshold_is_a_setting(tmp_path: Path) -> None:
    async with open_chat(tmp_path, {"grammar": {"confirm_over": 3}}) as chat:
        sent = await chat.say("alice", "/imagine a {red, blue, green} car --n 1")
        assert len([r for r in sent if r.job_id]) == 3


def test_the_cli_asks_for_yes(tmp_path: Path) -> None:
    proc = run(tmp_path, "generate", "a {red, blue, green} fox --n 1", "--out", str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert "expands to 3 jobs: 3 images" in proc.stderr and "--yes" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run(
        tmp_path,
        "generate",
        "a {red, blue, green} fox --n 1",
        "--yes",
        "--json",
        "--out",
        str(tmp_path / "out"),
    )
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["jobs"]) == 3


async def test_the_playground_shows_the_question_and_runs_on_confirm(tmp_path: Path) -> None:
    async with App.open(web_settings(tmp_path)) as app:
        server = await start(app, "127.0.0.1", 0)
        try:
            async with aiohttp.ClientSession() as http:
                body = await command(http, server, "alice", "a {red, blue, green} car --n 1")
                [ask] = body["replies"]
                assert ask["ephemeral"] and not ask["job_id"]
                assert [b["label"] for b in ask["buttons"]] == ["Run 3 jobs", "Cancel"]
                async with http.post(
                    f"{server.url}/api/action",
                    json={
                        "name": "alice",
                        "channel": "general",
                        "action": ask["buttons"][0]["action"],
                    },
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    answer = await resp.json()
                assert len({r["job_id"] for r in answer["replies"] if r["job_id"]}) == 3
        finally:
            await server.close()
