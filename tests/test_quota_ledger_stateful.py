"""A state machine over the quota ledger: any sequence of reservations, settlements, refunds,
grants and clock jumps keeps the ledger invariant and never lets usage exceed a limit."""

from __future__ import annotations

import asyncio
import json
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from bot.config import QuotaSettings
from bot.errors import QuotaExceeded
from bot.quotas import Quotas, ledger_balances, user_scope
from bot.store import Store
from bot.types import Actor

USERS = [Actor("test", "team", name) for name in ("ann", "ben")]
DAILY, MONTHLY = 6, 20


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.stack = AsyncExitStack()
        self.tmp = tempfile.TemporaryDirectory()
        self.now = 1_790_000_000.0
        self.open_jobs: list[tuple[str, int]] = []
        self.granted: dict[tuple[str, str], int] = {}
        self.granted_ever: dict[tuple[str, str], int] = {}
        self.counter = 0

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    def open_backend(self) -> Any:
        return Store.open(Path(self.tmp.name) / "l.db")

    @initialize()
    def open_store(self) -> None:
        self.store = self.run(self.stack.enter_async_context(self.open_backend()))
        self.quotas = Quotas(
            self.store,
            QuotaSettings(user_daily=DAILY, user_monthly=MONTHLY),
            is_admin=lambda a: False,
            clock=lambda: self.now,
        )

    @rule(user=st.sampled_from(USERS), n=st.integers(1, 4))
    def reserve(self, user: Actor, n: int) -> None:
        self.counter += 1
        job_id = f"job{self.counter}"

        async def go() -> bool:
            try:
                async with self.store.transaction() as db:
                    await db.execute(
                        "INSERT INTO jobs (id, platform, tenant, channel_id, owner_id, kind, "
                        "state, request_json, provider, seed, n, created_at) VALUES (?, 'test', "
                        "'team', 'c', ?, 'imagine', 'queued', '{}', 'offline', 0, ?, 0)",
                        (job_id, user.user_id, n),
                    )
                    await self.quotas.reserve(db, user, [(job_id, n)])
                return True
            except QuotaExceeded:
                return False

        if self.run(go()):
            self.open_jobs.append((job_id, n))

    @precondition(lambda self: bool(self.open_jobs))
    @rule(data=st.data())
    def settle(self, data: st.DataObject) -> None:
        job_id, n = self.open_jobs.pop(data.draw(st.integers(0, len(self.open_jobs) - 1)))
        delivered = data.draw(st.integers(0, n))
        state = "done" if delivered else "failed"

        async def go() -> None:
            for _ in range(data.draw(st.integers(1, 2))):  # settling twice changes nothing
                async with self.store.transaction() as db:
                    await db.execute("UPDATE jobs SET state = ? WHERE id = ?", (state, job_id))
                    await self.quotas.settle(db, job_id, delivered)

        self.run(go())

    @rule(hours=st.sampled_from([1, 6, 23, 24 * 31]))
    def advance(self, hours: int) -> None:
        self.now += hours * 3600

    @rule(user=st.sampled_from(USERS), units=st.integers(1, 3))
    def grant(self, user: Actor, units: int) -> None:
        scope = user_scope(user.platform, user.tenant, user.user_id)
        for win in self.quotas.windows():
            self.granted[(scope, win)] = self.granted.get((scope, win), 0) + units
            self.granted_ever[(scope, win)] = self.granted_ever.get((scope, win), 0) + units
        self.run(self.quotas.grant(scope, units))

    @rule(user=st.sampled_from(USERS))
    def reset(self, user: Actor) -> None:
        scope = user_scope(user.platform, user.tenant, user.user_id)
        for win in self.quotas.windows():
            self.granted[(scope, win)] = 0  # a reset forgets this window's grants too
        self.run(self.quotas.reset(scope))

    @invariant()
    def usage_never_drops_below_what_was_granted(self) -> None:
        if not hasattr(self, "store"):
            return
        for row in self.run(
            self.store.fetchall(
                "SELECT scope, win, used FROM quota_usage WHERE scope LIKE 'user:%'"
            )
        ):
            assert row["used"] >= -self.granted.get((row["scope"], row["win"]), 0), dict(row)

    @invariant()
    def ledger_balances(self) -> None:
        if hasattr(self, "store"):
            assert self.run(ledger_balances(self.store))

    @invariant()
    def usage_matches_the_ledger(self) -> None:
        if not hasattr(self, "store"):
            return
        rows = self.run(
            self.store.fetchall(
                "SELECT l.kind, l.units, l.windows FROM ledger l WHERE l.kind != 'commit'"
            )
        )
        expected: dict[tuple[str, str], int] = {}
        for r in rows:
            sign = 1 if r["kind"] == "reserve" else -1
            for scope, win in json.loads(r["windows"]):
                expected[(scope, win)] = expected.get((scope, win), 0) + sign * r["units"]
        grants = self.run(self.store.fetchall("SELECT scope, win, used FROM quota_usage"))
        for g in grants:
            charged = expected.get((g["scope"], g["win"]), 0)
            assert g["used"] <= charged  # grants and resets only ever lower usage
            if g["scope"].startswith("user:"):
                limit = DAILY if g["win"].startswith("d:") else MONTHLY
                # Over the limit only by units granted and then taken back by a reset while
                # the jobs they paid for were still running.
                assert g["used"] <= limit + self.granted_ever.get((g["scope"], g["win"]), 0)

    def teardown(self) -> None:
        if hasattr(self, "store"):
            self.run(self.stack.aclose())
        self.loop.close()
        self.tmp.cleanup()
        self.closed()

    def closed(self) -> None:
        """After the store is closed (the PostgreSQL run gives its database back)."""


LedgerMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
TestLedger = LedgerMachine.TestCase


@pytest.mark.postgres
def test_the_ledger_machine_on_postgresql(pg_cluster: Any) -> None:
    """The same machine on a real PostgreSQL database, one database per example."""
    from bot.storage.postgres import Store as PgStore
    from bot.storage.url import parse

    class OnPostgres(LedgerMachine):
        def open_backend(self) -> Any:
            self.database = pg_cluster.take()
            return PgStore.open(parse(pg_cluster.url(self.database)))

        def closed(self) -> None:
            if hasattr(self, "database"):
                pg_cluster.give_back(self.database)

    run_state_machine_as_test(
        OnPostgres, settings=settings(max_examples=15, stateful_step_count=25, deadline=None)
    )
