"""Status references are written soon and together (bot/status_refs.py); whoever reads a job
waits for the round that holds its reference, not for the writer to fall idle."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.status_refs import StatusRefs
from tests.conftest import open_chat


async def test_a_reader_waits_for_its_own_round_not_for_the_stream_to_stop(
    tmp_path: Path,
) -> None:
    async with open_chat(tmp_path) as chat:
        [status] = await chat.say("ann", "/imagine a fox --n 1")
        assert status.job_id
        await chat.settle()
        refs = StatusRefs(chat.app.store.jobs)
        refs.keep(status.job_id, "msg-ann")
        stopped = asyncio.Event()

        async def stream() -> None:  # others' references keep coming, faster than written
            for i in range(5000):
                refs.keep(f"other-{i}", f"msg-{i}")
                await asyncio.sleep(0)
            stopped.set()

        producer = asyncio.create_task(stream())
        await refs.written(status.job_id)
        assert not stopped.is_set()  # back long before the stream ended
        job = await chat.app.store.jobs.get(status.job_id)
        assert job is not None and job.status_ref == "msg-ann"
        await producer
        await refs.all_written()
        await refs.aclose()


async def test_delivery_reads_a_job_with_its_reference_in(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat:
        [status] = await chat.say("bo", "/imagine a fox --n 1")
        assert status.job_id
        await chat.settle()
        delivery = chat.app.handler.delivery
        await delivery.set_status_ref(status.job_id, "msg-new")
        job = await delivery.job(status.job_id)  # not a read from before the write
        assert job is not None and job.status_ref == "msg-new"
