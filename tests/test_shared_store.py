"""Several processes on one database: jobs taken by lease (bot.leasing).

Two Apps opened with ``shared=True`` on one data dir stand for two bot processes on one shared
store (here SQLite, whose writers SQLite itself serialises; the PostgreSQL store runs the same
contract). A killed process is a real subprocess, killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.app import App
from bot.quotas import ledger_balances
from tests.conftest import Chat, make_settings

REPO = Path(__file__).resolve().parent.parent


def shared_settings(
    tmp_path: Path, latency_ms: int = 200, store: dict[str, Any] | None = None, **jobs: Any
) -> Any:
    """Settings for one of the "processes": SQLite in ``tmp_path`` (opened with shared=True)
    or, with ``store`` (the store_overrides fixture), a PostgreSQL database (shared always)."""
    return make_settings(
        tmp_path,
        {
            "grammar": {"base_side": 256},
            "providers": {"default": "offline", "offline": {"latency_ms": latency_ms}},
            "jobs": {"lease_s": 1.0, "claim_poll_s": 0.1, **jobs},
            **(store or {}),
        },
    )


@contextlib.asynccontextmanager
async def two_processes(settings: Any) -> AsyncIterator[tuple[Chat, Chat]]:
    async with (
        App.open(settings, shared=True) as a,
        App.open(settings, shared=True) as b,
    ):
        yield Chat(a), Chat(b)


async def states(app: App) -> list[dict[str, Any]]:
    rows = await app.store.fetchall(
        "SELECT id, owner_id, state, attempts, lease_owner FROM jobs ORDER BY created_at"
    )
    return [dict(r) for r in rows]


async def wait_all_final(app: App, within: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    while True:
        rows = await states(app)
        if rows and all(r["state"] not in ("queued", "running") for r in rows):
            return rows
        assert time.monotonic() < deadline, rows
        await asyncio.sleep(0.05)


async def test_two_processes_share_the_queue_fairly_and_run_each_job_once(
    tmp_path: Path, store_overrides: dict[str, Any]
) -> None:
    # Nothing is killed here: the default lease (5 s), so a busy machine cannot stall a process
    # past it (that would be a take-over, tested below).
    settings = shared_settings(
        tmp_path, store=store_overrides, latency_ms=150, max_running_per_user=2, lease_s=5.0
    )
    async with two_processes(settings) as (a, b):
        users = ["ann", "bo", "cy", "di"]
        for user in users:
            for i in range(3):
                sent = await a.say(user, f"/imagine job {i} of {user} --n 1")
                assert any(r.job_id for r in sent), [r.text for r in sent]
        most_running: dict[str, int] = {}
        deadline = time.monotonic() + 60
        while True:
            rows = await states(a.app)
            for user in users:
                running = sum(1 for r in rows if r["owner_id"] == user and r["state"] == "running")
                most_running[user] = max(most_running.get(user, 0), running)
            if all(r["state"] == "done" for r in rows):
                break
            assert time.monotonic() < deadline, rows
            await asyncio.sleep(0.02)
        assert len(rows) == 12
        assert all(r["attempts"] == 1 for r in rows)  # no job ran twice
        owners = {r["lease_owner"] for r in rows}
        assert len(owners) == 2, owners  # both processes took jobs
        assert max(most_running.values()) <= 2  # the per-user cap holds across processes
        images = await a.app.store.fetchall(
            "SELECT job_id, COUNT(*) AS n FROM images GROUP BY job_id"
        )
        assert {r["n"] for r in images} == {1} and len(images) == 12
        assert await ledger_balances(a.app.storage)
        assert "47 of 50" in (await a.say("ann", "/quota"))[0].text
        # Each result is posted once, by one of the two (both have the platform's poster).
        deadline = time.monotonic() + 20
        while True:
            posted = [r.job_id for r in [*a.channel.posted, *b.channel.posted] if r.state == "done"]
            if sorted(posted) == sorted(r["id"] for r in rows):
                break
            assert time.monotonic() < deadline, posted
            await asyncio.sleep(0.05)


async def test_a_job_slower_than_its_lease_is_renewed_not_stolen(
    tmp_path: Path, store_overrides: dict[str, Any]
) -> None:
    settings = shared_settings(tmp_path, store=store_overrides, latency_ms=3000, lease_s=1.0)
    async with two_processes(settings) as (a, _):
        await a.say("ann", "/imagine slow --n 1")
        [row] = await wait_all_final(a.app)
        assert row["state"] == "done" and row["attempts"] == 1


async def test_a_graceful_stop_gives_running_jobs_back_at_once(
    tmp_path: Path, store_overrides: dict[str, Any]
) -> None:
    settings = shared_settings(tmp_path, store=store_overrides, latency_ms=1500, lease_s=30.0)
    first = contextlib.AsyncExitStack()
    a = await first.enter_async_context(App.open(settings, shared=True))
    try:
        await Chat(a).say("ann", "/imagine given back --n 1")
        deadline = time.monotonic() + 10
        while not any(r["state"] == "running" for r in await states(a)):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        async with App.open(settings, shared=True) as b:
            stopped = time.monotonic()
            await first.aclose()  # a stops: it gives its running job back
            [row] = await wait_all_final(b)
            # Taken by b long before a 30 s lease could run out; the attempt not counted.
            assert time.monotonic() - stopped < 10
            assert row["state"] == "done" and row["attempts"] == 1
    finally:
        await first.aclose()


KILLED_PROCESS = textwrap.dedent(
    """
    import asyncio, json, sys
    from bot.app import App
    from bot.types import Actor, Invocation
    from tests.conftest import Responses, make_settings
    from tests.test_shared_store import shared_settings
    from pathlib import Path

    async def main() -> None:
        store = json.loads(sys.argv[2])
        settings = shared_settings(Path(sys.argv[1]), 600000, store, lease_s=1.0)
        async with App.open(settings, shared=True) as app:
            actor = Actor("test", "team", "ann", "Ann", (), False)
            inv = Invocation(actor, "general", command="imagine", text="never finishes --n 1")
            await app.handle(inv, Responses())
            while not await app.store.fetchone("SELECT 1 FROM jobs WHERE state = 'running'"):
                await asyncio.sleep(0.02)
            print("running", flush=True)
            await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_a_killed_process_loses_its_job_to_another_when_the_lease_runs_out(
    tmp_path: Path, store_overrides: dict[str, Any]
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        KILLED_PROCESS,
        str(tmp_path),
        json.dumps(store_overrides),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line.strip() == b"running"
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    settings = shared_settings(tmp_path, store=store_overrides, latency_ms=50)
    started = time.monotonic()
    async with App.open(settings, shared=True) as b:
        [row] = await wait_all_final(b, within=30)
        taken_after = time.monotonic() - started
        # The retry counts as the interrupted attempt; charged once.
        assert row["state"] == "done" and row["attempts"] == 2, row
        assert row["lease_owner"] != ""
        assert await ledger_balances(b.storage)
    assert taken_after < 5  # lease 1 s + a poll


async def test_a_lease_that_ran_out_too_often_is_failed_and_refunded(
    tmp_path: Path, store_overrides: dict[str, Any]
) -> None:
    settings = shared_settings(tmp_path, store=store_overrides, latency_ms=50, retry_interrupted=0)
    async with App.open(settings, start=False) as setup:
        chat = Chat(setup)
        await chat.say("ann", "/imagine orphan --n 1")
        # As a dead process leaves it: running, one attempt, its lease long gone.
        await setup.store.execute(
            "UPDATE jobs SET state = 'running', attempts = 1, lease_owner = 'gone:1:abc', "
            "lease_until = 0"
        )
    async with App.open(settings, shared=True) as b:
        [row] = await wait_all_final(b)
        assert row["state"] == "failed" and row["attempts"] == 1
        assert await ledger_balances(b.storage)
        assert "50 of 50" in (await Chat(b).say("ann", "/quota"))[0].text


@pytest.mark.postgres
async def test_a_page_on_one_process_shows_the_jobs_another_process_ran(
    tmp_path: Path, pg_url: str
) -> None:
    """Two processes, each with its web playground, on one PostgreSQL store: jobs asked on B's
    page and run (and delivered) by B appear finished on a page open on A (LISTEN/NOTIFY)."""
    from adapters.web.server import start as start_web
    from tests.test_web import command, open_socket

    settings = shared_settings(
        tmp_path, store={"store": {"url": pg_url}}, latency_ms=100, lease_s=5.0
    )
    async with App.open(settings) as a, App.open(settings) as b:
        web_a = await start_web(a, "127.0.0.1", 0)
        web_b = await start_web(b, "127.0.0.1", 0)
        try:
            async with aiohttp.ClientSession() as http:
                page_a, _ = await open_socket(http, web_a, "ann")
                asked = []
                for i in range(4):
                    body = await command(http, web_b, "bo", f"a fox number {i} --n 1")
                    asked += [r["job_id"] for r in body["replies"] if r["job_id"]]
                assert len(asked) == 4
                await page_a.until(
                    lambda p: all(
                        p.cards.get(j, {}).get("state") == "done" and p.cards[j].get("tiles")
                        for j in asked
                    ),
                    within_s=60,
                )
                ran_by = {
                    r["lease_owner"] for r in await a.store.fetchall("SELECT lease_owner FROM jobs")
                }
                assert ran_by  # whoever ran them, a's page shows every one finished
        finally:
            await web_a.close()
            await web_b.close()


async def test_a_result_left_without_its_row_by_a_dead_process_is_delivered_by_another(
    tmp_path: Path, store_overrides: dict[str, Any]
) -> None:
    """A process that died between a job's final state and its outbox row: a live process
    finds the result (not only at its own start) and delivers it, once."""
    settings = shared_settings(tmp_path, store=store_overrides, latency_ms=50, lease_s=5.0)
    async with two_processes(settings) as (a, b):
        for chat in (a, b):
            delivery = chat.app.handler.delivery
            delivery.policy = dataclasses.replace(delivery.policy, missing_every_s=0.2)
        await a.say("ann", "/imagine orphaned result --n 1")
        [row] = await wait_all_final(a.app)
        deadline = time.monotonic() + 20
        while not [r for r in [*a.channel.posted, *b.channel.posted] if r.job_id == row["id"]]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        while not await a.app.store.fetchone(
            "SELECT 1 FROM outbox WHERE job_id = ? AND state = 'done'", (row["id"],)
        ):  # the first delivery has finished (its result reference is written)
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        # As a process that died at that moment leaves it: done, no row, never delivered.
        # (What was posted is forgotten first: the new post may come the moment it is so.)
        a.channel.posted.clear()
        b.channel.posted.clear()
        await a.app.store.execute("DELETE FROM outbox WHERE job_id = ?", (row["id"],))
        await a.app.store.execute("UPDATE jobs SET result_ref = NULL WHERE id = ?", (row["id"],))
        deadline = time.monotonic() + 20
        while not (
            posted := [r for r in [*a.channel.posted, *b.channel.posted] if r.job_id == row["id"]]
        ):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # and only once, whichever process found it
        posted = [r for r in [*a.channel.posted, *b.channel.posted] if r.job_id == row["id"]]
        assert len([r for r in posted if r.state == "done"]) == 1


@pytest.mark.postgres
async def test_generate_beside_a_running_bot_on_one_store_waits_for_its_own_jobs(
    tmp_path: Path, pg_url: str
) -> None:
    """`generate` next to a running bot on one PostgreSQL store: no data-dir lock refusal, and
    it waits for its jobs whichever process runs them (the bot here has the free slots)."""
    settings = shared_settings(tmp_path, store={"store": {"url": pg_url}}, latency_ms=300)
    async with App.open(settings) as bot:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("IMAGINE_")},
            "PYTHONPATH": str(REPO),
            "IMAGINE_STORE__URL": pg_url,
            "IMAGINE_PROVIDERS__DEFAULT": "offline",
            "IMAGINE_PROVIDERS__OFFLINE__LATENCY_MS": "300",
            "IMAGINE_GRAMMAR__BASE_SIDE": "256",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "--data-dir",
            str(tmp_path / "data"),
            "generate",
            "two foxes {red, blue} --n 1",
            "--json",
            "--out",
            str(tmp_path / "out"),
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        jobs = json.loads(out)["jobs"]
        assert [j["state"] for j in jobs] == ["done", "done"]
        written = [await asyncio.to_thread(Path(j["images"][0]["path"]).is_file) for j in jobs]
        assert written == [True, True]
        rows = await bot.store.fetchall("SELECT attempts FROM jobs")
        assert [r["attempts"] for r in rows] == [1, 1]
