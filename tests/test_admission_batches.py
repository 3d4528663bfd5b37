"""Admission in batches: submissions that arrive together are decided by one unit of work from
one read of the queue and the quota, in arrival order, each all or nothing and each answered on
its own (see bot.admission.Admissions). On both stores, through the real core.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bot.admission import JobSpec
from bot.errors import QuotaExceeded, UserError
from bot.providers.base import GenerationRequest
from bot.quotas import ledger_balances
from bot.storage.records import user_scope, workspace_scope
from tests.conftest import Chat, open_chat


def _quota(**limits: int) -> dict[str, Any]:
    return {"quota": {"user_daily": 0, "user_monthly": 0, "workspace_daily": 0, **limits}}


def _spec(kind: str = "imagine", n: int = 1) -> JobSpec:
    return JobSpec(
        kind=kind, request=GenerationRequest(prompt="a lantern", n=n), provider="offline"
    )


async def _burst(chat: Chat, who: list[str], line: str) -> list[list[Any]]:
    """Everyone sends ``line`` at the same moment; each one's replies."""
    return list(await asyncio.gather(*(chat.say(user, line) for user in who)))


def _accepted(replies: list[Any]) -> bool:
    return any(r.job_id for r in replies)


async def _jobs(chat: Chat) -> int:
    row = await chat.app.store.fetchone("SELECT COUNT(*) AS n FROM jobs")
    return int(row["n"])


async def test_one_persons_burst_takes_exactly_what_the_daily_quota_holds(
    tmp_path: Path, store_overrides: dict[str, Any]
) -> None:
    async with open_chat(tmp_path, {**store_overrides, **_quota(user_daily=3)}) as chat:
        answers = await _burst(chat, ["alice"] * 7, "/imagine a fox --n 1")
        accepted = [a for a in answers if _accepted(a)]
        refused = [a for a in answers if not _accepted(a)]
        assert len(accepted) == 3 and len(refused) == 4
        # Decided in arrival order, each seeing what the ones before it took.
        for replies in refused:
            assert replies[-1].ephemeral
            assert "your daily quota has 0 of 3 left" in replies[-1].text
        assert await _jobs(chat) == 3
        await chat.settle()
        assert await ledger_balances(chat.app.store)


async def test_a_workspace_window_is_shared_by_everyone_in_one_batch(
    tmp_path: Path, store_overrides: dict[str, Any]
) -> None:
    async with open_chat(tmp_path, {**store_overrides, **_quota(workspace_daily=5)}) as chat:
        users = [f"user{i}" for i in range(8)]
        answers = await _burst(chat, users, "/imagine a fox --n 1")
        assert sum(_accepted(a) for a in answers) == 5
        assert all(
            "this workspace's daily quota has 0 of 5 left" in a[-1].text
            for a in answers
            if not _accepted(a)
        )
        day, _ = chat.app.quotas.windows()
        used = await chat.app.store.fetchone(
            "SELECT used FROM quota_usage WHERE scope = ? AND win = ?",
            (workspace_scope("test", "team"), day),
        )
        assert used["used"] == 5  # one window row, grown by the batch's total
        await chat.settle()
        assert await ledger_balances(chat.app.store)


async def test_a_refused_request_costs_the_others_nothing(
    tmp_path: Path, store_overrides: dict[str, Any]
) -> None:
    """A request too big for the quota, between two that fit: those two are charged, it is not."""
    async with open_chat(tmp_path, {**store_overrides, **_quota(user_daily=4)}) as chat:
        answers = await asyncio.gather(
            chat.say("bob", "/imagine a fox --n 2"),
            chat.say("bob", "/imagine a fox --n 3"),
            chat.say("bob", "/imagine a fox --n 2"),
        )
        assert [_accepted(a) for a in answers] == [True, False, True]
        assert "That needs 3 images, but your daily quota has 2 of 4 left" in answers[1][-1].text
        status = await chat.app.quotas.status(chat.actor("bob"))
        assert status.daily_used == 4


async def test_queue_caps_hold_within_a_batch(
    tmp_path: Path, store_overrides: dict[str, Any]
) -> None:
    overrides = {
        **store_overrides,
        **_quota(),
        "jobs": {"max_queued_per_user": 2, "max_queue": 5, "max_running_per_user": 1},
        # Nothing starts during the burst: every job stays queued and counts.
        "providers": {"offline": {"latency_ms": 400, "concurrency": 1}},
    }
    async with open_chat(tmp_path, overrides) as chat:
        mine = await _burst(chat, ["carol"] * 4, "/imagine a fox --n 1")
        texts = [a[-1].text for a in mine if not _accepted(a)]
        # One may already have started (not queued any more): two or three are accepted.
        assert 2 <= sum(_accepted(a) for a in mine) <= 3
        assert texts and all("the limit is 2" in t for t in texts)
        others = await _burst(chat, [f"u{i}" for i in range(6)], "/imagine a fox --n 1")
        full = [a[-1].text for a in others if not _accepted(a)]
        assert full and all("The queue is full right now" in t for t in full)
        row = await chat.app.store.fetchone("SELECT COUNT(*) AS n FROM jobs WHERE state = 'queued'")
        assert row["n"] <= 5
        await chat.settle()
        assert await ledger_balances(chat.app.store)


async def test_a_replayed_delivery_in_the_same_batch_is_accepted_once(
    tmp_path: Path, store_overrides: dict[str, Any]
) -> None:
    async with open_chat(tmp_path, {**store_overrides, **_quota()}) as chat:
        answers = await asyncio.gather(
            *(chat.say("dana", "/imagine a fox --n 1", interaction_id="evt-1") for _ in range(3))
        )
        assert sum(_accepted(a) for a in answers) == 1
        assert await _jobs(chat) == 1
        # And once more later: already seen in the database.
        assert not _accepted(await chat.say("dana", "/imagine a fox", interaction_id="evt-1"))


async def test_a_double_click_in_the_same_batch_is_one_wish(
    tmp_path: Path, store_overrides: dict[str, Any]
) -> None:
    async with open_chat(tmp_path, {**store_overrides, **_quota()}) as chat:
        [status] = await chat.say("erin", "/imagine a fox --n 2")
        assert status.job_id
        await chat.settle()
        clicks = await asyncio.gather(
            *(chat.click("erin", f"reroll:{status.job_id}") for _ in range(3))
        )
        assert sum(_accepted(c) for c in clicks) == 1
        assert all("already on its way" in c[-1].text for c in clicks if not _accepted(c))
        # Someone else's identical click is their own wish.
        assert _accepted(await chat.click("frank", f"reroll:{status.job_id}"))


async def test_a_blocked_person_is_refused_and_the_batch_goes_on(
    tmp_path: Path, store_overrides: dict[str, Any]
) -> None:
    async with open_chat(tmp_path, {**store_overrides, **_quota()}) as chat:
        await chat.app.quotas.block(user_scope("test", "team", "gus"), "spam")
        answers = await _burst(chat, ["gus", "hana", "gus", "ivan"], "/imagine a fox")
        assert [_accepted(a) for a in answers] == [False, True, False, True]
        assert "You are blocked from generating images here: spam" in answers[0][-1].text


async def test_a_batch_that_fails_as_a_whole_is_retried_one_by_one(
    tmp_path: Path, store_overrides: dict[str, Any]
) -> None:
    """A submission the database refuses (here: a kind its CHECK does not know) fails alone;
    the others of its batch are admitted and charged, and nothing of it is left behind."""
    async with open_chat(tmp_path, {**store_overrides, **_quota(user_daily=10)}) as chat:
        runner, actor = chat.app.runner, chat.actor("jack")
        outcomes = await asyncio.gather(
            *(runner.submit(actor, "general", None, [_spec()]) for _ in range(3)),
            runner.submit(actor, "general", None, [_spec(kind="bogus")]),
            *(runner.submit(actor, "general", None, [_spec()]) for _ in range(2)),
            return_exceptions=True,
        )
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(failed) == 1 and not isinstance(failed[0], UserError)
        assert all(isinstance(o, list) and len(o) == 1 for o in outcomes if o not in failed)
        assert await _jobs(chat) == 5
        status = await chat.app.quotas.status(actor)
        assert status.daily_used == 5
        await chat.settle()
        assert await ledger_balances(chat.app.store)


async def test_bursts_share_units_of_work(tmp_path: Path) -> None:
    """What batching is for: 40 submissions at once are decided by far fewer reads of the
    queue and the quota than 40 (SQLite's own trace of the statements run)."""
    async with open_chat(tmp_path, _quota()) as chat:
        statements: list[str] = []
        await chat.app.store._db.set_trace_callback(statements.append)
        answers = await _burst(chat, [f"u{i}" for i in range(40)], "/imagine a fox --n 1")
        await chat.app.store._db.set_trace_callback(None)
        assert all(_accepted(a) for a in answers)
        reads = [s for s in statements if s.startswith("SELECT interaction_id FROM jobs")]
        assert 1 <= len(reads) < 20
        await chat.settle()


async def test_a_caller_cancelled_before_its_turn_leaves_nothing(tmp_path: Path) -> None:
    async with open_chat(tmp_path, _quota()) as chat:
        runner, actor = chat.app.runner, chat.actor("kim")
        first = asyncio.ensure_future(runner.submit(actor, "general", None, [_spec()]))
        second = asyncio.ensure_future(runner.submit(actor, "general", None, [_spec()]))
        await asyncio.sleep(0)  # both handed in, before the batch is taken
        second.cancel()
        [_job] = await first
        with pytest.raises(asyncio.CancelledError):
            await second
        assert await _jobs(chat) == 1
        await chat.settle()
        assert await ledger_balances(chat.app.store)


async def test_quota_exceeded_is_the_same_refusal_one_at_a_time(tmp_path: Path) -> None:
    """The single path (Quotas.reserve, a batch of one) says what admission says."""
    async with open_chat(tmp_path, _quota(user_monthly=2)) as chat:
        store, quotas, actor = chat.app.store, chat.app.quotas, chat.actor("lea")
        await chat.app.runner.submit(actor, "general", None, [_spec(n=2)])
        with pytest.raises(QuotaExceeded, match="your monthly quota has 0 of 2 left"):
            async with store.transaction() as tx:
                await quotas.reserve(tx, actor, [("nojob", 1)])
        with pytest.raises(sqlite3.IntegrityError):  # the ledger names a job that must exist
            async with store.transaction() as tx:
                await quotas.reserve(tx, chat.actor("max"), [("nojob", 1)])


async def test_batches_in_a_row_each_see_what_the_ones_before_took(
    tmp_path: Path, store_overrides: dict[str, Any]
) -> None:
    """More submissions than one batch holds: the next batch begins while the one before it
    commits, and decides from what that one wrote."""
    overrides = {**store_overrides, **_quota(user_daily=5, workspace_daily=37)}
    async with open_chat(tmp_path, overrides) as chat:
        users = [f"u{i % 10}" for i in range(120)]
        answers = await _burst(chat, users, "/imagine a fox --n 1")
        accepted = [u for u, a in zip(users, answers, strict=True) if _accepted(a)]
        assert len(accepted) == 37
        assert max(accepted.count(u) for u in set(accepted)) <= 5
        assert await _jobs(chat) == 37
        await chat.settle()
        assert await ledger_balances(chat.app.store)


async def test_a_full_database_refuses_the_whole_burst_and_charges_nobody(tmp_path: Path) -> None:
    """SQLITE_FULL (a page limit: a real full database to SQLite) under a burst: everyone is
    told something went wrong and that nothing was charged, and it is true; once there is room
    again the next submission goes through."""
    async with open_chat(tmp_path, _quota(user_daily=10)) as chat:
        store = chat.app.store
        await chat.say("nora", "/imagine a fox --n 1")  # the tables have pages
        await chat.settle()
        pages = (await store.fetchone("PRAGMA page_count"))[0]
        await store.execute(f"PRAGMA max_page_count = {int(pages)}")
        answers = await _burst(
            chat, ["nora", "omar", "pia", "nora"], "/imagine a fox --n 1 " + "x" * 900
        )
        await store.execute("PRAGMA max_page_count = 1073741823")
        assert not any(_accepted(a) for a in answers)
        assert all("Nothing was charged" in a[-1].text for a in answers), [
            a[-1].text for a in answers
        ]
        assert await _jobs(chat) == 1
        assert (await chat.app.quotas.status(chat.actor("nora"))).daily_used == 1
        assert _accepted(await chat.say("omar", "/imagine a fox"))
        await chat.settle()
        assert await ledger_balances(store)
