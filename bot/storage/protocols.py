"""What the core needs from a database, as small protocols.

A method that takes ``tx`` runs inside the caller's unit of work (:meth:`Storage.transaction`
or, for reads only, :meth:`Storage.reading`) and commits with it; this is how a job row and its
quota reservation are written together or not at all. A method without ``tx`` is one statement
of its own, committed when it returns; it must not be called while the caller holds a ``tx``
(the SQLite implementation serializes everything on one connection and would wait forever).

Conditional writes report whether they changed anything (``-> bool``): "claim", "start",
"use" are each one statement whose condition is the check, never a read followed by a write.
(Admission reads first and decides, for a whole batch at once, inside a unit that holds the
write lock; its quota writes are still conditional: see :mod:`bot.storage.admission`.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Literal, Protocol

from bot.storage.outbox import OutboxRepository, PostRepository
from bot.storage.records import (
    ActiveJob,
    Job,
    LedgerTotals,
    NewJob,
    PendingCommand,
    Reservation,
    ScopeLimits,
    StoredJobImage,
    Window,
)

if TYPE_CHECKING:
    from bot.storage.admission import AdmissionStatements


class Tx(Protocol):
    """An open unit of work, opaque to the core: only the implementation that handed it out
    looks inside (the SQLite one hands out its connection)."""


class JobRepository(Protocol):
    # ------------------------------------------------------------- inside a transaction
    async def duplicate_in_flight(
        self,
        tx: Tx,
        *,
        kind: str,
        parent_job_id: str | None,
        parent_index: int | None,
        platform: str,
        tenant: str,
        owner_id: str,
        since: float,
    ) -> bool:
        """The same owner asked for the same continuation (``parent_index`` None matching
        None) after ``since``, and it is still queued or running."""
        ...

    async def insert(self, tx: Tx, job: NewJob) -> None:
        """Write a new job in state ``queued``."""
        ...

    async def cancel_queued(self, tx: Tx, job_id: str, error: str, at: float) -> bool:
        """queued -> failed; False when the job is no longer queued."""
        ...

    async def finish(
        self,
        tx: Tx,
        job_id: str,
        *,
        state: Literal["done", "filtered"],
        provider: str,
        model: str | None,
        notice: str,
        grid_sha: str | None,
        grid_ext: str | None,
        error: str | None,
        at: float,
        server: str | None = None,
    ) -> bool:
        """running -> ``state`` with the results' facts (``model`` None keeps the stored
        one; ``server``: which server(s) of a provider pool made it); False when the job was
        no longer running."""
        ...

    async def fail(self, tx: Tx, job_id: str, error: str, at: float) -> bool:
        """queued or running -> failed; False when the job had already finished."""
        ...

    # ------------------------------------------------------------------- on their own
    async def get(self, job_id: str) -> Job | None: ...

    async def active(self, state: Literal["queued", "running"]) -> list[ActiveJob]:
        """Jobs in ``state``, oldest first."""
        ...

    async def mark_running(self, job_id: str, at: float) -> bool:
        """queued -> running, counting an attempt; False when it was not queued."""
        ...

    async def requeue(self, job_id: str, *, undo_attempt: bool) -> bool:
        """running -> queued. ``undo_attempt``: the run did not count (a graceful stop)."""
        ...

    async def set_status_ref(self, job_id: str, ref: str) -> None: ...

    async def set_status_refs(self, refs: Sequence[tuple[str, str]]) -> None:
        """(job_id, ref) pairs, in one unit of work."""
        ...

    async def history(self, platform: str, tenant: str, channel_id: str, limit: int) -> list[Job]:
        """The channel's newest ``limit`` jobs that were not deleted, oldest first."""
        ...

    async def in_thread(
        self, platform: str, tenant: str, channel_id: str, thread_id: str
    ) -> list[Job]:
        """The jobs of a thread, oldest first: the job whose status message is its root
        (``status_ref == thread_id``) and every job started inside it; deleted ones left out."""
        ...

    async def mark_deleted(self, job_id: str) -> None: ...

    async def claim_result(self, job_id: str) -> bool:
        """Take the right to post the job's result (result_ref NULL -> ''); True for exactly
        one caller, however many try at once."""
        ...

    async def release_result_claim(self, job_id: str) -> None:
        """Give a claim back ('' -> NULL) after the post failed, so a later delivery retries."""
        ...

    async def set_result_ref(self, job_id: str, ref: str) -> None: ...

    async def pending_results(self, platform: str) -> list[str]:
        """Ids of finished, not deleted jobs on ``platform`` whose result nobody has claimed
        yet, oldest first."""
        ...


class ImageRepository(Protocol):
    async def of_job(self, job_id: str) -> list[StoredJobImage]:
        """The job's images in index order."""
        ...

    async def put(self, tx: Tx, job_id: str, images: Sequence[StoredJobImage]) -> None:
        """Record the job's images (a retried job overwrites the same indexes)."""
        ...


class QuotaRepository(Protocol):
    """Usage per (scope, window), admin limits per scope, and blocks."""

    async def used_in(self, tx: Tx, scope: str, wins: Sequence[str]) -> dict[str, int]:
        """Usage of ``scope`` per window, for the windows that have a row."""
        ...

    async def credit(self, tx: Tx, scope: str, win: str, units: int) -> None:
        """Give back ``units`` a reservation charged to this window (a refund)."""
        ...

    async def grant(self, tx: Tx, scope: str, win: str, units: int) -> None:
        """Lower the window's usage by ``units``, starting the window if need be."""
        ...

    async def set_used(self, tx: Tx, scope: str, win: str, used: int) -> None:
        """Overwrite the usage of a window that has a row (a reset)."""
        ...

    async def limits(self, tx: Tx, scopes: Sequence[str]) -> dict[str, ScopeLimits]:
        """The overrides set for any of ``scopes``."""
        ...

    async def set_limits(
        self, tx: Tx, scope: str, daily: int | None, monthly: int | None
    ) -> None: ...

    async def block_reason(self, tx: Tx, scopes: Sequence[str]) -> str | None:
        """The reason one of ``scopes`` is blocked ('' for none given), or None."""
        ...

    async def block(self, tx: Tx, scope: str, reason: str, at: float) -> None: ...

    async def unblock(self, tx: Tx, scope: str) -> None: ...


class LedgerRepository(Protocol):
    """One reserve per job, then at most one commit and one refund."""

    async def reserve(
        self,
        tx: Tx,
        jobs: Sequence[tuple[str, int]],
        *,
        payer: str,
        windows: Sequence[Window],
        exempt: bool,
        at: float,
    ) -> None:
        """A ``reserve`` entry per (job_id, units), each recording the windows charged."""
        ...

    async def reservation(self, tx: Tx, job_id: str) -> Reservation | None: ...

    async def settle(
        self, tx: Tx, reservation: Reservation, *, committed: int, refunded: int, at: float
    ) -> bool:
        """Write the commit and refund entries, once: False (nothing written) when the job
        was already settled."""
        ...

    async def in_flight(self, tx: Tx, payer: str) -> list[Reservation]:
        """The payer's reservations whose job is still queued or running."""
        ...

    async def totals(self) -> LedgerTotals: ...


class ChannelRepository(Protocol):
    async def collaborative(self, platform: str, tenant: str, channel_id: str) -> bool | None:
        """The admin's setting for the channel, or None when none was made."""
        ...

    async def set_collaborative(
        self, platform: str, tenant: str, channel_id: str, on: bool
    ) -> None: ...


class PreferenceRepository(Protocol):
    """Saved choices (``/imagine settings`` defaults, avatar styles) as small JSON objects,
    one per (platform, tenant, kind, scope, subject); the core reads and writes the JSON."""

    async def get_many(
        self, platform: str, tenant: str, kind: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], str]:
        """The stored JSON for each (scope, subject) in ``keys`` that has a row."""
        ...

    async def put(
        self,
        platform: str,
        tenant: str,
        kind: str,
        scope: str,
        subject: str,
        value_json: str,
        at: float,
    ) -> None:
        """Insert or overwrite one row."""
        ...

    async def delete(self, platform: str, tenant: str, kind: str, scope: str, subject: str) -> bool:
        """Remove one row; False when there was none."""
        ...


class AdminLog(Protocol):
    async def append(self, actor_key: str, action: str, detail: str, at: float) -> None: ...


class AlertRepository(Protocol):
    async def claim(self, key: str, now: float, every_s: float) -> bool:
        """True, recording ``now``, unless an alert with ``key`` was recorded less than
        ``every_s`` before ``now``; one conditional write, so two callers never both win."""
        ...


class JobLeaseRepository(Protocol):
    """Jobs held by one of several processes on a shared database (``bot.jobs``, shared mode).

    A claim takes the fairest queued job of a provider (the payer served longest ago, under
    the per-user cap of running jobs) and holds it until ``until``; the holder renews it while
    the job runs. A lease that ran out is anyone's to put back in the queue.
    """

    async def queued_providers(self) -> set[str]: ...

    async def claim_next(
        self, *, provider: str, owner: str, now: float, until: float, max_running_per_user: int
    ) -> str | None:
        """The claimed job's id (now running, one more attempt), or None."""
        ...

    async def renew(self, owner: str, job_ids: Sequence[str], until: float) -> set[str]:
        """Extend the leases ``owner`` still holds among ``job_ids``; which ones those are."""
        ...

    async def expired(self, now: float) -> list[ActiveJob]: ...

    async def requeue_expired(self, job_id: str, now: float) -> bool:
        """Back to the queue if its lease is still expired (one process wins)."""
        ...

    async def fail_expired(self, tx: Tx, job_id: str, error: str, now: float) -> bool: ...

    async def holds(self, tx: Tx, job_id: str, owner: str) -> bool:
        """``owner`` still holds the running job (checked in the transaction that records
        its outcome, so a job taken over by another process is recorded once)."""
        ...

    async def release(self, owner: str, job_id: str) -> bool:
        """A graceful stop: back to the queue, the attempt not counted."""
        ...


class JobNotices(Protocol):
    """Several processes on one database: a job changed (its id), told to all of them."""

    async def notify(self, job_id: str) -> None:
        """Best effort: a notice that cannot be sent is logged, never raised."""
        ...

    async def listen(self, on_job: Callable[[str], None]) -> None:
        """From now on, ``on_job(job_id)`` for every notice, until the store closes."""
        ...

    async def close(self) -> None: ...


class ConfirmationRepository(Protocol):
    """Commands waiting for their owner's Confirm button (:mod:`bot.confirm`)."""

    async def put(self, pending: PendingCommand) -> None: ...

    async def get(self, pending_id: str) -> PendingCommand | None: ...

    async def use(self, pending_id: str, at: float) -> bool:
        """Mark it used; False when it already was (one conditional write: a double click
        runs the command once)."""
        ...

    async def unuse(self, pending_id: str) -> None:
        """Make it pressable again (the run it started was refused, e.g. no quota left)."""
        ...

    async def forget_before(self, at: float) -> int:
        """Delete the ones created before ``at``; how many."""
        ...


class Storage(Protocol):
    """The bundle the core is built on (``app.storage``)."""

    @property
    def jobs(self) -> JobRepository: ...

    @property
    def images(self) -> ImageRepository: ...

    @property
    def quota(self) -> QuotaRepository: ...

    @property
    def ledger(self) -> LedgerRepository: ...

    @property
    def channels(self) -> ChannelRepository: ...

    @property
    def admin_log(self) -> AdminLog: ...

    @property
    def prefs(self) -> PreferenceRepository: ...

    @property
    def alerts(self) -> AlertRepository: ...

    @property
    def outbox(self) -> OutboxRepository: ...

    @property
    def posts(self) -> PostRepository: ...

    @property
    def confirmations(self) -> ConfirmationRepository: ...

    @property
    def admission(self) -> AdmissionStatements:
        """Admission's batch statements (:mod:`bot.storage.admission`)."""
        ...

    @property
    def leases(self) -> JobLeaseRepository: ...

    @property
    def notices(self) -> JobNotices: ...

    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """A write transaction that holds the write lock from its start (so a read inside it
        cannot be overtaken by another writer); commits on exit, rolls back on any error,
        cancellation included."""
        ...

    def reading(self) -> AbstractAsyncContextManager[Tx]:
        """A few reads in a row, without taking the write lock."""
        ...


class Database(Storage, Protocol):
    """A :class:`Storage` that is also a database a tool can ask: raw statements (SQLite-style
    ``?`` placeholders on both stores) for ``doctor``, benchmarks and tests, and its health."""

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> Sequence[Any]: ...

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Any: ...

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int: ...

    async def health(self) -> tuple[bool, str]:
        """(usable, one line for ``doctor``: what the database is, its schema version)."""
        ...


__all__ = [
    "AdminLog",
    "AlertRepository",
    "ChannelRepository",
    "ConfirmationRepository",
    "Database",
    "ImageRepository",
    "JobLeaseRepository",
    "JobNotices",
    "JobRepository",
    "LedgerRepository",
    "PreferenceRepository",
    "QuotaRepository",
    "Storage",
    "Tx",
]
