"""The references of jobs' status messages, written soon and together instead of one unit of
work each.

Under a burst each was a unit of work queueing behind every other submission's, so each
person's answer waited for everyone's. The references due are written in one statement; what
this process reads a job for next (its first update, its result, a Delete) waits for that
job's turn (:meth:`StatusRefs.written`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from bot.storage.protocols import JobRepository

log = logging.getLogger(__name__)


class StatusRefs:
    def __init__(self, jobs: JobRepository) -> None:
        self._jobs = jobs
        self._due: dict[str, str] = {}
        self._writer: asyncio.Task[None] | None = None
        self._writing: dict[str, asyncio.Task[None]] = {}  # job id -> the task that writes it

    def keep(self, job_id: str, ref: str) -> None:
        self._due[job_id] = ref
        if self._writer is None:
            writer = self._writer = asyncio.create_task(self._write(), name="status-refs")

            def done(task: asyncio.Task[None]) -> None:
                for key in [k for k, t in self._writing.items() if t is task]:
                    del self._writing[key]

            writer.add_done_callback(done)
        self._writing[job_id] = self._writer

    async def written(self, job_id: str) -> None:
        """Return once ``job_id``'s reference, if one is due, is in the database."""
        writer = self._writing.get(job_id)
        if writer is not None:
            await asyncio.wait([writer])

    async def aclose(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([self._writer], timeout=10)

    async def _write(self) -> None:
        try:
            while self._due:
                due, self._due = self._due, {}
                try:
                    await self._jobs.set_status_refs(list(due.items()))
                except Exception as exc:  # the results are still posted, as messages of their own
                    log.warning("status messages of %d jobs not recorded: %s", len(due), exc)
        finally:
            self._writer = None


__all__ = ["StatusRefs"]
