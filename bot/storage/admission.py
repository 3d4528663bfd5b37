"""Admission's statements, the same on every store: what a batch of submissions needs to know
(read at once) and what it writes (a few multi-row statements for the whole batch).

Under a burst a submission's cost was its round trips on the one connection, about fourteen
each (the checks, the insert, four quota windows, the ledger), not the work in them; a batch
of any size now costs about six statements. See :class:`bot.admission.Admissions` for the
rules; this module only reads and writes.

The reads must stay true until the transaction ends, since admission decides from them: a
unit of work holds the store's write lock from its start on both stores (SQLite's ``BEGIN
IMMEDIATE``, PostgreSQL's transaction-level advisory lock every process takes), so no other
writer comes between. The quota writes still check themselves (grow only while within the
limit, a window without a row included): a read that went stale anyway is caught, never
overspent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bot.storage.protocols import Tx
from bot.storage.records import NewJob, ScopeLimits, Window

INSERT_JOB = (
    "INSERT INTO jobs (id, platform, tenant, channel_id, thread_id, owner_id, "
    "owner_name, kind, parent_job_id, parent_index, state, request_json, "
    "provider, model, seed, n, notice, interaction_id, created_at) VALUES "
    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_RESERVE = (
    "INSERT INTO ledger (job_id, kind, payer, units, windows, exempt, created_at) "
    "VALUES (?, 'reserve', ?, ?, ?, ?, ?)"
)
# One window grows by a batch's units only while it stays within the limit (0: none): a
# window without a row starts at the units only if they fit, one with a row (an admin's grant
# may have put it below zero) only if its total does. Admission has checked both; this is the
# check that holds even so. (CASTs: PostgreSQL must know the parameters' types in a SELECT.)
_CHARGE = (
    "INSERT INTO quota_usage (scope, win, used) "
    "SELECT CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS INTEGER) "
    "WHERE CAST(? AS INTEGER) = 0 OR CAST(? AS INTEGER) <= CAST(? AS INTEGER) "
    "OR EXISTS (SELECT 1 FROM quota_usage WHERE scope = ? AND win = ?) "
    "ON CONFLICT (scope, win) DO UPDATE SET used = quota_usage.used + excluded.used "
    "WHERE CAST(? AS INTEGER) = 0 OR quota_usage.used + excluded.used <= CAST(? AS INTEGER)"
)


def _charge_row(c: Charge) -> tuple[Any, ...]:
    """The parameters of :data:`_CHARGE`, in the order they appear."""
    return (c.scope, c.win, c.units, c.limit, c.units, c.limit, c.scope, c.win, c.limit, c.limit)


def job_row(job: NewJob) -> tuple[Any, ...]:
    """The parameters of :data:`INSERT_JOB` for ``job``."""
    r = job.request
    return (
        job.id,
        job.platform,
        job.tenant,
        job.channel_id,
        job.thread_id,
        job.owner_id,
        job.owner_name,
        job.kind,
        job.parent_job_id,
        job.parent_index,
        r.to_json(),
        job.provider,
        r.model,
        r.seed,
        r.n,
        job.notice,
        job.interaction_id,
        job.created_at,
    )


class TxStatements(Protocol):
    """How a store runs statements inside one of its transactions (``tx``)."""

    async def rows(self, tx: Tx, sql: str, params: Sequence[Any]) -> Sequence[Any]: ...

    async def insert_many(self, tx: Tx, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    async def count_many(self, tx: Tx, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run ``sql`` once per row; the rows it changed, in all."""
        ...


@dataclass(frozen=True)
class AdmissionFacts:
    seen: frozenset[str]  # interaction ids a job was accepted for already
    queued: dict[tuple[str, str, str], int]  # (platform, tenant, owner) -> queued jobs
    blocks: dict[str, str]  # scope -> reason ('' for none given)
    limits: dict[str, ScopeLimits]
    used: dict[Window, int]  # the windows asked for that have a row

    @property
    def queued_total(self) -> int:
        return sum(self.queued.values())


@dataclass(frozen=True)
class Charge:
    scope: str
    win: str
    units: int
    limit: int  # 0: none


@dataclass(frozen=True)
class ReserveEntry:
    job_id: str
    payer: str
    units: int
    windows_json: str
    exempt: bool
    at: float


def _marks(n: int) -> str:
    # `IN ()` is SQLite's only; `IN (NULL)` matches nothing on both.
    return ", ".join("?" * n) or "NULL"


class AdmissionStatements:
    def __init__(self, db: TxStatements) -> None:
        self._db = db

    async def facts(
        self,
        tx: Tx,
        *,
        interaction_ids: Sequence[str],
        scopes: Sequence[str],
        wins: Sequence[str],
    ) -> AdmissionFacts:
        """Everything a batch is decided on, asked at once (one round trip's wait)."""
        rows = self._db.rows
        seen, queued, blocks, limits, used = await asyncio.gather(
            rows(
                tx,
                f"SELECT interaction_id FROM jobs WHERE interaction_id IN "
                f"({_marks(len(interaction_ids))})",
                interaction_ids,
            ),
            rows(
                tx,
                "SELECT platform, tenant, owner_id, COUNT(*) AS n FROM jobs "
                "WHERE state = 'queued' GROUP BY platform, tenant, owner_id",
                (),
            ),
            rows(
                tx,
                f"SELECT scope, reason FROM blocks WHERE scope IN ({_marks(len(scopes))})",
                scopes,
            ),
            rows(
                tx,
                f"SELECT scope, daily, monthly FROM quota_limits WHERE scope IN "
                f"({_marks(len(scopes))})",
                scopes,
            ),
            rows(
                tx,
                f"SELECT scope, win, used FROM quota_usage WHERE scope IN "
                f"({_marks(len(scopes))}) AND win IN ({_marks(len(wins))})",
                (*scopes, *wins),
            ),
        )
        return AdmissionFacts(
            seen=frozenset(str(r["interaction_id"]) for r in seen),
            queued={
                (str(r["platform"]), str(r["tenant"]), str(r["owner_id"])): int(r["n"])
                for r in queued
            },
            blocks={str(r["scope"]): str(r["reason"]) for r in blocks},
            limits={
                str(r["scope"]): ScopeLimits(
                    None if r["daily"] is None else int(r["daily"]),
                    None if r["monthly"] is None else int(r["monthly"]),
                )
                for r in limits
            },
            used={(str(r["scope"]), str(r["win"])): int(r["used"]) for r in used},
        )

    async def write(
        self,
        tx: Tx,
        jobs: Sequence[NewJob],
        charges: Sequence[Charge],
        reserves: Sequence[ReserveEntry],
    ) -> bool:
        """The batch's jobs, quota windows and ledger entries. False when a window had no room
        after all: the caller must roll back.

        One after the other, not sent together: after an error SQLite may roll the whole
        transaction back by itself (SQLITE_FULL, SQLITE_IOERR), and a statement already sent
        behind the failed one would then run, and commit, on its own."""
        db = self._db
        if jobs:
            await db.insert_many(tx, INSERT_JOB, [job_row(j) for j in jobs])
        charged = (
            await db.count_many(
                tx,
                _CHARGE,
                [_charge_row(c) for c in charges],
            )
            if charges
            else 0
        )
        if charged != len(charges):
            return False
        if reserves:
            await db.insert_many(
                tx,
                INSERT_RESERVE,
                [
                    (e.job_id, e.payer, e.units, e.windows_json, int(e.exempt), e.at)
                    for e in reserves
                ],
            )
        return True


__all__ = [
    "INSERT_JOB",
    "INSERT_RESERVE",
    "AdmissionFacts",
    "AdmissionStatements",
    "Charge",
    "ReserveEntry",
    "TxStatements",
    "job_row",
]
