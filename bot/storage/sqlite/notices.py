"""Job notices for the SQLite store: nothing to do. One process owns a SQLite data dir (its
lock), so every job event is already this process's own."""

from __future__ import annotations

from collections.abc import Callable


class SqliteJobNotices:
    async def notify(self, job_id: str) -> None:
        return None

    async def listen(self, on_job: Callable[[str], None]) -> None:
        return None

    async def close(self) -> None:
        return None
