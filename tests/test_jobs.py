"""Durable jobs: fair scheduling, caps, restart recovery, and a real SIGKILL mid-job."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.app import DB_NAME, App
from bot.errors import ConfigError
from bot.events import JobEvent
from bot.quotas import ledger_balances
from tests.conftest import REPO, Chat, make_settings, open_chat

SLOW = {
    "providers": {"offline": {"latency_ms": 150, "concurrency": 1}},
    "jobs": {"max_running_per_user": 1},
}


async def test_round_robin_across_users(tmp_path: Path) -> None:
    async with open_chat(tmp_path, SLOW) as chat:
        a_jobs = []
        for i in range(4):
            a_jobs += [
                r.job_id for r in await chat.say("alice", f"/imagine a{i} --n 1") if r.job_id
            ]
        b_job = next(r.job_id for r in await chat.say("bob", "/imagine b --n 1") if r.job_id)
        # Bob is second in line although Alice queued three more before him.
        assert chat.app.runner.position(b_job) == 1
        assert chat.app.runner.position(a_jobs[1]) == 2
        await chat.settle()
        rows = await chat.app.store.fetchall("SELECT id FROM jobs ORDER BY started_at")
        order = [r["id"] for r in rows]
        assert order.index(b_job) == 1


async def test_per_user_running_cap_and_provider_limit(tmp_path: Path) -> None:
    overrides = {
        "providers": {"offline": {"latency_ms": 200, "concurrency": 2}},
        "jobs": {"max_running_per_user": 1},
    }
    async with open_chat(tmp_path, overrides) as chat:
        for i in range(3):
            await chat.say("alice", f"/imagine a{i} --n 1")
        await chat.say("bob", "/imagine b --n 1")
        await chat.say("carol", "/imagine c --n 1")
        peak_user, peak_all = 0, 0
        while chat.app.runner.queued_count() or chat.app.runner._tasks:
            rows = await chat.app.store.fetchall(
                "SELECT owner_id, COUNT(*) AS c FROM jobs WHERE state = 'running' GROUP BY owner_id"
            )
            peak_user = max([peak_user, *(r["c"] for r in rows)])
            peak_all = max(peak_all, sum(r["c"] for r in rows))
            await asyncio.sleep(0.02)
        assert peak_user == 1 and peak_all == 2


async def test_queue_cap_per_user_refuses_without_charging(tmp_path: Path) -> None:
    overrides = {**SLOW, "jobs": {"max_running_per_user": 1, "max_queued_per_user": 2}}
    async with open_chat(tmp_path, overrides) as chat:
        for i in range(3):
            await chat.say("alice", f"/imagine a{i} --n 1")
        [refused] = await chat.say("alice", "/imagine again --n 1")
        assert refused.ephemeral and "limit is 2" in refused.text
        await chat.settle()
        assert "47 of 50" in (await chat.say("alice", "/quota"))[0].text


async def test_queued_jobs_resume_after_a_restart(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, {"providers": {"offline": {"latency_ms": 5000, "concurrency": 1}}}
    )
    async with App.open(settings) as app:
        chat = Chat(app)
        ids = [
            r.job_id
            for line in ("/imagine one --n 1", "/imagine two --n 1")
            for r in await chat.say("alice", line)
            if r.job_id
        ]
        await asyncio.sleep(0.1)
    # graceful stop: the running one went back to the queue, the other stayed queued
    rows = await _states(tmp_path)
    assert sorted(rows.values()) == ["queued", "queued"]
    async with App.open(make_settings(tmp_path)) as app:
        await app.runner.wait_idle(30)
        assert await ledger_balances(app.store)
    assert set((await _states(tmp_path)).values()) == {"done"}
    assert set(ids) == set(rows)


async def _states(tmp_path: Path) -> dict[str, str]:
    with sqlite3.connect(tmp_path / "data" / DB_NAME) as db:
        return dict(db.execute("SELECT id, state FROM jobs").fetchall())


def _start_slow_generate(tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGINE_")}
    env.update({"IMAGINE_PROVIDERS__OFFLINE__LATENCY_MS": "60000", "PYTHONPATH": str(REPO)})
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bot",
            "--data-dir",
            str(tmp_path / "data"),
            "generate",
            "a fox in the snow --n 2",
            "--out",
            str(tmp_path / "out"),
            "--user",
            "alice",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_running(tmp_path: Path, proc: subprocess.Popen[bytes]) -> None:
    db_path = tmp_path / "data" / DB_NAME
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        if db_path.exists():
            try:
                with sqlite3.connect(db_path) as db:
                    if db.execute("SELECT 1 FROM jobs WHERE state = 'running'").fetchone():
                        return
            except sqlite3.OperationalError:
                pass
        time.sleep(0.05)
    raise AssertionError("the job never started running")


async def test_sigkill_mid_job_then_restart_completes_it_once(tmp_path: Path) -> None:
    proc = _start_slow_generate(tmp_path)
    await asyncio.to_thread(_wait_running, tmp_path, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    async with App.open(make_settings(tmp_path)) as app:
        await app.runner.wait_idle(30)
        rows = await app.store.fetchall("SELECT state, attempts FROM jobs")
        assert [(r["state"], r["attempts"]) for r in rows] == [("done", 2)]
        ledger = await app.store.fetchall("SELECT kind, units FROM ledger ORDER BY id")
        assert [(r["kind"], r["units"]) for r in ledger] == [
            ("reserve", 2),
            ("commit", 2),
            ("refund", 0),
        ]
        assert await ledger_balances(app.store)
        images = await app.store.fetchall("SELECT * FROM images")
        assert len(images) == 2


async def test_sigkill_with_no_retries_left_refunds(tmp_path: Path) -> None:
    proc = _start_slow_generate(tmp_path)
    await asyncio.to_thread(_wait_running, tmp_path, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    async with App.open(make_settings(tmp_path, {"jobs": {"retry_interrupted": 0}})) as app:
        await app.runner.wait_idle(30)
        rows = await app.store.fetchall("SELECT state, error FROM jobs")
        assert rows[0]["state"] == "failed" and "refunded" in rows[0]["error"]
        ledger = await app.store.fetchall("SELECT kind, units FROM ledger ORDER BY id")
        assert [(r["kind"], r["units"]) for r in ledger] == [
            ("reserve", 2),
            ("commit", 0),
            ("refund", 2),
        ]
        assert await ledger_balances(app.store)


async def test_one_job_runner_per_data_dir(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with App.open(settings):
        with pytest.raises(ConfigError, match="already running"):
            async with App.open(settings):
                pass
        async with App.open(settings, start=False) as reader:  # quota, doctor: fine
            assert await reader.store.fetchone("SELECT 1") is not None
    async with App.open(settings):  # released on exit
        pass


async def test_a_queued_job_can_be_cancelled_by_its_owner_and_is_refunded(tmp_path: Path) -> None:
    async with open_chat(tmp_path, SLOW) as chat:
        first = next(r.job_id for r in await chat.say("alice", "/imagine one --n 1") if r.job_id)
        [queued] = [r for r in await chat.say("alice", "/imagine two --n 3") if r.job_id]
        second = queued.job_id
        assert second is not None and [b.label for b in queued.buttons] == ["Cancel"]
        [denied] = await chat.click("bob", f"cancel:{second}")
        assert "Only the person" in denied.text
        [ok] = await chat.click("alice", f"cancel:{second}")
        assert ok.ephemeral and "3 images refunded" in ok.text
        await chat.settle()
        rows = dict(await _states(tmp_path) or {})
        assert rows[first] == "done" and rows[second] == "failed"
        assert "Cancelled by Alice" in chat.result(second).text
        [late] = await chat.click("alice", f"cancel:{first}")
        assert "already started" in late.text
        assert "49 of 50" in (await chat.say("alice", "/quota"))[0].text
        assert await ledger_balances(chat.app.store)


async def test_a_second_listener_on_the_bus_hears_the_runner_and_a_broken_one_stops_nothing(
    tmp_path: Path,
) -> None:
    async with open_chat(tmp_path) as chat:
        heard: list[JobEvent] = []

        async def broken(event: JobEvent) -> None:
            raise RuntimeError("the metrics exporter is down")

        async def record(event: JobEvent) -> None:
            heard.append(event)

        chat.app.events.on_job(broken)
        chat.app.events.on_job(record)
        job = next(r.job_id for r in await chat.say("alice", "/imagine a fox --n 2") if r.job_id)
        await chat.settle()
        assert len(chat.result(job).images) == 1  # the job ran and its result was posted
        assert JobEvent(job, progress=0.0) in heard and JobEvent(job) in heard
