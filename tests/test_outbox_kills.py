"""Kill the bot (SIGKILL) at random moments while results are being posted to Slack; after the
last restart every finished job's result is in its channel exactly once and the ledger balances.

The bot is a real ``imagine-bot serve`` process in Slack's HTTP mode; Slack is the fake Web API
in this process, which answers slowly (after doing the work) so that kills land inside posts.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
from slack_sdk.signature import SignatureVerifier

from bot.app import DB_NAME, App
from bot.quotas import ledger_balances
from tests.conftest import REPO, make_settings
from tests.fakes.slack_api import TEAM_ID, SlackFake
from tests.fakes.slack_limits import RateLimits
from tests.slack_workspace import CHANNEL, SECRET, TOKEN
from tests.test_outbox import slack_results

JOBS = 6
KILLS = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(tmp_path: Path, fake: SlackFake, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGINE_", "SLACK_"))}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "SLACK_BOT_TOKEN": TOKEN,
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_URL": fake.api_url,
            "SLACK_HOST": "127.0.0.1",
            "SLACK_PORT": str(port),
            "IMAGINE_WEB__ENABLED": "false",
            "IMAGINE_GRAMMAR__BASE_SIDE": "256",
            "IMAGINE_PROVIDERS__OFFLINE__LATENCY_MS": "400",
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "--data-dir", str(tmp_path / "data"), "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def _ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError("the bot never listened")


async def _slash(http: aiohttp.ClientSession, port: int, fake: SlackFake, text: str) -> None:
    fake.add_user("UALICE", "alice")
    body = urlencode(
        {
            "token": "legacy-unused",
            "team_id": TEAM_ID,
            "team_domain": "fake",
            "channel_id": CHANNEL,
            "channel_name": "general",
            "user_id": "UALICE",
            "user_name": "alice",
            "command": "/imagine",
            "text": text,
            "api_app_id": "A0IMAGINE",
            "response_url": fake.response_url(),
            "trigger_id": fake.new_trigger(),
        }
    )
    ts = str(int(time.time()))
    sig = SignatureVerifier(SECRET).generate_signature(timestamp=ts, body=body)
    async with http.post(
        f"http://127.0.0.1:{port}/slack/events",
        data=body.encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": sig,
        },
    ) as resp:
        assert resp.status == 200


def _all_delivered(db_path: Path) -> bool:
    try:
        with sqlite3.connect(db_path) as db:
            jobs = db.execute(
                "SELECT COUNT(*) FROM jobs WHERE state IN ('done', 'failed', 'filtered')"
            ).fetchone()[0]
            done = db.execute(
                "SELECT COUNT(*) FROM outbox WHERE kind = 'result' AND state = 'done'"
            ).fetchone()[0]
            return bool(jobs == JOBS and done == JOBS)
    except sqlite3.Error:
        return False


async def test_random_kills_during_delivery_leave_each_result_exactly_once(tmp_path: Path) -> None:
    rng = random.Random(8)
    port = _free_port()
    # No rate limits: a killed bot's successor cannot know the Retry-After its predecessor
    # was given (it lives in memory), and this test is about exactly-once, not pacing.
    async with (
        SlackFake(TOKEN, rate_limits=RateLimits({})) as fake,
        aiohttp.ClientSession() as http,
    ):
        fake.answer_delay.update(
            {"chat.postMessage": 0.4, "files.completeUploadExternal": 0.4, "chat.update": 0.1}
        )
        proc = _start(tmp_path, fake, port)
        try:
            await _ready(port, proc)
            for i in range(JOBS):
                await _slash(http, port, fake, f"a kite number {i} --n 1")
            for _ in range(KILLS):
                await asyncio.sleep(rng.uniform(0.3, 1.6))
                proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(proc.wait)
                proc = _start(tmp_path, fake, port)
                await _ready(port, proc)
            db_path = tmp_path / "data" / DB_NAME
            deadline = time.monotonic() + 120
            while not _all_delivered(db_path):  # another process writes that database
                assert time.monotonic() < deadline, "results still undelivered"
                assert proc.poll() is None
                await asyncio.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 30)
        posted: dict[str, int] = {}  # every result post carries its outbox row's key
        for msg in fake.messages.values():
            if msg.metadata:
                key = str(msg.metadata["event_payload"]["key"])
                posted[key] = posted.get(key, 0) + 1
        finished = slack_results(fake)  # the done ones, counted by their Pick buttons
        assert fake.violations == []
    async with App.open(make_settings(tmp_path), start=False) as app:
        assert await ledger_balances(app.store)
        rows = await app.store.fetchall(
            "SELECT j.id, j.state, o.id AS row FROM jobs j JOIN outbox o ON o.job_id = j.id "
            "AND o.kind = 'result'"
        )
        assert len(rows) == JOBS
        assert posted == {f"ib{r['row']}r": 1 for r in rows}, posted
        assert finished == {r["id"]: 1 for r in rows if r["state"] == "done"}
