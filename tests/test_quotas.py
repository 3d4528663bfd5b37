"""The quota ledger: atomic reservations, exactly-once settlement, windows kept at reserve time."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.config import QuotaSettings
from bot.errors import QuotaExceeded, UserError
from bot.quotas import Quotas, ledger_balances, user_scope
from bot.store import Store
from bot.types import Actor

ALICE = Actor("test", "team", "alice", "Alice")


class Clock:
    def __init__(self, when: datetime) -> None:
        self.now = when.timestamp()

    def __call__(self) -> float:
        return self.now


async def add_job(db: object, job_id: str, n: int) -> None:
    await db.execute(  # type: ignore[attr-defined]
        "INSERT INTO jobs (id, platform, tenant, channel_id, owner_id, kind, state, request_json,"
        " provider, seed, n, created_at) VALUES (?, 'test', 'team', 'c', 'alice', 'imagine', "
        "'queued', '{}', 'offline', 0, ?, 0)",
        (job_id, n),
    )


async def reserve(
    store: Store, quotas: Quotas, job_id: str, n: int = 1, actor: Actor = ALICE
) -> bool:
    try:
        async with store.transaction() as db:
            await add_job(db, job_id, n)
            await quotas.reserve(db, actor, [(job_id, n)])
        return True
    except QuotaExceeded:
        return False


async def finish(store: Store, quotas: Quotas, job_id: str, delivered: int) -> None:
    async with store.transaction() as db:
        await db.execute("UPDATE jobs SET state = 'done' WHERE id = ?", (job_id,))
        await quotas.settle(db, job_id, delivered)


@pytest.fixture
def store(any_store: Any) -> Any:
    """Each rule on SQLite and on PostgreSQL (tests/conftest.py's any_store)."""
    return any_store


def quotas_for(store: Store, clock: Clock | None = None, **limits: object) -> Quotas:
    settings = QuotaSettings(**limits)  # type: ignore[arg-type]
    return Quotas(
        store, settings, is_admin=lambda a: a.is_admin, **({"clock": clock} if clock else {})
    )


async def test_fifty_concurrent_reservations_against_ten_grant_exactly_ten(store: Store) -> None:
    quotas = quotas_for(store, user_daily=10)
    results = await asyncio.gather(*(reserve(store, quotas, f"job{i:03d}") for i in range(50)))
    assert sum(results) == 10
    row = await store.fetchone(
        "SELECT SUM(used) AS used FROM quota_usage WHERE win LIKE 'd:%' AND scope LIKE 'user:%'"
    )
    assert row is not None and row["used"] == 10
    jobs = await store.fetchall("SELECT id FROM jobs")
    assert len(jobs) == 10  # a refused reservation leaves no job behind
    assert await ledger_balances(store)


async def test_race_across_two_connections_to_the_same_file(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        stores = [
            await stack.enter_async_context(Store.open(tmp_path / "shared.db")) for _ in range(2)
        ]
        quotas = [quotas_for(s, user_daily=10) for s in stores]
        results = await asyncio.gather(
            *(reserve(stores[i % 2], quotas[i % 2], f"job{i:03d}") for i in range(50))
        )
        assert sum(results) == 10
        assert await ledger_balances(stores[0])


async def test_begin_immediate_takes_the_write_lock_at_begin(tmp_path: Path) -> None:
    async with (
        Store.open(tmp_path / "l.db") as a,
        Store.open(tmp_path / "l.db", busy_timeout_ms=0) as b,
    ):
        async with a.transaction():
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                async with b.transaction():
                    pass
        async with b.transaction() as db:  # free again once A committed
            await db.execute("SELECT 1")


async def test_cancellation_inside_a_transaction_leaves_none_open(store: Store) -> None:
    quotas = quotas_for(store, user_daily=10)
    started = asyncio.Event()

    async def slow() -> None:
        async with store.transaction() as db:
            await add_job(db, "job-c", 1)
            await quotas.reserve(db, ALICE, [("job-c", 1)])
            started.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(slow())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not store.in_transaction
    assert await store.fetchone("SELECT * FROM jobs") is None
    assert await reserve(store, quotas, "job-d")


async def test_settle_commits_delivered_refunds_rest_exactly_once(store: Store) -> None:
    quotas = quotas_for(store, user_daily=10)
    assert await reserve(store, quotas, "j1", 4)
    await asyncio.gather(*(finish(store, quotas, "j1", 3) for _ in range(5)))
    rows = await store.fetchall("SELECT kind, units FROM ledger ORDER BY id")
    assert [(r["kind"], r["units"]) for r in rows] == [("reserve", 4), ("commit", 3), ("refund", 1)]
    assert (await quotas.status(ALICE)).daily_used == 3
    assert await ledger_balances(store)


async def test_refund_after_midnight_credits_the_day_that_was_charged(store: Store) -> None:
    tz = ZoneInfo("Europe/Berlin")
    clock = Clock(datetime(2026, 10, 24, 23, 59, 59, tzinfo=tz))  # the night before DST ends
    quotas = quotas_for(store, clock, user_daily=10, timezone="Europe/Berlin")
    assert await reserve(store, quotas, "late", 4)
    clock.now += 2  # now 25 October
    await finish(store, quotas, "late", 0)
    rows = await store.fetchall("SELECT win, used FROM quota_usage WHERE win LIKE 'd:%'")
    assert {r["win"]: r["used"] for r in rows} == {"d:2026-10-24": 0}
    assert (await quotas.status(ALICE)).daily_used == 0


async def test_daily_window_rolls_over_in_the_configured_zone(store: Store) -> None:
    clock = Clock(datetime(2026, 3, 1, 23, 0, tzinfo=ZoneInfo("America/New_York")))
    quotas = quotas_for(store, clock, user_daily=2, timezone="America/New_York")
    assert await reserve(store, quotas, "a", 2)
    assert not await reserve(store, quotas, "b", 1)
    clock.now += 3600 * 2  # past local midnight (but not UTC's date change)
    assert await reserve(store, quotas, "c", 1)


async def test_monthly_workspace_and_role_limits(store: Store) -> None:
    quotas = quotas_for(
        store, user_daily=0, user_monthly=3, workspace_daily=5, roles={"vip": {"monthly": 100}}
    )
    assert await reserve(store, quotas, "m1", 3)
    with pytest.raises(QuotaExceeded, match="monthly"):
        async with store.transaction() as db:
            await add_job(db, "m2", 1)
            await quotas.reserve(db, ALICE, [("m2", 1)])
    vip = Actor("test", "team", "vip", roles=("vip",))
    assert await reserve(store, quotas, "v1", 2, vip)
    with pytest.raises(QuotaExceeded, match="workspace"):
        async with store.transaction() as db:
            await add_job(db, "v2", 1)
            await quotas.reserve(db, vip, [("v2", 1)])


async def test_blocked_user_cannot_reserve(store: Store) -> None:
    quotas = quotas_for(store)
    await quotas.block(user_scope("test", "team", "alice"), "abuse")
    with pytest.raises(UserError, match="abuse"):
        async with store.transaction() as db:
            await add_job(db, "b1", 1)
            await quotas.reserve(db, ALICE, [("b1", 1)])


async def test_database_pragmas(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "q.db") as store:
        await _check_pragmas(store)


async def _check_pragmas(store: Store) -> None:
    assert (await store.fetchone("PRAGMA journal_mode"))[0] == "wal"  # type: ignore[index]
    assert (await store.fetchone("PRAGMA synchronous"))[0] == 2  # type: ignore[index]
    assert (await store.fetchone("PRAGMA foreign_keys"))[0] == 1  # type: ignore[index]
    assert (await store.fetchone("PRAGMA busy_timeout"))[0] >= 5000  # type: ignore[index]


async def test_reset_keeps_jobs_in_flight_counted_so_their_refund_cannot_go_negative(
    store: Store,
) -> None:
    quotas = quotas_for(store, user_daily=10)
    assert await reserve(store, quotas, "done-earlier", 4)
    await finish(store, quotas, "done-earlier", 4)
    assert await reserve(store, quotas, "in-flight", 3)
    await quotas.reset(user_scope("test", "team", "alice"))
    assert (await quotas.status(ALICE)).daily_used == 3
    await finish(store, quotas, "in-flight", 0)  # it fails: refunded
    assert (await quotas.status(ALICE)).daily_used == 0
