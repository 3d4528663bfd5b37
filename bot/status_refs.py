"""The references of jobs' status messages, written soon and together instead of one unit of
work each.

Under a burst each was a unit of work queueing behind every other submission's, so each
person's answer waited for everyone's. The references due are written in one statement, a
round at a time; what this process reads a job for next (its first update, its result, a
Delete) waits for the round that holds that job's reference (:meth:`StatusRefs.written`),
not for the writer to fall idle.
"""

from __future__ import annotations

import asyncio
import logging

from bot.storage.protocols import JobRepository

log = logging.getLogger(__name__)

RETRY_S = 0.5  # one more try for a round the database refused (a busy or locked moment)


class StatusRefs:
    def __init__(self, jobs: JobRepository) -> None:
        self._jobs = jobs
        self._due: dict[str, str] = {}
        self._round: asyncio.Future[None] | None = None  # the round the due refs go in
        self._writing: dict[str, asyncio.Future[None]] = {}  # job id -> its round
        self._writer: asyncio.Task[None] | None = None

    def keep(self, job_id: str, ref: str) -> None:
        if self._round is None:
            self._round = asyncio.get_running_loop().create_future()
        self._due[job_id] = ref
        self._writing[job_id] = self._round
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(), name="status-refs")

    async def written(self, job_id: str) -> None:
        """Return once ``job_id``'s reference, if one is due, is in the database (or its
        write has failed)."""
        round_ = self._writing.get(job_id)
        if round_ is not None:
            await asyncio.wait([round_])

    async def all_written(self) -> None:
        """Return once every reference due now is written (later ones are not waited for)."""
        rounds = set(self._writing.values())
        if rounds:
            await asyncio.wait(rounds)

    async def aclose(self) -> None:
        if self._writer is not None:
            _, pending = await asyncio.wait([self._writer], timeout=10)
            for task in pending:
                task.cancel()

    async def _write(self) -> None:
        try:
            while self._due:
                due, round_ = self._due, self._round
                self._due, self._round = {}, None
                try:
                    await self._write_round(due)
                finally:
                    for job_id in due:
                        if self._writing.get(job_id) is round_:
                            del self._writing[job_id]
                    if round_ is not None and not round_.done():
                        round_.set_result(None)
        finally:
            self._writer = None
            if self._round is not None:  # only when this task was cancelled (a stop)
                self._round.cancel()  # whoever waits for it goes on
                self._round = None

    async def _write_round(self, due: dict[str, str]) -> None:
        for attempt in (1, 2):
            try:
                await self._jobs.set_status_refs(list(due.items()))
                return
            except Exception as exc:
                if attempt == 2:  # the results are still posted, as messages of their own
                    log.warning("status messages of %d jobs not recorded: %s", len(due), exc)
                    return
                await asyncio.sleep(RETRY_S)


__all__ = ["StatusRefs"]
