"""Pools of GPU servers (``base_urls``): several fake webui / ComfyUI servers on loopback,
reached through the real httpx client, through the provider alone and through the whole core."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.errors import ConfigError
from bot.providers.automatic1111 import Automatic1111Settings
from bot.providers.base import (
    CheckFailed,
    GenerationRequest,
    ProviderUnavailable,
    progress_note,
)
from bot.providers.comfyui import ComfyUISettings
from bot.providers.pool import PooledProvider
from bot.providers.registry import build_provider
from bot.quotas import ledger_balances
from tests.conftest import Chat, open_chat
from tests.fakes.automatic1111 import Automatic1111Fake
from tests.fakes.comfyui import TXT2IMG_WORKFLOW, ComfyUIFake
from tests.test_cli import clean_env

FAST: dict[str, Any] = {"connect_timeout_s": 2.0, "timeout_s": 10.0, "deadline_s": 20.0}
PREFIX = "providers.automatic1111"


def free_port() -> int:
    """A loopback port nobody listens on (a server that is off: connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def a1111_pool(urls: list[Any], **section: Any) -> PooledProvider:
    provider = build_provider(
        "automatic1111", {**FAST, "progress_interval_s": 0, "base_urls": urls, **section}, {}
    )
    assert isinstance(provider, PooledProvider)
    return provider


@asynccontextmanager
async def webuis(n: int, work_s: float = 0.0) -> AsyncIterator[list[Automatic1111Fake]]:
    async with AsyncExitStack() as stack:
        fakes = [await stack.enter_async_context(Automatic1111Fake()) for _ in range(n)]
        for fake in fakes:
            fake.work_s = work_s
        yield fakes


async def until(cond: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def req(seed: int = 1, n: int = 1) -> GenerationRequest:
    return GenerationRequest(prompt="a red fox", width=512, height=512, seed=seed, n=n)


# ------------------------------------------------------------------------------- settings
def test_base_urls_settings() -> None:
    s = Automatic1111Settings.from_mapping(
        {
            "max_concurrency": 2,
            "base_urls": ["http://a:7860/", {"url": "http://b:7860", "max_concurrency": 3}],
        },
        {},
    )
    assert [(x.url, x.max_concurrency) for x in s.servers] == [
        ("http://a:7860", 2),
        ("http://b:7860", 3),
    ]
    assert s.base_url == "http://a:7860" and s.health_interval_s == 5.0
    member = s.for_server(s.servers[1])
    assert member.base_url == "http://b:7860" and member.max_concurrency == 3
    assert member.policy.connect_retries == 0 and member.servers == ()
    # A single base_url stays what it was: no pool.
    assert Automatic1111Settings.from_mapping({"base_url": "http://a:7860"}, {}).servers == ()


@pytest.mark.parametrize(
    ("section", "env", "message"),
    [
        ({"base_url": "http://a", "base_urls": ["http://b"]}, {}, "base_url or base_urls"),
        ({"base_urls": ["http://b"]}, {"AUTOMATIC1111_BASE_URL": "http://a"}, "one of the two"),
        ({"base_urls": []}, {}, "non-empty list"),
        ({"base_urls": "http://a"}, {}, "non-empty list"),
        ({"base_urls": ["ftp://a"]}, {}, r"base_urls\[0\] must be an http"),
        ({"base_urls": ["http://u:p@a"]}, {}, "must not contain credentials"),
        ({"base_urls": [{"url": "http://a", "max_concurrency": 0}]}, {}, r"1\.\.16"),
        ({"base_urls": [{"url": "http://a", "slots": 2}]}, {}, "unknown keys"),
        ({"base_urls": [{"max_concurrency": 2}]}, {}, r"base_urls\[0\] must be a URL"),
        ({"base_urls": ["http://a", "http://a/"]}, {}, "listed twice"),
        ({"base_urls": ["http://a"], "health_interval_s": 0}, {}, "health_interval_s"),
    ],
)
def test_bad_base_urls_are_refused_clearly(
    section: dict[str, Any], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Automatic1111Settings.from_mapping(section, env)


def test_comfyui_takes_base_urls_too(tmp_path: Path) -> None:
    wf = tmp_path / "t2i.json"
    wf.write_text(json.dumps(TXT2IMG_WORKFLOW))
    s = ComfyUISettings.from_mapping(
        {"workflow": str(wf), "base_urls": ["http://a:8188", "http://b:8188"]}, {}
    )
    assert [x.url for x in s.servers] == ["http://a:8188", "http://b:8188"]
    with pytest.raises(ConfigError, match="one of the two"):
        ComfyUISettings.from_mapping(
            {"workflow": str(wf), "base_urls": ["http://a"]}, {"COMFYUI_BASE_URL": "http://b"}
        )


async def test_the_pool_offers_its_total_slots() -> None:
    pool = a1111_pool(["http://a:7860", {"url": "http://b:7860", "max_concurrency": 2}])
    try:
        assert pool.capabilities.max_concurrency == 3 == pool.total_slots
    finally:
        await pool.aclose()


# ------------------------------------------------------------------------------ choosing
async def test_a_free_server_is_chosen_while_another_is_busy() -> None:
    async with webuis(2, work_s=0.6) as (a, b):
        pool = a1111_pool([a.base_url, b.base_url])
        try:
            first = asyncio.create_task(pool.generate(req(1)))
            await until(lambda: a.queue_lock.locked() or b.queue_lock.locked())
            started = time.monotonic()
            second = await pool.generate(req(2))
            took = time.monotonic() - started
            one = await first
        finally:
            await pool.aclose()
        # The second job did not wait behind the busy server: it ran beside it.
        assert {one.server, second.server} == {a.base_url, b.base_url}
        assert took < 1.1, took  # behind the busy one it would have taken about 1.2 s
        assert a.generated == b.generated == 1
        assert a.most_waiting == b.most_waiting == 0
        assert a.violations == b.violations == []


async def test_a_call_waits_for_the_first_free_slot_when_every_server_is_busy() -> None:
    async with webuis(2, work_s=0.3) as (a, b):
        pool = a1111_pool([a.base_url, b.base_url])
        try:
            results = await asyncio.gather(*(pool.generate(req(i)) for i in range(6)))
        finally:
            await pool.aclose()
        # Never two at once on a one-at-a-time server: none waited in the webui's queue.
        assert a.generated == b.generated == 3
        assert a.most_waiting == b.most_waiting == 0
        assert sum(r.server == a.base_url for r in results) == 3


async def test_least_busy_first_by_share_of_slots() -> None:
    async with webuis(2, work_s=0.4) as (a, b):
        pool = a1111_pool([a.base_url, {"url": b.base_url, "max_concurrency": 3}])
        try:
            tasks = [asyncio.create_task(pool.generate(req(i))) for i in range(4)]
            await until(lambda: a.generated + b.generated == 4)
            await asyncio.gather(*tasks)
        finally:
            await pool.aclose()
        assert a.generated == 1 and b.generated == 3


# ----------------------------------------------------------------------- down and back up
async def test_a_refused_connection_moves_the_call_and_marks_the_server_down() -> None:
    down = dead_url()
    async with webuis(1) as (b,):
        pool = a1111_pool([down, b.base_url], health_interval_s=60)
        try:
            result = await pool.generate(req(7))
            assert result.server == b.base_url and result.images
            states = dict(pool.servers())
            assert states[down].startswith("down (cannot reach")
            assert states[b.base_url].startswith("up")
            # Down means not tried again: the next call goes straight to the live one.
            await pool.generate(req(8))
            assert b.generated == 2
        finally:
            await pool.aclose()


async def test_the_health_check_brings_a_server_back() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with webuis(1) as (b,):
        pool = a1111_pool([url, b.base_url], health_interval_s=0.05)
        try:
            await pool.generate(req(1))
            assert dict(pool.servers())[url].startswith("down")
            back = Automatic1111Fake()
            back.port = port
            async with back:
                await until(lambda: dict(pool.servers())[url].startswith("up"))
                assert back.requests_to("/sdapi/v1/progress")  # a route the webui really has
                results = await asyncio.gather(pool.generate(req(2)), pool.generate(req(3)))
                assert {r.server for r in results} == {url, b.base_url}
                assert back.generated == 1
            # Gone again: the health check notices before any job has to.
            await until(lambda: dict(pool.servers())[url].startswith("down"))
        finally:
            await pool.aclose()


async def test_a_server_its_breaker_paused_is_passed_over() -> None:
    async with webuis(2) as (a, b):
        pool = a1111_pool([a.base_url, b.base_url], breaker_threshold=1, health_interval_s=60)
        try:
            a.fail_next(500, json={"error": "RuntimeError", "detail": "CUDA error"}, times=2)
            with pytest.raises(ProviderUnavailable):  # a failure of its own stays the call's
                await pool.generate(req(1))
            assert (await pool.generate(req(2))).server == b.base_url
            sent = len(a.requests_to("/txt2img"))
            # a's turn again, but its breaker is open: the call goes to b, nothing is sent to a.
            assert (await pool.generate(req(3))).server == b.base_url
            assert len(a.requests_to("/txt2img")) == sent
            assert dict(pool.servers())[a.base_url].startswith("up")  # paused, not down
        finally:
            await pool.aclose()


async def test_waiting_for_a_slot_says_so_in_the_progress() -> None:
    async with webuis(1, work_s=0.3) as (a,):
        pool = a1111_pool([a.base_url, dead_url()], health_interval_s=60)
        notes: list[str | None] = []
        try:
            await pool.refresh()  # finds the second one down
            first = asyncio.create_task(pool.generate(req(1)))
            await until(lambda: a.queue_lock.locked())
            second = await pool.generate(req(2), lambda p: notes.append(progress_note(p)))
            await first
        finally:
            await pool.aclose()
        assert second.server == a.base_url
        assert "waiting for a free Stable Diffusion webui server" in notes


async def test_every_server_down_fails_clearly() -> None:
    pool = a1111_pool([dead_url(), dead_url()], health_interval_s=60)
    try:
        with pytest.raises(ProviderUnavailable) as caught:
            await pool.generate(req())
        assert "None of the 2 Stable Diffusion webui servers" in caught.value.user_message
        assert "refunded" in caught.value.user_message
    finally:
        await pool.aclose()


async def test_doctor_names_each_server_and_its_state() -> None:
    down = dead_url()
    async with webuis(1) as (b,):
        pool = a1111_pool([b.base_url, down])
        try:
            facts = await pool.check()
        finally:
            await pool.aclose()
    assert f"{b.base_url} up (1 slots)" in facts["servers"]
    assert f"{down} down (cannot reach" in facts["servers"]
    assert "1 of 2 servers down" in facts["warning"] and facts["slots"] == "2"
    dead = a1111_pool([down])
    try:
        with pytest.raises(CheckFailed, match="no server of the pool answered"):
            await dead.check()
    finally:
        await dead.aclose()


async def test_a_comfyui_pool_moves_past_a_refused_server(tmp_path: Path) -> None:
    wf = tmp_path / "t2i.json"
    wf.write_text(json.dumps(TXT2IMG_WORKFLOW))
    down = dead_url()
    async with ComfyUIFake() as live:
        pool = build_provider(
            "comfyui",
            {**FAST, "workflow": str(wf), "base_urls": [down, live.base_url]},
            {},
        )
        assert isinstance(pool, PooledProvider)
        try:
            result = await pool.generate(req(5))
            facts = await pool.check()
        finally:
            await pool.aclose()
    assert result.server == live.base_url and len(result.images) == 1
    assert dict(pool.servers())[down].startswith("down")
    assert f"{live.base_url} up" in facts["servers"] and facts["version"] == "0.3.40"
    assert live.violations == []


# ---------------------------------------------------------------------- through the core
@asynccontextmanager
async def pool_chat(tmp_path: Path, urls: list[Any]) -> AsyncIterator[Chat]:
    section = {**FAST, "progress_interval_s": 0, "base_urls": urls, "health_interval_s": 60}
    overrides = {"providers": {"default": "automatic1111", "automatic1111": section}}
    async with open_chat(tmp_path, overrides, {}) as chat:
        yield chat


async def ledger(chat: Chat, job_id: str) -> dict[str, int]:
    rows = await chat.app.store.fetchall(
        "SELECT kind, units FROM ledger WHERE job_id = ? ORDER BY id", (job_id,)
    )
    return {r["kind"]: int(r["units"]) for r in rows}


async def test_a_job_moves_past_a_refused_server_with_no_failure_and_no_charge_lost(
    tmp_path: Path,
) -> None:
    down = dead_url()
    async with webuis(1) as (live,), pool_chat(tmp_path, [down, live.base_url]) as chat:
        sent = await chat.say("alice", "/imagine a red fox --n 2")
        job = next(r.job_id for r in sent if r.job_id)
        await chat.settle()
        result = chat.result(job)
        assert "seeds" in result.text and result.images, result.text  # the grid of two
        assert await ledger(chat, job) == {"reserve": 2, "commit": 2, "refund": 0}
        assert await ledger_balances(chat.app.store)
        [info] = await chat.click("alice", f"info:{job}")
        assert f"on {live.base_url}" in info.text
        row = await chat.app.store.fetchone("SELECT state, server FROM jobs WHERE id = ?", (job,))
        assert row is not None and tuple(row) == ("done", live.base_url)
        # The runner lets exactly the pool's slots run at once.
        assert chat.app.providers.get("automatic1111").capabilities.max_concurrency == 2


async def test_every_server_down_fails_the_job_with_a_refund(tmp_path: Path) -> None:
    async with pool_chat(tmp_path, [dead_url(), dead_url()]) as chat:
        sent = await chat.say("alice", "/imagine a red fox --n 1")
        job = next(r.job_id for r in sent if r.job_id)
        await chat.settle()
        text = chat.result(job).text
        assert "None of the 2 Stable Diffusion webui servers can be reached" in text
        assert await ledger(chat, job) == {"reserve": 1, "commit": 0, "refund": 1}
        assert await ledger_balances(chat.app.store)


async def test_jobs_of_several_users_spread_over_the_pool(tmp_path: Path) -> None:
    async with (
        webuis(2, work_s=0.5) as (a, b),
        pool_chat(tmp_path, [a.base_url, b.base_url]) as chat,
    ):
        started = time.monotonic()
        for user in ("alice", "bob", "carol", "dave"):
            await chat.say(user, "/imagine a red fox --n 1")
        await chat.settle()
        took = time.monotonic() - started
        assert a.generated == b.generated == 2
        assert a.most_waiting == b.most_waiting == 0
        assert took < 1.8, took  # 4 jobs x 0.5 s: 1.0 s on 2 servers, 2.0 s one at a time


async def test_doctor_lists_the_pool_with_each_server_and_its_state(tmp_path: Path) -> None:
    down = dead_url()
    async with webuis(1) as (live,):
        # A TOML value, as the environment takes it: a URL and a table overriding the slots.
        urls = f'["{live.base_url}", {{ url = "{down}", max_concurrency = 2 }}]'
        env = clean_env(
            {
                "IMAGINE_PROVIDERS__DEFAULT": '"automatic1111"',
                "IMAGINE_PROVIDERS__AUTOMATIC1111__BASE_URLS": urls,
            }
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "--data-dir",
            str(tmp_path / "data"),
            "doctor",
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out_b, err_b = await asyncio.wait_for(proc.communicate(), 60)
    out = out_b.decode() + err_b.decode()
    assert proc.returncode == 0, out  # one server down is a warning: the pool still serves
    [ok] = [x for x in out.splitlines() if x.startswith("[ok] provider automatic1111")]
    assert f"{live.base_url} up (1 slots)" in ok and f"{down} down (cannot reach" in ok
    assert "slots=3" in ok
    [warning] = [x for x in out.splitlines() if x.startswith("[warn] provider automatic1111")]
    assert f"1 of 2 servers down: {down}" in warning
