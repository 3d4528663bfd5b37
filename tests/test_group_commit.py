"""Group commit and the reader connection: many units share one COMMIT, each all or nothing.

Real SQLite on a temp file throughout; what the connection runs is read back with SQLite's own
trace callback (every statement, BEGIN and COMMIT included).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store.open(tmp_path / "db.sqlite3") as s:
        await s.execute("CREATE TABLE t (x INTEGER PRIMARY KEY, note TEXT)")
        await s.execute("CREATE TABLE credit (left INTEGER NOT NULL)")
        await s.execute("INSERT INTO credit VALUES (10)")
        yield s


async def traced(store: Store) -> list[str]:
    statements: list[str] = []
    await store._db.set_trace_callback(statements.append)
    return statements


class Refused(Exception):
    pass


async def test_units_that_queue_up_share_commits_and_each_is_all_or_nothing(store: Store) -> None:
    statements = await traced(store)
    outcomes: dict[int, str] = {}

    async def unit(i: int) -> None:
        try:
            async with store.transaction() as tx:
                await tx.execute("INSERT INTO t VALUES (?, 'first half')", (i,))
                # The check is the write: one conditional statement, as the quota does it.
                cur = await tx.execute("UPDATE credit SET left = left - 1 WHERE left > 0")
                if cur.rowcount == 0:
                    raise Refused
                if i % 7 == 3:
                    raise RuntimeError("this unit fails after both of its writes")
                await tx.execute("UPDATE t SET note = 'whole' WHERE x = ?", (i,))
        except (Refused, RuntimeError) as exc:
            outcomes[i] = type(exc).__name__
        else:
            outcomes[i] = "ok"
            # Durable when the unit returns: the reader (another connection) sees it.
            row = await store.fetchone("SELECT note FROM t WHERE x = ?", (i,))
            assert row is not None and row["note"] == "whole"

    await asyncio.gather(*(unit(i) for i in range(40)))
    rows = {r["x"]: r["note"] for r in await store.fetchall("SELECT x, note FROM t")}
    ok = {i for i, o in outcomes.items() if o == "ok"}
    assert set(rows) == ok and set(rows.values()) == {"whole"}  # nothing half-written
    failed_after_charging = sum(1 for o in outcomes.values() if o == "RuntimeError")
    assert failed_after_charging > 0
    # Ten units of credit: exactly ten were taken and kept; the failed units gave theirs back.
    assert len(ok) == 10
    assert (await store.fetchone("SELECT left FROM credit"))["left"] == 0  # type: ignore[index]
    commits = sum(1 for s in statements if s == "COMMIT")
    assert 1 <= commits < len(ok)  # they shared commits (one fsync each)
    assert not store.in_transaction


async def test_a_unit_that_sqlite_itself_rolls_back_fails_its_whole_batch(store: Store) -> None:
    """SQLITE_FULL (here: a page limit, a real full database to SQLite) may roll the whole
    transaction back; the units that had finished earlier in the batch must not be told they
    were kept. Whatever SQLite did, each unit raised exactly when its row is missing."""
    await store.execute("INSERT INTO t VALUES (0, 'x')")
    pages = (await store.fetchone("PRAGMA page_count"))[0]  # type: ignore[index]
    await store.execute(f"PRAGMA max_page_count = {int(pages) + 2}")
    raised: dict[int, bool] = {}

    async def unit(i: int) -> None:
        try:
            async with store.transaction() as tx:
                big = 200_000 if i == 5 else 10  # far beyond two more pages
                await tx.execute("INSERT INTO t VALUES (?, zeroblob(?))", (i, big))
        except sqlite3.Error:
            raised[i] = True
        else:
            raised[i] = False

    await asyncio.gather(*(unit(i) for i in range(1, 10)))
    assert raised[5]
    kept = {r["x"] for r in await store.fetchall("SELECT x FROM t WHERE x > 0")}
    assert kept == {i for i, failed in raised.items() if not failed}
    # Once there is room again, writing works as before.
    await store.execute("PRAGMA max_page_count = 1073741823")
    async with store.transaction() as tx:
        await tx.execute("INSERT INTO t VALUES (100, 'after')")
    assert await store.fetchone("SELECT 1 FROM t WHERE x = 100") is not None
    assert not store.in_transaction


async def test_a_plain_statement_outside_a_unit_is_not_rolled_back_with_it(store: Store) -> None:
    async def failing_unit() -> None:
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES (1, 'rolled back')")
            await asyncio.sleep(0.05)  # meanwhile another coroutine writes on its own
            raise Refused

    task = asyncio.create_task(failing_unit())
    await asyncio.sleep(0.01)
    assert await store.execute("INSERT INTO t VALUES (2, 'kept')") == 1
    with pytest.raises(Refused):
        await task
    assert [r["x"] for r in await store.fetchall("SELECT x FROM t")] == [2]


async def test_cancelling_a_unit_waiting_for_its_commit_keeps_the_batch_consistent(
    store: Store,
) -> None:
    gate = asyncio.Event()

    async def slow() -> None:
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES (1, 'slow')")
            await gate.wait()

    async def quick(i: int) -> None:
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES (?, 'quick')", (i,))

    first = asyncio.create_task(slow())
    await asyncio.sleep(0.01)
    waiting = [asyncio.create_task(quick(i)) for i in (2, 3)]
    await asyncio.sleep(0.01)
    waiting[0].cancel()  # gave up while waiting for the connection: writes nothing
    gate.set()
    await first
    await asyncio.gather(*waiting, return_exceptions=True)
    assert [r["x"] for r in await store.fetchall("SELECT x FROM t ORDER BY x")] == [1, 3]
    assert not store.in_transaction


async def test_reads_do_not_wait_for_an_open_unit_and_see_only_committed_rows(store: Store) -> None:
    gate = asyncio.Event()

    async def holder() -> None:
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES (1, 'pending')")
            await gate.wait()

    task = asyncio.create_task(holder())
    await asyncio.sleep(0.01)
    async with asyncio.timeout(2):  # the writer is busy; a read still answers at once
        assert await store.fetchall("SELECT * FROM t") == []
        async with store.reading() as tx:
            rows = await tx.execute_fetchall("SELECT * FROM t")
            assert list(rows) == []
    gate.set()
    await task
    assert len(await store.fetchall("SELECT * FROM t")) == 1


async def test_the_reader_never_writes_and_a_write_through_fetchall_goes_to_the_writer(
    store: Store,
) -> None:
    async with store.reading() as reader:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await reader.execute("INSERT INTO t VALUES (1, 'via the reader')")
    rows = await store.fetchall("INSERT INTO t VALUES (2, 'returned') RETURNING x")
    assert [r["x"] for r in rows] == [2]
    assert [r["x"] for r in await store.fetchall("SELECT x FROM t")] == [2]  # committed
    assert not store.in_transaction
