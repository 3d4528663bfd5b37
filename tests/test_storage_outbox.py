"""The outbox and posts repositories on both stores: what bot/delivery.py relies on."""

from __future__ import annotations

from typing import Any

import pytest

from bot.job_request import JobRequest
from bot.storage.records import NewJob, StoredJobImage
from bot.types import Target

WEB = Target("web", "local", "general")


@pytest.fixture
def store(any_store: Any) -> Any:
    return any_store


async def add_job(store: Any, job_id: str, *, at: float, state: str = "done") -> None:
    async with store.transaction() as tx:
        await store.jobs.insert(
            tx,
            NewJob(
                id=job_id,
                platform="web",
                tenant="local",
                channel_id="general",
                thread_id=None,
                owner_id="alice",
                owner_name="Alice",
                kind="imagine",
                parent_job_id=None,
                parent_index=None,
                request=JobRequest(prompt="p", n=1, seed=4294967295, init_sha="c" * 64),
                provider="offline",
                notice="",
                interaction_id=None,
                created_at=at,
            ),
        )
    await store.execute("UPDATE jobs SET state = ? WHERE id = ?", (state, job_id))


async def test_a_result_row_is_once_per_job_and_claimed_once(store: Any) -> None:
    await add_job(store, "j1", at=1)  # a whole number where a time is kept
    first = await store.outbox.enqueue(job_id="j1", kind="result", target=WEB, at=5)
    assert first is not None and (first.state, first.attempts, first.next_at) == ("pending", 0, 5)
    assert await store.outbox.enqueue(job_id="j1", kind="result", target=WEB, at=6) is None
    alert = await store.outbox.enqueue(
        job_id=None, kind="alert", target=WEB, payload="hi", at=7.0, lease_s=30.0
    )
    assert alert is not None and alert.attempts == 1  # claimed by its writer at once
    assert await store.outbox.claim_due(now=4.0, lease_s=30.0, platforms=["web"], limit=9) == []
    [due] = await store.outbox.claim_due(now=8.0, lease_s=30.0, platforms=["web"], limit=9)
    assert (due.id, due.attempts) == (first.id, 1)
    assert await store.outbox.claim_due(now=9.0, lease_s=30.0, platforms=["web"], limit=9) == []
    assert await store.outbox.claim_due(now=9.0, lease_s=30.0, platforms=[], limit=9) == []


async def test_steps_retries_and_giving_up(store: Any) -> None:
    await add_job(store, "j1", at=1.0)
    row = await store.outbox.enqueue(job_id="j1", kind="result", target=WEB, at=1.0)
    assert row is not None
    await store.outbox.record_steps(row.id, {"file": "F1", "post": "P1"})
    await store.outbox.reschedule(row.id, 50.0, "slow down " * 100)
    again = await store.outbox.of_job("j1", "result")
    assert again is not None and again.steps == {"file": "F1", "post": "P1"}
    assert again.next_at == 50.0 and len(again.last_error) == 500
    await store.outbox.extend_lease(row.id, 99.0)
    assert await store.outbox.release_leases() == 1
    await store.outbox.give_up(row.id, "channel archived", 60.0)
    [gone] = await store.outbox.undelivered()
    assert (gone.state, gone.last_error) == ("failed", "channel archived")
    await store.outbox.complete(row.id, 70.0)
    assert await store.outbox.of_job("j1", "takedown") is None


async def test_missing_results_are_finished_jobs_without_a_row(store: Any) -> None:
    await add_job(store, "late", at=2.0)
    await add_job(store, "early", at=1.0, state="failed")
    await add_job(store, "running", at=0.5, state="running")
    await add_job(store, "has_row", at=0.1)
    await store.outbox.enqueue(job_id="has_row", kind="result", target=WEB, at=1.0)
    assert await store.outbox.missing_results() == ["early", "late"]


async def test_posts_are_kept_in_order_and_image_content_in_use_is_found(store: Any) -> None:
    await add_job(store, "j1", at=1.0)
    for ref in ("pick-b", "pick-a", "pick-b"):
        await store.posts.add("j1", "web", ref, "pick")
    assert [p.ref for p in await store.posts.of_job("j1")] == ["pick-b", "pick-a"]
    async with store.transaction() as tx:
        await store.images.put(tx, "j1", [StoredJobImage(1, "a" * 64, "png", 4294967295, 8, 8)])
    assert (await store.images.of_job("j1"))[0].seed == 4294967295
    assert await store.posts.sha_in_use("a" * 64)
    assert await store.posts.sha_in_use("c" * 64)  # the job starts from it (init image)
    assert not await store.posts.sha_in_use("b" * 64)
    await store.jobs.mark_deleted("j1")
    assert not await store.posts.sha_in_use("a" * 64)
