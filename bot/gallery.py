"""The gallery, the lineage view and persisted picks: a channel's iteration at a glance.

- :meth:`Gallery.details` is what a card shows beyond its reply: each image on its own (so a
  surface can put Pick, Refine and Vary on the image itself), how the job ended (a cancelled job
  is not a failure), and the picks made from it, so a Pick is still there after a reload.
- :meth:`Gallery.page` lists finished images, newest first, of a channel or of one person,
  optionally those whose prompt contains some words, one page at a time.
- :meth:`Gallery.lineage` is a job's family: its root and every refinement, variation and
  reroll below it, who made each.

Everything is read from the database; nothing a surface sends is trusted beyond the tenant it
was verified for. The SQL is in :mod:`bot.storage.sqlite.gallery`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from bot import render
from bot.core import GalleryItem, GalleryPage, JobDetails, Lineage
from bot.storage.gallery import GalleryCursor, GalleryRepository, PickRecord, gallery_of
from bot.storage.records import Job, StoredJobImage
from bot.types import ImageFile, Reply

if TYPE_CHECKING:
    from bot.context import Context

CANCELLED_PREFIX = "Cancelled by "  # what bot.actions' Cancel writes as the job's error
MAX_PAGE = 100
MAX_LINEAGE = 300
MAX_QUERY_CHARS = 200
_SCAN_BATCH = 200
_MAX_SCANS = 25  # a search reads at most 5000 images per request


def outcome(job: Job) -> str:
    if job.deleted:
        return "deleted"
    if job.state == "failed" and (job.error or "").startswith(CANCELLED_PREFIX):
        return "cancelled"
    return job.state


def encode_cursor(c: GalleryCursor) -> str:
    return f"{c.created_at!r}~{c.job_id}~{c.index}"


def decode_cursor(text: str | None) -> GalleryCursor | None:
    """The cursor in ``text``; None for none or a malformed one (which starts from the top)."""
    if not text:
        return None
    parts = text.split("~")
    if len(parts) != 3:
        return None
    try:
        return GalleryCursor(float(parts[0]), parts[1][:40], int(parts[2]))
    except ValueError:
        return None


async def record_pick(
    ctx: Context, job: Job, img: StoredJobImage, by_id: str, by_name: str
) -> None:
    """Remember a Pick, so the channel's history shows it again (called by the Pick verb)."""
    await gallery_of(ctx.store).record_pick(job.id, img.index, by_id, by_name, ctx.clock())


class Gallery:
    def __init__(self, ctx: Context, repo: GalleryRepository | None = None) -> None:
        self._ctx = ctx
        self._repo = repo or gallery_of(ctx.store)

    # ---------------------------------------------------------------------------- values
    def _file(self, job: Job, img: StoredJobImage) -> ImageFile:
        return render.image_file(
            self._ctx.settings.data_dir,
            img.sha256,
            img.ext,
            img.width,
            img.height,
            "image",
            f"{job.id}-{img.index}",
        )

    def _pick_reply(self, job: Job, img: StoredJobImage, pick: PickRecord) -> Reply:
        buttons = self._ctx.verbs.pick_buttons(job, img, self._ctx.capabilities)
        reply = render.pick_reply(job, img, self._ctx.settings.data_dir, buttons)
        return replace(
            reply, meta={**reply.meta, "picked_by": pick.by_id, "picked_by_name": pick.by_name}
        )

    def _details(
        self, job: Job, imgs: Sequence[StoredJobImage], picks: Sequence[PickRecord] = ()
    ) -> JobDetails:
        ended = outcome(job)
        hidden = ended == "deleted"  # a deleted job keeps its place in a tree, nothing else
        by_index = {i.index: i for i in imgs}
        return JobDetails(
            job_id=job.id,
            outcome=ended,
            prompt="" if hidden else job.prompt,
            owner_id=job.owner_id,
            owner_name=job.owner_name,
            kind=job.kind,
            channel_id=job.channel_id,
            parent_job_id=job.parent_job_id,
            parent_index=job.parent_index,
            created_at=job.created_at,
            images=() if hidden or job.state != "done" else tuple(self._file(job, i) for i in imgs),
            picks=()
            if hidden or job.state != "done"
            else tuple(
                self._pick_reply(job, by_index[p.index], p) for p in picks if p.index in by_index
            ),
        )

    # ---------------------------------------------------------------------------- reads
    async def details(
        self, platform: str, tenant: str, job_ids: Sequence[str]
    ) -> dict[str, JobDetails]:
        wanted = list(dict.fromkeys(j for j in job_ids if j))[:MAX_LINEAGE]
        jobs = [
            j for j in await self._repo.jobs(wanted) if (j.platform, j.tenant) == (platform, tenant)
        ]
        ids = [j.id for j in jobs]
        imgs = await self._repo.images_of(ids)
        picks: dict[str, list[PickRecord]] = {}
        for p in await self._repo.picks(ids):
            picks.setdefault(p.job_id, []).append(p)
        return {j.id: self._details(j, imgs.get(j.id, ()), picks.get(j.id, ())) for j in jobs}

    async def page(
        self,
        platform: str,
        tenant: str,
        *,
        channel_id: str | None = None,
        owner_id: str | None = None,
        query: str = "",
        before: str | None = None,
        limit: int = 30,
    ) -> GalleryPage:
        limit = max(1, min(limit, MAX_PAGE))
        words = " ".join(query.split())[:MAX_QUERY_CHARS]
        needle = words.casefold()
        cursor = decode_cursor(before)
        # The database narrows by the longest word (a prefilter); the prompt itself decides.
        contains = max(words.split(), key=len) if words else ""
        batch = _SCAN_BATCH if needle else limit + 1
        found: list[GalleryItem] = []
        for _ in range(_MAX_SCANS):
            rows = await self._repo.image_page(
                platform,
                tenant,
                channel_id=channel_id,
                owner_id=owner_id,
                contains=contains,
                after=cursor,
                limit=batch,
            )
            for job, img in rows:
                cursor = GalleryCursor(job.created_at, job.id, img.index)
                if needle and needle not in job.prompt.casefold():
                    continue
                found.append(
                    GalleryItem(
                        job_id=job.id,
                        index=img.index,
                        image=self._file(job, img),
                        prompt=job.prompt,
                        owner_id=job.owner_id,
                        owner_name=job.owner_name,
                        channel_id=job.channel_id,
                        kind=job.kind,
                        created_at=job.created_at,
                    )
                )
                if len(found) > limit:
                    break
            if len(found) > limit or len(rows) < batch:
                break
        else:
            # Scanned enough for one request: hand back what was found and where to go on.
            return GalleryPage(items=tuple(found), next=encode_cursor(cursor) if cursor else None)
        items = found[:limit]
        more = len(found) > limit
        tail = items[-1] if items else None
        return GalleryPage(
            items=tuple(items),
            next=encode_cursor(GalleryCursor(tail.created_at, tail.job_id, tail.index))
            if more and tail
            else None,
        )

    async def lineage(self, platform: str, tenant: str, job_id: str) -> Lineage | None:
        root, jobs = await self._repo.family(job_id, MAX_LINEAGE + 1)
        if root is None or not any(
            j.id == job_id and (j.platform, j.tenant) == (platform, tenant) for j in jobs
        ):
            return None
        truncated = len(jobs) > MAX_LINEAGE
        jobs = [j for j in jobs if (j.platform, j.tenant) == (platform, tenant)][:MAX_LINEAGE]
        parents = {j.parent_job_id for j in jobs}
        # A deleted leaf is simply gone; a deleted job with children holds the tree together.
        kept = [j for j in jobs if not j.deleted or j.id in parents or j.id == job_id]
        imgs = await self._repo.images_of([j.id for j in kept if not j.deleted])
        return Lineage(
            root_id=root,
            focus_id=job_id,
            truncated=truncated,
            nodes=tuple(self._details(j, imgs.get(j.id, ())) for j in kept),
        )


__all__ = [
    "CANCELLED_PREFIX",
    "Gallery",
    "decode_cursor",
    "encode_cursor",
    "outcome",
    "record_pick",
]
