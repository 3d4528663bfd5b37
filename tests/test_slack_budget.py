"""Slack's rate limits under a burst: per-job call budgets, paced calls, Retry-After honoured.

Through slack-bolt and slack_sdk against the Slack fake, which enforces Slack's documented
limits (``tests/fakes/slack_limits.py``) 60 times faster, the bot's budgets scaled alike.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from adapters.slack.admins import AdminCache
from adapters.slack.limits import HeldWebClient, MethodHolds
from bot.pacing import Budget, StatusPacer
from tests.fakes.slack_api import SlackFake
from tests.fakes.slack_limits import Limit, RateLimits
from tests.slack_burst import run_burst

TOKEN = "xoxb-test-token"


async def test_a_500_job_burst_stays_within_the_budget_and_honours_every_retry_after(
    tmp_path: Path,
) -> None:
    figures = await run_burst(tmp_path, 500, users=100, channels=5, time_scale=60.0)
    print("\n" + "\n".join(figures.lines()))
    assert figures.results == 500
    # No call of a method went out while the client knew it was held, and none reached Slack
    # inside a Retry-After (beyond what crossed the 429 on the wire).
    assert figures.early == 0
    assert figures.unhonoured == [] and figures.violations == []
    # One status post, at most three best-effort edits, the settling edit, three upload
    # steps and the result: eight accepted calls at most, whatever the queue did.
    assert max(figures.accepted_per_job) <= 8
    assert figures.median <= 9
    # Without pacing and coalescing this was about ten chat.update calls per job.
    assert figures.by_method["chat.update"] <= 500 * 4


async def test_after_a_429_no_call_of_that_method_goes_out_before_retry_after() -> None:
    # chat.postMessage: 2 in any 60 s, so the third is refused with Retry-After: 60 ... 1 s
    # when the fake runs 60 times faster. The SDK retries the refused call; a fourth call from
    # another task must wait out the same hold instead of going out at once.
    limits = RateLimits({"chat.postMessage": Limit(2, 60.0)}, time_scale=60.0)
    async with SlackFake(TOKEN, rate_limits=limits) as fake:
        client = HeldWebClient(token=TOKEN, base_url=fake.api_url, holds=MethodHolds())
        await client.chat_postMessage(channel="C1", text="one")
        await client.chat_postMessage(channel="C1", text="two")
        start = time.monotonic()
        third = asyncio.create_task(client.chat_postMessage(channel="C1", text="three"))
        await fake.wait_until(lambda: len(fake.refused) == 1)
        fourth = await client.chat_postMessage(channel="C2", text="four")
        assert fourth["ok"] and time.monotonic() - start >= 1.0
        assert (await third)["ok"]
        assert limits.unhonoured == [] and fake.violations == []
        assert client.holds.waits >= 1


async def test_the_pacer_coalesces_a_jobs_edits_and_keeps_one_for_running() -> None:
    pacer = StatusPacer()
    sent: list[str] = []

    def edit(text: str):  # type: ignore[no-untyped-def]
        async def send() -> None:
            sent.append(text)

        return send

    budget = Budget(per_job=3, channel_per_min=60.0, tenant_per_min=0.0, burst=1)
    where = ("slack", "T", "C")
    for i in range(10):  # ten queue-position events at once: one edit now, the newest later
        pacer.offer("j1", budget, where, edit(f"place {i}"), state_change=False)
        await asyncio.sleep(0)
    await asyncio.sleep(1.2)
    assert sent == ["place 0", "place 9"]
    pacer.offer("j1", budget, where, edit("place 10"), state_change=False)  # over its share
    pacer.offer("j1", budget, where, edit("running"), state_change=True)  # the one kept
    await asyncio.sleep(1.2)
    assert sent == ["place 0", "place 9", "running"]
    pacer.offer("j1", budget, where, edit("late"), state_change=True)
    await pacer.settle("j1")  # the result settles: nothing more goes out
    await asyncio.sleep(0.1)
    assert "late" not in sent
    await pacer.aclose()


async def test_a_burst_from_one_person_asks_users_info_once() -> None:
    async with SlackFake(TOKEN) as fake:
        fake.add_user("UJO", "jo", admin=True)
        client = HeldWebClient(token=TOKEN, base_url=fake.api_url, holds=MethodHolds())
        admins = AdminCache(client)
        answers = await asyncio.gather(*(admins.is_admin("T", "UJO") for _ in range(10)))
        assert answers == [True] * 10
        assert len(fake.calls_to("users.info")) == 1
