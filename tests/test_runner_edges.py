"""The runner's edges: a full disk while a job settles, and the provider's slot while a
result is posted. Real files, real SQLite, the real App."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import io
import logging
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from bot.app import App
from bot.providers.base import (
    Capabilities,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    ProgressCallback,
)
from bot.quotas import ledger_balances
from bot.types import PostSteps, Reply, Target
from tests.conftest import Channel, Chat, make_settings


def png(side: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (30, 120, 200)).save(buf, "PNG")
    return buf.getvalue()


class GateProvider:
    """Answers when the test says so; counts the calls that reached it."""

    name = "gate"
    label = "Gate"

    def __init__(self, *, concurrency: int = 1) -> None:
        self.concurrency = concurrency
        self.calls = 0
        self.called = asyncio.Event()
        self.answer = asyncio.Event()
        self._png = png()

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(max_n_per_call=1, max_concurrency=self.concurrency, min_side=64)

    async def generate(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        self.calls += 1
        self.called.set()
        await self.answer.wait()
        return GenerationResult((GeneratedImage(self._png, req.seed),), model="gate-1")

    async def check(self) -> dict[str, str]:
        return {}

    async def aclose(self) -> None:
        return None


@contextlib.asynccontextmanager
async def gated_app(data_root: Path, provider: GateProvider) -> AsyncIterator[Chat]:
    settings = make_settings(data_root, {"providers": {"default": "gate"}})
    async with App.open(settings, extra_providers={"gate": provider}) as app:
        yield Chat(app)


async def wait_for(predicate: Callable[[], bool], within: float = 20.0) -> None:
    """Poll ``predicate`` (log records, counters) until it holds; a guard against a hang,
    not a timed assertion."""
    deadline = time.monotonic() + within
    while True:
        if predicate():
            return
        assert time.monotonic() < deadline, "waited too long"
        await asyncio.sleep(0.02)


def retries_logged(caplog: pytest.LogCaptureFixture) -> int:
    return sum("could not record the failure" in r.getMessage() for r in caplog.records)


async def assert_settled_once_writing_works(
    chat: Chat, job_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    await chat.settle()
    job = await chat.app.runner.load(job_id)
    assert job is not None and job.state == "failed" and "refunded" in (job.error or "")
    assert (await chat.app.quotas.status(chat.actor("alice"))).daily_used == 0
    assert await ledger_balances(chat.app.storage)
    assert chat.result(job_id).state == "failed"  # and the channel was told
    gc.collect()  # an unretrieved task exception is reported when the task is collected
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


async def quota_held(chat: Chat, job_id: str) -> bool:
    rows = await chat.app.store.fetchall(
        "SELECT kind FROM ledger WHERE job_id = ? ORDER BY id", (job_id,)
    )
    job = await chat.app.runner.load(job_id)
    return job is not None and job.state == "running" and [r["kind"] for r in rows] == ["reserve"]


# ------------------------------------------------------------------------------ disk full
@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs: a disk that really fills up. Needs root (CI containers usually are);
    elsewhere the test below that makes SQLite refuse in another way still runs."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


async def test_disk_full_while_storing_and_settling_settles_when_space_returns(
    tiny_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    provider = GateProvider()
    async with gated_app(tiny_disk, provider) as chat:
        [queued] = [r for r in await chat.say("alice", "/imagine a fox --n 1") if r.job_id]
        assert queued.job_id is not None
        await asyncio.wait_for(provider.called.wait(), 20)
        filler = fill(tiny_disk)
        provider.answer.set()  # the image write fails, then so does recording the failure
        await wait_for(lambda: retries_logged(caplog) >= 2)
        assert await quota_held(chat, queued.job_id)  # nothing settled yet, nothing lost
        filler.unlink()
        await assert_settled_once_writing_works(chat, queued.job_id, caplog)


async def test_a_refusing_database_after_a_failed_image_write_is_retried_until_it_works(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without root: the image store cannot be written (a file stands where its folder goes)
    and SQLite refuses the failure path's write (a trigger aborting it, a real SQLite error)."""
    caplog.set_level(logging.WARNING)
    provider = GateProvider()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "images").write_bytes(b"not a folder")
    async with gated_app(tmp_path, provider) as chat:
        [queued] = [r for r in await chat.say("alice", "/imagine a fox --n 1") if r.job_id]
        assert queued.job_id is not None
        await asyncio.wait_for(provider.called.wait(), 20)
        await chat.app.store.execute(
            "CREATE TRIGGER refuse BEFORE UPDATE OF state ON jobs WHEN NEW.state = 'failed' "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
        provider.answer.set()
        await wait_for(lambda: retries_logged(caplog) >= 2)
        assert await quota_held(chat, queued.job_id)
        await chat.app.store.execute("DROP TRIGGER refuse")
        await assert_settled_once_writing_works(chat, queued.job_id, caplog)


# --------------------------------------------------------------------- the provider's slot
class HeldChannel(Channel):
    """A platform whose result uploads hang until the test lets them through."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.waiting = 0

    async def post(
        self, target: Target, reply: Reply, steps: PostSteps | None = None
    ) -> str | None:
        if reply.state == "done":
            self.waiting += 1
            await self.release.wait()
        return await super().post(target, reply, steps)


async def test_the_provider_slot_is_free_while_a_result_is_being_posted(tmp_path: Path) -> None:
    provider = GateProvider(concurrency=1)
    provider.answer.set()
    settings = make_settings(tmp_path, {"providers": {"default": "gate"}})
    async with App.open(settings, extra_providers={"gate": provider}) as app:
        chat = Chat(app)
        held = HeldChannel()
        app.handler.register_poster("test", held)
        a = next(r.job_id for r in await chat.say("alice", "/imagine a fox --n 1") if r.job_id)
        b = next(r.job_id for r in await chat.say("bob", "/imagine an owl --n 1") if r.job_id)
        # Alice's result is stuck on its way to the platform; Bob's job still reaches the
        # provider's only slot, and his result queues for the platform behind hers.
        await wait_for(lambda: provider.calls == 2 and held.waiting == 2)
        states = {j: (await app.runner.load(j)).state for j in (a, b)}  # type: ignore[union-attr]
        assert states == {a: "done", b: "done"}
        held.release.set()
        await chat.settle()
        assert {r.job_id for r in held.posted if r.state == "done"} == {a, b}


# ------------------------------------------------------------------------- place in line
class TurnstileProvider(GateProvider):
    """Answers one call per ``let_through()``."""

    def __init__(self) -> None:
        super().__init__(concurrency=1)
        self.turns = asyncio.Semaphore(0)

    async def generate(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        self.calls += 1
        await self.turns.acquire()
        return GenerationResult((GeneratedImage(self._png, req.seed),), model="gate-1")

    def let_through(self, n: int) -> None:
        for _ in range(n):
            self.turns.release()


async def test_a_long_line_gets_few_place_edits_and_the_front_exact_ones(tmp_path: Path) -> None:
    provider = TurnstileProvider()
    settings = make_settings(
        tmp_path, {"providers": {"default": "gate"}, "jobs": {"max_queue": 100}}
    )
    async with App.open(settings, extra_providers={"gate": provider}) as app:
        chat = Chat(app)
        ids = []
        for i in range(40):
            [queued] = [
                r for r in await chat.say(f"user{i:02d}", "/imagine a fox --n 1") if r.job_id
            ]
            ids.append(queued.job_id)
        await wait_for(lambda: provider.calls == 1)
        await asyncio.sleep(1.0)  # the line as it stands has been announced
        before = len(chat.channel.updated)
        provider.let_through(3)  # three starts: everyone waiting moves up three places
        await wait_for(lambda: provider.calls == 4)
        await asyncio.sleep(2.0)  # the announcement rounds that follow
        edits = [r for r in chat.channel.updated[before:] if r.position is not None]
        shown = {r.job_id: r.position for r in edits}
        assert shown[ids[4]] == app.runner.position(ids[4]) == 1  # the front: exact
        assert shown[ids[13]] == app.runner.position(ids[13]) == 10
        # Far back, three places out of thirty-six is no edit; nobody got one per start.
        assert ids[-1] not in shown and app.runner.position(ids[-1]) == 36
        assert len(edits) <= 36
        provider.let_through(40)
        await chat.settle()
