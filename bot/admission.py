"""Admission: a submission's jobs and their quota reservation, written in one transaction.

All or nothing: a replayed platform delivery is accepted once, a double click on Vary or
Reroll is one wish, and a quota or queue refusal writes nothing.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from bot.config import JobSettings
from bot.errors import QueueFull, UserError
from bot.job_request import Display, JobRequest
from bot.providers.base import GenerationRequest
from bot.quotas import Quotas
from bot.storage.protocols import Storage
from bot.storage.records import NewJob
from bot.types import Actor

# A second identical Vary/Reroll click by the same person within this window is the same
# wish (a double click, a laggy client), not a second job to pay for.
DOUBLE_CLICK_S = 5.0
DOUBLE_CLICK_KINDS = frozenset(
    {"vary", "vary-subtle", "vary-strong", "reroll", "upscale", "zoom", "pan"}
)
_ID_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"


def new_job_id() -> str:
    """Random, short, unguessable (not sequential: ids travel in button payloads)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


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


async def write_jobs(
    storage: Storage,
    quotas: Quotas,
    settings: JobSettings,
    now: float,
    actor: Actor,
    channel_id: str,
    thread_id: str | None,
    specs: Sequence[JobSpec],
    interaction_id: str | None,
) -> list[str]:
    """Write the jobs and reserve their quota in one ``BEGIN IMMEDIATE`` transaction; their
    ids, or none for a replayed delivery."""
    ids = [new_job_id() for _ in specs]
    jobs = storage.jobs
    async with storage.transaction() as tx:
        # The checks are independent reads: asked together, they cost the connection one
        # round trip instead of one each (under load, each waits for a busy event loop).
        seen, duplicates, (queued, total) = await asyncio.gather(
            jobs.interaction_seen(tx, interaction_id) if interaction_id is not None else _false(),
            asyncio.gather(
                *(
                    jobs.duplicate_in_flight(
                        tx,
                        kind=spec.kind,
                        parent_job_id=spec.parent_job_id,
                        parent_index=spec.parent_index,
                        platform=actor.platform,
                        tenant=actor.tenant,
                        owner_id=actor.user_id,
                        since=now - DOUBLE_CLICK_S,
                    )
                    for spec in specs
                    if spec.kind in DOUBLE_CLICK_KINDS
                )
            ),
            jobs.queued_counts(tx, actor.platform, actor.tenant, actor.user_id),
        )
        if seen:
            return []  # a replayed delivery: already accepted once
        if any(duplicates):
            raise UserError("That is already on its way.")
        cap = settings.max_queued_per_user
        if queued + len(specs) > cap:
            raise QueueFull(
                f"You already have {queued} job{'s' if queued != 1 else ''} waiting; the "
                f"limit is {cap}. Try again when some have finished."
            )
        if total + len(specs) > settings.max_queue:
            raise QueueFull("The queue is full right now. Nothing was charged; try again soon.")
        for i, (job_id, spec) in enumerate(zip(ids, specs, strict=True)):
            await jobs.insert(
                tx,
                NewJob(
                    id=job_id,
                    platform=actor.platform,
                    tenant=actor.tenant,
                    channel_id=channel_id,
                    thread_id=thread_id,
                    owner_id=actor.user_id,
                    owner_name=actor.display_name or actor.user_id,
                    kind=spec.kind,
                    parent_job_id=spec.parent_job_id,
                    parent_index=spec.parent_index,
                    request=spec.job_request(actor),
                    provider=spec.provider,
                    notice=spec.notice,
                    interaction_id=interaction_id if i == 0 else None,
                    # Apart by a microsecond, so one submission keeps its order everywhere.
                    created_at=now + i * 1e-6,
                ),
            )
        await quotas.reserve(
            tx, actor, [(j, s.request.n * s.cost) for j, s in zip(ids, specs, strict=True)]
        )
    return ids


async def _false() -> bool:
    return False


__all__ = ["DOUBLE_CLICK_S", "JobSpec", "new_job_id", "write_jobs"]
