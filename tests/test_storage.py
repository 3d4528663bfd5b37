"""The repositories on a real SQLite file and a real PostgreSQL database: what each promises
the core, one behaviour a test, the same test for both stores."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bot.job_request import JobRequest
from bot.storage.records import NewJob, ScopeLimits, StoredJobImage
from bot.store import Store


@pytest.fixture
def store(any_store: Any) -> Any:
    return any_store


async def add(
    store: Store,
    job_id: str,
    *,
    at: float,
    channel: str = "general",
    owner: str = "alice",
    kind: str = "imagine",
    parent: str | None = None,
    index: int | None = None,
    state: str = "queued",
    interaction: str | None = None,
) -> None:
    async with store.transaction() as tx:
        await store.jobs.insert(
            tx,
            NewJob(
                id=job_id,
                platform="web",
                tenant="local",
                channel_id=channel,
                thread_id=None,
                owner_id=owner,
                owner_name=owner.title(),
                kind=kind,
                parent_job_id=parent,
                parent_index=index,
                request=JobRequest(prompt=f"prompt of {job_id}", n=2, seed=7),
                provider="offline",
                notice="",
                interaction_id=interaction,
                created_at=at,
            ),
        )
    if state != "queued":
        await store.execute("UPDATE jobs SET state = ? WHERE id = ?", (state, job_id))


# ------------------------------------------------------------------------------- jobs
async def test_insert_and_get_round_trip_the_typed_request(store: Store) -> None:
    await add(store, "j1", at=1.0)
    job = await store.jobs.get("j1")
    assert job is not None
    assert (job.state, job.seed, job.n, job.owner_name) == ("queued", 7, 2, "Alice")
    assert job.request == JobRequest(prompt="prompt of j1", n=2, seed=7)
    assert await store.jobs.get("nope") is None


async def test_history_is_the_newest_not_deleted_jobs_of_the_channel_oldest_first(
    store: Store,
) -> None:
    for i in range(5):
        await add(store, f"h{i}", at=float(i))
    await add(store, "other", at=10.0, channel="elsewhere")
    await store.jobs.mark_deleted("h4")
    jobs = await store.jobs.history("web", "local", "general", 3)
    assert [j.id for j in jobs] == ["h1", "h2", "h3"]
    assert (await store.jobs.get("h4")).deleted  # type: ignore[union-attr]
    assert await store.jobs.history("web", "other-tenant", "general", 3) == []


async def test_a_result_is_claimed_once_however_many_try(store: Store) -> None:
    await add(store, "r1", at=1.0, state="done")
    claims = await asyncio.gather(*(store.jobs.claim_result("r1") for _ in range(5)))
    assert sorted(claims) == [False, False, False, False, True]
    assert await store.jobs.pending_results("web") == []


async def test_a_released_claim_can_be_taken_again_but_a_posted_result_cannot(store: Store) -> None:
    await add(store, "r1", at=1.0, state="done")
    assert await store.jobs.claim_result("r1")
    await store.jobs.release_result_claim("r1")
    assert await store.jobs.pending_results("web") == ["r1"]
    assert await store.jobs.claim_result("r1")
    await store.jobs.set_result_ref("r1", "msg-9")
    await store.jobs.release_result_claim("r1")  # only an unfinished claim ('') is released
    assert (await store.jobs.get("r1")).result_ref == "msg-9"  # type: ignore[union-attr]
    assert not await store.jobs.claim_result("r1")


async def test_pending_results_are_finished_unclaimed_not_deleted_oldest_first(
    store: Store,
) -> None:
    await add(store, "late", at=3.0, state="failed")
    await add(store, "early", at=1.0, state="filtered")
    await add(store, "done", at=2.0, state="done")
    await add(store, "running", at=0.5, state="running")
    await add(store, "gone", at=0.1, state="done")
    await store.jobs.mark_deleted("gone")
    await add(store, "posted", at=0.2, state="done")
    await store.jobs.set_result_ref("posted", "msg-1")
    assert await store.jobs.pending_results("web") == ["early", "done", "late"]
    assert await store.jobs.pending_results("slack") == []


async def test_duplicate_in_flight_matches_a_missing_index_to_a_missing_index(store: Store) -> None:
    await add(store, "p", at=0.0, state="done")
    await add(store, "reroll", at=10.0, kind="reroll", parent="p")
    await add(store, "vary2", at=10.0, kind="vary", parent="p", index=2)

    async def dup(kind: str, index: int | None, since: float = 5.0) -> bool:
        async with store.reading() as tx:
            return await store.jobs.duplicate_in_flight(
                tx,
                kind=kind,
                parent_job_id="p",
                parent_index=index,
                platform="web",
                tenant="local",
                owner_id="alice",
                since=since,
            )

    assert await dup("reroll", None)
    assert not await dup("reroll", 1)
    assert await dup("vary", 2)
    assert not await dup("vary", None)
    assert not await dup("vary", 2, since=10.0)  # older than the window


async def test_queued_counts_and_replayed_interactions(store: Store) -> None:
    await add(store, "a1", at=1.0, interaction="int-1")
    await add(store, "a2", at=2.0)
    await add(store, "b1", at=3.0, owner="bob")
    await add(store, "a3", at=4.0, state="running")
    async with store.transaction() as tx:
        facts = await store.admission.facts(
            tx, interaction_ids=["int-1", "int-2"], scopes=["user:x"], wins=["d:1"]
        )
        assert facts.queued.get(("web", "local", "alice"), 0) == 2
        assert facts.queued.get(("web", "local", "carol"), 0) == 0
        assert facts.queued_total == 3
        assert "int-1" in facts.seen
        assert "int-2" not in facts.seen


async def test_running_and_requeueing_count_attempts(store: Store) -> None:
    await add(store, "j", at=1.0)
    assert await store.jobs.mark_running("j", 5.0)
    assert not await store.jobs.mark_running("j", 6.0)  # no longer queued
    assert [(j.id, j.attempts) for j in await store.jobs.active("running")] == [("j", 1)]
    assert await store.jobs.requeue("j", undo_attempt=True)  # a graceful stop
    assert [(j.id, j.attempts) for j in await store.jobs.active("queued")] == [("j", 0)]
    await store.execute("UPDATE jobs SET state = 'running' WHERE id = 'j'")
    assert await store.jobs.requeue("j", undo_attempt=True)  # never below zero
    assert (await store.jobs.get("j")).attempts == 0  # type: ignore[union-attr]
    await store.jobs.mark_running("j", 7.0)
    assert await store.jobs.requeue("j", undo_attempt=False)  # an interrupted run counts
    assert (await store.jobs.get("j")).attempts == 1  # type: ignore[union-attr]
    assert not await store.jobs.requeue("j", undo_attempt=False)  # not running


async def test_finish_keeps_the_stored_model_when_the_provider_names_none(store: Store) -> None:
    await add(store, "j", at=1.0)
    await store.execute("UPDATE jobs SET model = 'sdxl', state = 'running' WHERE id = 'j'")
    async with store.transaction() as tx:
        assert await store.jobs.finish(
            tx,
            "j",
            state="done",
            provider="offline",
            model=None,
            notice="n",
            grid_sha=None,
            grid_ext=None,
            error=None,
            at=9.0,
        )
        assert not await store.jobs.fail(tx, "j", "too late", 10.0)  # already finished
    job = await store.jobs.get("j")
    assert job is not None and (job.state, job.model, job.finished_at) == ("done", "sdxl", 9.0)


async def test_images_are_overwritten_by_a_retry(store: Store) -> None:
    await add(store, "j", at=1.0)
    first = [
        StoredJobImage(1, "a" * 64, "png", 1, 8, 8),
        StoredJobImage(2, "b" * 64, "png", 2, 8, 8),
    ]
    async with store.transaction() as tx:
        await store.images.put(tx, "j", first)
    async with store.transaction() as tx:
        await store.images.put(tx, "j", [StoredJobImage(1, "c" * 64, "jpg", None, 4, 4)])
    assert await store.images.of_job("j") == [
        StoredJobImage(1, "c" * 64, "jpg", None, 4, 4),
        first[1],
    ]


# ----------------------------------------------------------------------- quota usage
async def test_a_grant_starts_a_window_below_zero(store: Store) -> None:
    async with store.transaction() as tx:
        await store.quota.grant(tx, "user:x", "d:1", 3)
        await store.quota.grant(tx, "user:x", "d:1", 2)
        assert await store.quota.used_in(tx, "user:x", ("d:1",)) == {"d:1": -5}
        await store.quota.set_used(tx, "user:x", "d:1", 1)
        await store.quota.set_used(tx, "user:x", "d:2", 1)  # no row: a reset adds none
        assert await store.quota.used_in(tx, "user:x", ("d:1", "d:2")) == {"d:1": 1}


async def test_limits_and_blocks(store: Store) -> None:
    async with store.transaction() as tx:
        await store.quota.set_limits(tx, "user:x", 5, None)
        await store.quota.set_limits(tx, "user:x", 6, None)
        assert await store.quota.limits(tx, ("user:x", "ws:y")) == {"user:x": ScopeLimits(6, None)}
        assert await store.quota.block_reason(tx, ("user:x", "ws:y")) is None
        await store.quota.block(tx, "ws:y", "", 1.0)
        assert await store.quota.block_reason(tx, ("user:x", "ws:y")) == ""
        await store.quota.unblock(tx, "ws:y")
        assert await store.quota.block_reason(tx, ("user:x", "ws:y")) is None


# ----------------------------------------------------------------------------- ledger
async def test_a_reservation_settles_once(store: Store) -> None:
    await add(store, "j", at=1.0)
    async with store.transaction() as tx:
        await store.ledger.reserve(
            tx, [("j", 4)], payer="user:x", windows=[("user:x", "d:1")], exempt=False, at=1.0
        )
        r = await store.ledger.reservation(tx, "j")
        assert r is not None and (r.units, r.windows) == (4, (("user:x", "d:1"),))
        assert await store.ledger.in_flight(tx, "user:x") == [r]
        assert await store.ledger.settle(tx, r, committed=3, refunded=1, at=2.0)
        assert not await store.ledger.settle(tx, r, committed=3, refunded=1, at=3.0)
    totals = await store.ledger.totals()
    assert (totals.reserved, totals.committed, totals.refunded, totals.in_flight) == (4, 3, 1, 4)


# ------------------------------------------------------------ channels, admin log, alerts
async def test_collaboration_is_unset_until_an_admin_sets_it(store: Store) -> None:
    assert await store.channels.collaborative("web", "local", "general") is None
    await store.channels.set_collaborative("web", "local", "general", True)
    assert await store.channels.collaborative("web", "local", "general") is True
    await store.channels.set_collaborative("web", "local", "general", False)
    assert await store.channels.collaborative("web", "local", "general") is False
    assert await store.channels.collaborative("web", "local", "other") is None


async def test_admin_log_appends(store: Store) -> None:
    await store.admin_log.append("web:local:root", "grant", '["alice", "5"]', 12.5)
    rows = await store.fetchall("SELECT actor, action, detail, created_at FROM admin_log")
    assert [tuple(r) for r in rows] == [("web:local:root", "grant", '["alice", "5"]', 12.5)]


async def test_an_alert_is_claimed_once_per_period(store: Store) -> None:
    assert await store.alerts.claim("stability:AuthFailed", 100.0, 3600.0)
    assert not await store.alerts.claim("stability:AuthFailed", 100.0 + 3599, 3600.0)
    assert await store.alerts.claim("openai:AuthFailed", 200.0, 3600.0)  # another key
    assert await store.alerts.claim("stability:AuthFailed", 100.0 + 3600, 3600.0)
    # The period runs from the last alert that was sent, not from the refused ones.
    assert not await store.alerts.claim("stability:AuthFailed", 100.0 + 7199, 3600.0)


async def test_concurrent_alert_claims_have_one_winner(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "a.db") as a, Store.open(tmp_path / "a.db") as b:
        won = await asyncio.gather(*(s.alerts.claim("k", 1.0, 60.0) for s in (a, b, a, b)))
        assert sorted(won) == [False, False, False, True]


async def test_confirmations_and_preferences_on_each_store(any_store: Any) -> None:
    from bot.storage.records import PendingCommand

    pending = PendingCommand(
        "abcdefghijkm", "web", "local", "general", "ann", "a {b, c, d}", None, None, 10.0
    )
    await any_store.confirmations.put(pending)
    assert await any_store.confirmations.get("abcdefghijkm") == pending
    assert await any_store.confirmations.use("abcdefghijkm", 11.0)
    assert not await any_store.confirmations.use("abcdefghijkm", 12.0)  # once
    await any_store.confirmations.unuse("abcdefghijkm")
    assert await any_store.confirmations.use("abcdefghijkm", 13.0)
    assert await any_store.confirmations.forget_before(100.0) == 1
    prefs = any_store.prefs
    await prefs.put("web", "local", "defaults", "user", "ann", '{"n": 2}', 1.0)
    await prefs.put("web", "local", "defaults", "user", "ann", '{"n": 3}', 2.0)
    await prefs.put("web", "local", "defaults", "channel", "general", '{"ar": "3:2"}', 2.0)
    got = await prefs.get_many(
        "web", "local", "defaults", [("user", "ann"), ("channel", "general"), ("user", "bo")]
    )
    assert got == {("user", "ann"): '{"n": 3}', ("channel", "general"): '{"ar": "3:2"}'}
    assert await prefs.delete("web", "local", "defaults", "user", "ann")
    assert not await prefs.delete("web", "local", "defaults", "user", "ann")


async def test_preference_reads_asked_together_are_one_query_each_answered_its_own(
    any_store: Any,
) -> None:
    prefs = any_store.prefs
    for i in range(0, 450, 3):  # every third person has saved something
        await prefs.put("web", "local", "defaults", "user", f"u{i}", f'{{"n": {i % 4 + 1}}}', 1.0)
    await prefs.put("web", "other", "defaults", "user", "u0", '{"n": 9}', 1.0)
    asked = [
        prefs.get_many(
            "web", "local" if i % 50 else "other", "defaults", [("user", f"u{i}"), ("channel", "c")]
        )
        for i in range(450)  # more keys than one query takes: read in parts
    ]
    reader = getattr(any_store, "_reader", None)  # SQLite's read connection: trace it
    statements: list[str] = []
    if reader is not None:
        await reader.set_trace_callback(statements.append)
    got = await asyncio.gather(*asked)
    if reader is not None:
        await reader.set_trace_callback(None)
        queries = [s for s in statements if s.startswith("SELECT scope, subject, value_json")]
        assert 2 <= len(queries) <= 6  # 443 keys of one tenant in parts of 200, one other
    for i, answer in enumerate(got):
        if i % 50 == 0:
            assert answer == ({("user", "u0"): '{"n": 9}'} if i == 0 else {})
        elif i % 3 == 0:
            assert answer == {("user", f"u{i}"): f'{{"n": {i % 4 + 1}}}'}
        else:
            assert answer == {}
    # A read asked after a write returned sees it, whatever is being read meanwhile.
    slow = asyncio.gather(
        *(prefs.get_many("web", "local", "defaults", [("user", "u1")]) for _ in range(20))
    )
    await prefs.put("web", "local", "defaults", "user", "u1", '{"n": 2}', 2.0)
    assert await prefs.get_many("web", "local", "defaults", [("user", "u1")]) == {
        ("user", "u1"): '{"n": 2}'
    }
    await slow


async def test_admissions_charge_holds_its_own_limit_with_or_without_a_row(any_store: Any) -> None:
    """The batch write's quota check, apart from the plan that decided it: a window grows only
    while within its limit, a missing window starts only if the units fit, 0 is no limit, and
    an admin's grant (below zero) makes room even for more than the limit."""
    from bot.storage.admission import Charge

    async def charge(*charges: Charge) -> bool:
        try:
            async with any_store.transaction() as tx:
                if not await any_store.admission.write(tx, (), charges, ()):
                    raise LookupError  # what admission does: roll the unit back
        except LookupError:
            return False
        return True

    async def used(scope: str, win: str) -> int | None:
        row = await any_store.fetchone(
            "SELECT used FROM quota_usage WHERE scope = ? AND win = ?", (scope, win)
        )
        return None if row is None else int(row["used"])

    assert not await charge(Charge("user:x", "d:1", 11, 10))  # never fits a fresh window
    assert await used("user:x", "d:1") is None
    assert await charge(Charge("user:x", "d:1", 6, 10))
    assert not await charge(Charge("user:x", "d:1", 5, 10))
    assert await charge(Charge("user:x", "d:1", 4, 10))
    assert await used("user:x", "d:1") == 10
    assert await charge(Charge("user:x", "d:1", 1000, 0))  # 0: no limit
    # All or nothing across windows: one refused, none is kept.
    assert not await charge(Charge("user:y", "d:1", 2, 10), Charge("user:x", "d:2", 11, 10))
    assert await used("user:y", "d:1") is None
    async with any_store.transaction() as tx:
        await any_store.quota.grant(tx, "user:z", "d:1", 5)  # used -5
    assert await charge(Charge("user:z", "d:1", 12, 10))  # -5 + 12 = 7
    assert await used("user:z", "d:1") == 7


async def test_a_job_as_written_is_the_job_as_read_back(any_store: Any) -> None:
    """What the submit path shows without reading back (records.queued_job) must not drift
    from what the store returns for the same row."""
    from bot.storage.records import queued_job

    new = NewJob(
        id="w1",
        platform="web",
        tenant="local",
        channel_id="general",
        thread_id="t1",
        owner_id="alice",
        owner_name="Alice",
        kind="vary",
        parent_job_id=None,
        parent_index=None,
        request=JobRequest(prompt="a fox", n=3, seed=11, model="m1"),
        provider="offline",
        notice="a notice",
        interaction_id="int-w1",
        created_at=5.0,
    )
    async with any_store.transaction() as tx:
        await any_store.jobs.insert(tx, new)
    assert await any_store.jobs.get("w1") == queued_job(new)
