"""Edges of a job's life where real platforms are slow, fail, or restart (found in review)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from PIL import Image

from bot.app import App
from bot.providers.base import (
    Capabilities,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    ProgressCallback,
)
from bot.store import Store
from bot.types import Invocation, PostSteps, Reply, Target
from tests.conftest import Channel, Chat, make_settings, open_chat


def first_job(sent: list[Reply]) -> str:
    job_id = next(r.job_id for r in sent if r.job_id)
    assert job_id is not None
    return job_id


class SlowResponder:
    """Like Discord and Slack: the first response takes a moment to land."""

    def __init__(self, *, fail_first: bool = False) -> None:
        self.sent: list[Reply] = []
        self.fail_first = fail_first

    async def send(self, reply: Reply) -> str | None:
        if self.fail_first:
            self.fail_first = False
            raise RuntimeError("404 Unknown interaction")
        await asyncio.sleep(0.5)
        self.sent.append(reply)
        return f"status-{len(self.sent)}"

    async def edit(self, ref: str, reply: Reply) -> None:
        return None


async def test_a_job_that_finishes_while_its_status_is_sent_is_posted_once(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat:
        out = SlowResponder()
        await chat.app.handler.handle(
            Invocation(chat.actor("alice"), "general", text="a fox --n 1"), out
        )
        await chat.settle()
        job_id = out.sent[0].job_id
        done = [r for r in chat.channel.posted if r.job_id == job_id and r.state == "done"]
        assert len(done) == 1
        # and the status message above it was settled, not left at "queued"
        assert [r for r in chat.channel.updated if r.job_id == job_id][-1].state == "done"


async def test_a_status_message_that_cannot_be_sent_does_not_claim_nothing_was_charged(
    tmp_path: Path,
) -> None:
    async with open_chat(tmp_path) as chat:
        out = SlowResponder(fail_first=True)
        actor = chat.actor("alice")
        await chat.app.handler.handle(Invocation(actor, "general", text="a fox --n 4"), out)
        await chat.settle()
        assert (await chat.app.quotas.status(actor)).daily_used == 4
        assert not any("Nothing was charged" in r.text for r in out.sent)
        assert any(r.state == "done" for r in chat.channel.posted)  # the result still landed


class NotifyingChannel(Channel):
    def __init__(self) -> None:
        super().__init__()
        self.more = asyncio.Event()

    async def post(
        self, target: Target, reply: Reply, steps: PostSteps | None = None
    ) -> str | None:
        ref = await super().post(target, reply, steps)
        self.more.set()
        return ref


async def test_results_of_jobs_settled_at_start_reach_a_poster_registered_later(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path)
    async with App.open(settings, start=False) as app:  # a process that died mid-way
        chat = Chat(app)
        a = first_job(await chat.say("alice", "/imagine a fox --n 1"))
        b = first_job(await chat.say("alice", "/imagine an owl --n 1"))
        await app.store.execute("UPDATE jobs SET status_ref = 'status-a' WHERE id = ?", (a,))
        await app.store.execute(
            "UPDATE jobs SET state = 'running', attempts = 2 WHERE id = ?", (a,)
        )
    async with App.open(settings) as app:
        await app.runner.wait_idle(30)  # b resumed and finished, a settled: nobody listening
        channel = NotifyingChannel()
        app.handler.register_poster("test", channel)  # the adapter comes up
        async with asyncio.timeout(10):
            while {r.job_id for r in channel.posted} != {a, b}:
                await channel.more.wait()
                channel.more.clear()
        states = {r.job_id: r.state for r in channel.posted}
        assert states == {a: "failed", b: "done"}
        await app.handler.deliver_pending("test")  # delivered once, not again
        assert len(channel.posted) == 2


class CountingProvider:
    """A service that takes two calls at a time (a webui, a two-replica endpoint)."""

    name = "counting"
    label = "Counting"

    def __init__(self) -> None:
        self.in_flight = self.peak = 0
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (200, 10, 10)).save(buf, "PNG")
        self._png = buf.getvalue()

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(max_n_per_call=1, max_concurrency=2, min_side=64)

    async def generate(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0.1)
            return GenerationResult(
                tuple(GeneratedImage(self._png, req.seed + i) for i in range(req.n))
            )
        finally:
            self.in_flight -= 1

    async def check(self) -> dict[str, str]:
        return {}

    async def aclose(self) -> None:
        return None


async def test_max_concurrency_bounds_calls_across_jobs(tmp_path: Path) -> None:
    provider = CountingProvider()
    settings = make_settings(tmp_path, {"providers": {"default": "counting"}})
    async with App.open(settings, extra_providers={"counting": provider}) as app:
        chat = Chat(app)
        await chat.say("alice", "/imagine a fox --n 4")
        await chat.say("bob", "/imagine an owl --n 4")
        await chat.settle()
        assert provider.peak == 2


async def test_refine_reads_n_through_phone_typography(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat:
        parent = first_job(await chat.say("alice", "/imagine a fox --n 4"))
        await chat.settle()
        for text in ("a fox in snow \u2014n 1", "a fox in snow \u2013n 1", "a fox in snow"):
            child = first_job(
                await chat.click(
                    "alice", f"refine:{parent}:1", fields={"prompt": text, "strength": "0.5"}
                )
            )
            await chat.settle()
            job = await chat.app.runner.load(child)
            assert job is not None and job.n == (4 if text == "a fox in snow" else 1)


async def test_the_result_line_uses_the_payers_real_limits(tmp_path: Path) -> None:
    async with open_chat(tmp_path, {"quota": {"roles": {"vip": {"daily": 200}}}}) as chat:
        job = first_job(await chat.say("alice", "/imagine a fox --n 4", roles=("vip",)))
        await chat.settle()
        assert "196 of 200" in chat.result(job).text
        admin = first_job(await chat.say("root", "/imagine a fox --n 1", admin=True))
        await chat.settle()
        assert "left" not in chat.result(admin).text  # exempt: no quota line at all


async def test_cancelled_while_waiting_for_begin_leaves_no_transaction_open(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "db.sqlite3") as store:
        await store.execute("CREATE TABLE t (x INTEGER)")

        async def writer() -> None:
            async with store.transaction() as db:
                await db.execute("INSERT INTO t VALUES (1)")

        task = asyncio.create_task(writer())
        await asyncio.sleep(0)  # now awaiting BEGIN IMMEDIATE on the database thread
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.execute("INSERT INTO t VALUES (2)")  # e.g. stop() re-queueing a job
        assert not store.in_transaction
        async with store.transaction():
            pass


async def test_reroll_keeps_every_weighted_part_with_a_style(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat:
        parent = first_job(
            await chat.say("alice", "/imagine a castle::2 moat::1 fog::-0.5 --style anime --n 1")
        )
        await chat.settle()
        child = first_job(await chat.click("alice", f"reroll:{parent}"))
        await chat.settle()
        p, c = await chat.app.runner.load(parent), await chat.app.runner.load(child)
        assert p is not None and c is not None
        assert c.request.weighted_prompts == p.request.weighted_prompts
