"""The outbox's records and protocols: durable deliveries, claimed with leases.

A row is written before anything is sent. The deliverer (:mod:`bot.delivery`) claims due rows
(a lease: no other claim until it expires), records each finished platform step in ``steps``
(JSON, the poster's own references), and completes, reschedules or gives up on the row.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from bot.types import Target

Kind = Literal["result", "takedown", "alert"]


@dataclass(frozen=True)
class OutboxRow:
    id: int
    job_id: str | None
    kind: Kind
    target: Target
    payload: str
    state: str
    attempts: int
    next_at: float
    steps: Mapping[str, str] = field(default_factory=dict)
    last_error: str = ""
    created_at: float = 0.0

    @staticmethod
    def parse_steps(text: str) -> dict[str, str]:
        raw = json.loads(text or "{}")
        return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


@dataclass(frozen=True)
class JobPost:
    platform: str
    ref: str
    kind: str


class OutboxRepository(Protocol):
    async def enqueue(
        self,
        *,
        job_id: str | None,
        kind: Kind,
        target: Target,
        payload: str = "",
        at: float,
        lease_s: float = 0.0,
    ) -> OutboxRow | None:
        """Add a row due at ``at``, or None when the job already has a row of this kind (result
        and takedown are once per job). With ``lease_s`` the new row is claimed by the caller
        at once (its first attempt), so no deliverer takes it in between."""
        ...

    async def claim_due(
        self, *, now: float, lease_s: float, platforms: Sequence[str], limit: int
    ) -> list[OutboxRow]:
        """Lease up to ``limit`` pending rows due by ``now`` whose lease has expired, for the
        given platforms, oldest first; each claim counts as an attempt."""
        ...

    async def extend_lease(self, row_id: int, until: float) -> None: ...

    async def record_steps(self, row_id: int, steps: Mapping[str, str]) -> None: ...

    async def complete(self, row_id: int, at: float) -> None: ...

    async def reschedule(self, row_id: int, next_at: float, error: str) -> None:
        """Back to pending, due at ``next_at``, lease released."""
        ...

    async def give_up(self, row_id: int, error: str, at: float) -> None: ...

    async def release_leases(self) -> int:
        """Free every lease: at start, when this process is the only one (the data-dir lock)."""
        ...

    async def of_job(self, job_id: str, kind: Kind) -> OutboxRow | None: ...

    async def undelivered(self, limit: int = 20) -> list[OutboxRow]:
        """Rows given up on, newest first (for ``doctor``)."""
        ...

    async def missing_results(self) -> list[str]:
        """Finished, live jobs whose result was never delivered and has no outbox row (they
        finished just before a kill, between their final state and their row)."""
        ...


class PostRepository(Protocol):
    async def add(self, job_id: str, platform: str, ref: str, kind: str) -> None: ...

    async def of_job(self, job_id: str) -> list[JobPost]: ...

    async def sha_in_use(self, sha256: str) -> bool:
        """Does a live (not deleted) job still show or start from this image content?"""
        ...


__all__ = ["JobPost", "Kind", "OutboxRepository", "OutboxRow", "PostRepository"]
