"""Admission: a submission's jobs and their quota reservation, written in one transaction.

All or nothing: a replayed platform delivery is accepted once, a double click on Vary or
Reroll is one wish, and a quota or queue refusal writes nothing. Submissions that arrive
together share that transaction (:class:`Admissions`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bot.config import JobSettings
from bot.errors import QueueFull, UserError
from bot.job_request import Display, JobRequest
from bot.providers.base import GenerationRequest
from bot.quotas import QuotaBook, Quotas
from bot.storage.admission import ReserveEntry
from bot.storage.protocols import Storage, Tx
from bot.storage.records import NewJob
from bot.types import Actor

# A second identical Vary/Reroll click by the same person within this window is the same
# wish (a double click, a laggy client), not a second job to pay for.
DOUBLE_CLICK_S = 5.0
DOUBLE_CLICK_KINDS = frozenset(
    {"vary", "vary-subtle", "vary-strong", "reroll", "upscale", "zoom", "pan"}
)
log = logging.getLogger(__name__)

_ID_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"
# Submissions one unit of work decides at most: a burst's first answers do not wait on its last.
MAX_BATCH = 32


def new_job_id() -> str:
    """Random, short, unguessable (not sequential: ids travel in button payloads)."""
    # 32 letters: each random byte's low five bits pick one, evenly (256 is a multiple of 32).
    return "".join(_ID_ALPHABET[b & 31] for b in secrets.token_bytes(12))


@dataclass(frozen=True)
class JobSpec:
    """What the handler asks to run: one job, validated and fitted to its provider."""

    kind: str
    request: GenerationRequest
    provider: str
    init_sha: str | None = None
    init_ext: str | None = None
    parent_job_id: str | None = None
    parent_index: int | None = None
    notice: str = ""
    display: Display = field(default_factory=Display)  # the user's own words
    remix: bool = False
    cost: int = 1  # quota units per image

    def job_request(self, actor: Actor) -> JobRequest:
        """What is stored for this job, with who pays as the platform vouched for them now."""
        return JobRequest.from_generation(
            self.request,
            init_sha=self.init_sha,
            init_ext=self.init_ext,
            display=self.display,
            payer_roles=tuple(actor.roles),
            payer_admin=actor.is_admin,
            remix=self.remix,
            cost=self.cost,
        )


@dataclass
class _Request:
    actor: Actor
    channel_id: str
    thread_id: str | None
    specs: Sequence[JobSpec]
    interaction_id: str | None
    now: float
    answer: asyncio.Future[list[NewJob]]


Admitted = Callable[[Actor, Sequence[str], Sequence[JobSpec]], None]


class Admissions:
    """Submissions that arrive together are admitted together: one unit of work decides them
    all from one read of the queue and the quota, and writes the accepted ones' jobs, quota
    windows and ledger entries in a few multi-row statements (:mod:`bot.storage.admission`).

    Each submission is still all or nothing and is answered on its own: ids, ``[]`` for a
    replayed delivery, or its refusal (queue, duplicate, block, quota), decided in arrival
    order, each seeing what the ones before it took. A batch forms while the one before it is
    being written; under no load it is a batch of one. A batch the database refuses before
    its commit (a constraint) is tried again one submission at a time, so one request's
    failure is never another's; a failed commit is reported to each, never retried.

    ``on_admitted`` runs in the batch's task when the jobs are committed, before anyone hears
    of them: a caller cancelled meanwhile leaves no job that nothing runs."""

    def __init__(
        self,
        storage: Storage,
        quotas: Quotas,
        settings: JobSettings,
        on_admitted: Admitted,
    ) -> None:
        self._storage = storage
        self._quotas = quotas
        self._settings = settings
        self._on_admitted = on_admitted
        self._pending: list[_Request] = []
        self._worker: asyncio.Task[None] | None = None
        self._committing: set[asyncio.Task[None]] = set()

    async def admit(
        self,
        now: float,
        actor: Actor,
        channel_id: str,
        thread_id: str | None,
        specs: Sequence[JobSpec],
        interaction_id: str | None,
    ) -> list[NewJob]:
        """Queue the jobs of one submission and reserve their quota; the jobs as written (none
        for a replayed delivery). Raises the submission's refusal (a :class:`UserError`)."""
        answer: asyncio.Future[list[NewJob]] = asyncio.get_running_loop().create_future()
        self._pending.append(
            _Request(actor, channel_id, thread_id, specs, interaction_id, now, answer)
        )
        if self._worker is None:
            self._worker = asyncio.create_task(self._drain(), name="admission")
        return await answer

    async def drain(self) -> None:
        """Wait until every submission handed in so far is decided (for a graceful stop)."""
        while self._worker is not None or self._committing:
            await asyncio.wait([t for t in (self._worker, *self._committing) if t is not None])

    async def _drain(self) -> None:
        try:
            while self._pending:
                # A caller cancelled before its turn is skipped: nothing written for it.
                batch = [r for r in self._pending[:MAX_BATCH] if not r.answer.done()]
                del self._pending[:MAX_BATCH]
                if batch:
                    decided: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                    task = asyncio.create_task(self._admit(batch, decided))
                    self._committing.add(task)
                    task.add_done_callback(self._committing.discard)
                    # The next batch is formed and asked for once this one's unit has run,
                    # while this one commits (the store's write lock still puts the next
                    # one's reads after this one's commit).
                    await asyncio.wait([task, decided], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._worker = None
            for request in self._pending:  # only when this task itself was cancelled
                request.answer.cancel()
            self._pending.clear()

    async def _admit(
        self, batch: list[_Request], decided: asyncio.Future[None] | None = None
    ) -> None:
        try:
            outcomes = await self._write(batch, decided)
        except Exception as exc:
            if len(batch) > 1 and not (decided is not None and decided.done()):
                # The database refused one of them (a constraint): alone, it fails alone.
                log.warning(
                    "admitting %d submissions together failed (%s); one at a time now",
                    len(batch),
                    type(exc).__name__,
                )
                for request in batch:
                    if not request.answer.done():  # a caller gone meanwhile: nothing for it
                        await self._admit([request])
                return
            # Or the commit itself failed: never tried again here, since a commit reported
            # lost may have happened (then a second try would charge twice).
            for request in batch:
                if not request.answer.done():
                    request.answer.set_exception(exc)
            return
        except BaseException:
            for request in batch:
                request.answer.cancel()
            raise
        for request, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, UserError):
                if not request.answer.done():
                    request.answer.set_exception(outcome)
                continue
            if outcome:
                self._on_admitted(request.actor, [j.id for j in outcome], request.specs)
            if not request.answer.done():
                request.answer.set_result(outcome)

    async def _write(
        self, batch: Sequence[_Request], decided: asyncio.Future[None] | None
    ) -> list[list[NewJob] | UserError]:
        """One unit for the batch: read, decide each in order, write the accepted."""
        storage, quotas = self._storage, self._quotas
        now = quotas.now()
        scopes = sorted({scope for r in batch for scope in quotas.scopes(r.actor)})
        async with storage.transaction() as tx:
            facts, duplicates = await asyncio.gather(
                storage.admission.facts(
                    tx,
                    interaction_ids=[r.interaction_id for r in batch if r.interaction_id],
                    scopes=scopes,
                    wins=quotas.windows(now),
                ),
                asyncio.gather(*(self._duplicate(tx, r) for r in batch)),
            )
            book = QuotaBook(facts.blocks, facts.limits, dict(facts.used))
            seen = set(facts.seen)
            queued = dict(facts.queued)
            total = facts.queued_total
            asked: set[tuple[object, ...]] = set()
            jobs: list[NewJob] = []
            reserves: list[ReserveEntry] = []
            outcomes: list[list[NewJob] | UserError] = []
            for request, duplicate in zip(batch, duplicates, strict=True):
                a = request.actor
                owner = (a.platform, a.tenant, a.user_id)
                keys = _continuations(request)
                try:
                    if request.interaction_id in seen:
                        outcomes.append([])  # a replayed delivery: already accepted once
                        continue
                    if duplicate or keys & asked:
                        raise UserError("That is already on its way.")
                    mine, n = queued.get(owner, 0), len(request.specs)
                    cap = self._settings.max_queued_per_user
                    if mine + n > cap:
                        raise QueueFull(
                            f"You already have {mine} job{'s' if mine != 1 else ''} waiting; "
                            f"the limit is {cap}. Try again when some have finished."
                        )
                    if total + n > self._settings.max_queue:
                        raise QueueFull(
                            "The queue is full right now. Nothing was charged; try again soon."
                        )
                    ids = [new_job_id() for _ in request.specs]
                    units = [s.request.n * s.cost for s in request.specs]
                    reserves += quotas.plan(book, a, list(zip(ids, units, strict=True)), now)
                except UserError as refusal:
                    outcomes.append(refusal)
                    continue
                written = _new_jobs(request, ids)
                jobs += written
                queued[owner] = mine + n
                total += n
                asked |= keys
                if request.interaction_id:
                    seen.add(request.interaction_id)
                outcomes.append(written)
            if (jobs or reserves) and not await storage.admission.write(
                tx, jobs, book.charges(), reserves
            ):
                raise RuntimeError("a quota window changed under the write lock")
            if decided is not None and not decided.done():
                decided.set_result(None)
        return outcomes

    async def _duplicate(self, tx: Tx, request: _Request) -> bool:
        """A second identical Vary/Reroll click within the window (already in the database)."""
        a = request.actor
        found = await asyncio.gather(
            *(
                self._storage.jobs.duplicate_in_flight(
                    tx,
                    kind=spec.kind,
                    parent_job_id=spec.parent_job_id,
                    parent_index=spec.parent_index,
                    platform=a.platform,
                    tenant=a.tenant,
                    owner_id=a.user_id,
                    since=request.now - DOUBLE_CLICK_S,
                )
                for spec in request.specs
                if spec.kind in DOUBLE_CLICK_KINDS
            )
        )
        return any(found)


def _continuations(request: _Request) -> set[tuple[object, ...]]:
    """What makes two clicks in one batch the same wish (see :data:`DOUBLE_CLICK_KINDS`)."""
    a = request.actor
    return {
        (a.platform, a.tenant, a.user_id, s.kind, s.parent_job_id, s.parent_index)
        for s in request.specs
        if s.kind in DOUBLE_CLICK_KINDS
    }


def _new_jobs(request: _Request, ids: Sequence[str]) -> list[NewJob]:
    a = request.actor
    return [
        NewJob(
            id=job_id,
            platform=a.platform,
            tenant=a.tenant,
            channel_id=request.channel_id,
            thread_id=request.thread_id,
            owner_id=a.user_id,
            owner_name=a.display_name or a.user_id,
            kind=spec.kind,
            parent_job_id=spec.parent_job_id,
            parent_index=spec.parent_index,
            request=spec.job_request(a),
            provider=spec.provider,
            notice=spec.notice,
            interaction_id=request.interaction_id if i == 0 else None,
            # Apart by a microsecond, so one submission keeps its order everywhere.
            created_at=request.now + i * 1e-6,
        )
        for i, (job_id, spec) in enumerate(zip(ids, request.specs, strict=True))
    ]


__all__ = ["DOUBLE_CLICK_S", "Admissions", "JobSpec", "new_job_id"]
