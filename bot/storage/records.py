"""The values the storage hands the core, and takes from it: frozen, database-neutral.

A repository builds these from its rows; the core never sees a row, a cursor or a column name.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.job_request import JobRequest

Window = tuple[str, str]
"""(scope, window), e.g. ("user:web:local:alice", "d:2026-11-22")."""


def user_scope(platform: str, tenant: str, user_id: str) -> str:
    return f"user:{platform}:{tenant}:{user_id}"


def workspace_scope(platform: str, tenant: str) -> str:
    return f"ws:{platform}:{tenant}"


@dataclass(frozen=True)
class Job:
    id: str
    platform: str
    tenant: str
    channel_id: str
    thread_id: str | None
    owner_id: str
    owner_name: str
    kind: str
    parent_job_id: str | None
    parent_index: int | None
    state: str
    request: JobRequest
    provider: str
    model: str | None
    seed: int
    n: int
    attempts: int
    error: str | None
    notice: str
    status_ref: str | None
    result_ref: str | None
    grid_sha: str | None
    grid_ext: str | None
    deleted: bool
    created_at: float
    finished_at: float | None
    server: str | None = None  # the server(s) of a provider pool that made the images

    @property
    def payer_scope(self) -> str:
        return user_scope(self.platform, self.tenant, self.owner_id)

    @property
    def prompt(self) -> str:
        return self.request.shown_prompt


@dataclass(frozen=True)
class NewJob:
    """A job as it is first written (queued). Its model, seed and n are the request's."""

    id: str
    platform: str
    tenant: str
    channel_id: str
    thread_id: str | None
    owner_id: str
    owner_name: str
    kind: str
    parent_job_id: str | None
    parent_index: int | None
    request: JobRequest
    provider: str
    notice: str
    interaction_id: str | None
    created_at: float


def queued_job(job: NewJob) -> Job:
    """``job`` as it reads back right after it was written."""
    r = job.request
    return Job(
        id=job.id,
        platform=job.platform,
        tenant=job.tenant,
        channel_id=job.channel_id,
        thread_id=job.thread_id,
        owner_id=job.owner_id,
        owner_name=job.owner_name,
        kind=job.kind,
        parent_job_id=job.parent_job_id,
        parent_index=job.parent_index,
        state="queued",
        request=r,
        provider=job.provider,
        model=r.model,
        seed=r.seed,
        n=r.n,
        attempts=0,
        error=None,
        notice=job.notice,
        status_ref=None,
        result_ref=None,
        grid_sha=None,
        grid_ext=None,
        deleted=False,
        created_at=job.created_at,
        finished_at=None,
    )


@dataclass(frozen=True)
class ActiveJob:
    """What the scheduler needs of a queued or running job at start (not its request: a job
    must be resumable or settled even before anyone reads its parameters)."""

    id: str
    platform: str
    tenant: str
    owner_id: str
    provider: str
    attempts: int

    @property
    def payer_scope(self) -> str:
        return user_scope(self.platform, self.tenant, self.owner_id)


@dataclass(frozen=True)
class StoredJobImage:
    index: int  # 1-based, as the buttons show it
    sha256: str
    ext: str
    seed: int | None
    width: int
    height: int


@dataclass(frozen=True)
class ScopeLimits:
    """An admin's override for one scope; None keeps the configured limit."""

    daily: int | None
    monthly: int | None


@dataclass(frozen=True)
class Reservation:
    """A job's ``reserve`` ledger entry, with the windows it charged."""

    job_id: str
    payer: str
    units: int
    windows: tuple[Window, ...]
    exempt: bool


@dataclass(frozen=True)
class LedgerTotals:
    reserved: int
    refunded: int
    committed: int
    in_flight: int  # reserved by jobs still queued or running


__all__ = [
    "ActiveJob",
    "Job",
    "LedgerTotals",
    "NewJob",
    "Reservation",
    "ScopeLimits",
    "StoredJobImage",
    "Window",
    "queued_job",
    "user_scope",
    "workspace_scope",
]


@dataclass(frozen=True)
class PendingCommand:
    """An ``/imagine`` waiting for its owner's Confirm (see :mod:`bot.confirm`)."""

    id: str
    platform: str
    tenant: str
    channel_id: str
    owner_id: str
    text: str
    init_sha: str | None
    init_ext: str | None
    created_at: float
    used_at: float | None = None
