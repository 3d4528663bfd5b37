"""Job notices across processes on one PostgreSQL database: ``NOTIFY`` / ``LISTEN``.

A process that changes a job's state says so on the ``imagine_jobs`` channel (the payload is
the job id); every process listening hears it, so a page open on process A shows a job that
process B ran (:meth:`bot.delivery.Delivery.on_job_event`, remote events). Notices are a
hint, not a record: one that is lost costs a page a refresh, never a result (the outbox
delivers those).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

CHANNEL = "imagine_jobs"


class PgJobNotices:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._listening: Any = None  # the connection held for LISTEN
        self._callback: Callable[..., None] | None = None

    async def notify(self, job_id: str) -> None:
        try:
            await self._pool.execute("SELECT pg_notify($1, $2)", CHANNEL, job_id)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            log.info("could not tell the other processes about job %s: %s", job_id, exc)

    async def listen(self, on_job: Callable[[str], None]) -> None:
        """Call ``on_job(job_id)`` for each notice (this process's own included)."""
        if self._listening is not None:
            return
        conn = await self._pool.acquire()

        def heard(_conn: object, _pid: int, _channel: str, payload: object) -> None:
            on_job(str(payload))

        await conn.add_listener(CHANNEL, heard)
        self._listening, self._callback = conn, heard

    async def close(self) -> None:
        conn, self._listening = self._listening, None
        if conn is None:
            return
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await asyncio.shield(conn.remove_listener(CHANNEL, self._callback))
        await self._pool.release(conn)
