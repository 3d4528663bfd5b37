"""What the gallery and the lineage view need from a database (SQL in
:mod:`bot.storage.sqlite.gallery`).

Kept beside, not inside, :class:`~bot.storage.protocols.Storage`: a bundle that has a
``gallery`` attribute provides it; the SQLite store gets one built on its connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.storage.records import Job, StoredJobImage


@dataclass(frozen=True)
class PickRecord:
    job_id: str
    index: int
    by_id: str
    by_name: str
    at: float


@dataclass(frozen=True)
class GalleryCursor:
    """Where a page of images ended: newest jobs first, a job's images in index order."""

    created_at: float
    job_id: str
    index: int


class GalleryRepository(Protocol):
    async def record_pick(
        self, job_id: str, index: int, by_id: str, by_name: str, at: float
    ) -> None: ...

    async def picks(self, job_ids: Sequence[str]) -> list[PickRecord]:
        """The picks of these jobs, oldest first."""
        ...

    async def jobs(self, job_ids: Sequence[str]) -> list[Job]:
        """These jobs, deleted ones included, in no particular order."""
        ...

    async def images_of(self, job_ids: Sequence[str]) -> dict[str, list[StoredJobImage]]:
        """Each job's images in index order (jobs without images are left out)."""
        ...

    async def image_page(
        self,
        platform: str,
        tenant: str,
        *,
        channel_id: str | None,
        owner_id: str | None,
        contains: str,
        after: GalleryCursor | None,
        limit: int,
    ) -> list[tuple[Job, StoredJobImage]]:
        """Images of finished, not deleted jobs, newest job first, after ``after``; when
        ``contains`` is given, only jobs whose stored request mentions it (a prefilter: the
        caller checks the prompt itself)."""
        ...

    async def family(self, job_id: str, max_nodes: int) -> tuple[str | None, list[Job]]:
        """(the root above ``job_id``, the root and up to ``max_nodes`` - 1 of its
        descendants, oldest first); (None, []) for an unknown job."""
        ...


def gallery_of(storage: object) -> GalleryRepository:
    """The gallery repository of a storage bundle."""
    own: GalleryRepository | None = getattr(storage, "gallery", None)
    if own is not None:
        return own
    from bot.storage.sqlite.database import Database
    from bot.storage.sqlite.gallery import SqliteGallery

    if isinstance(storage, Database):
        return SqliteGallery(storage)
    raise TypeError(f"{type(storage).__name__} has no gallery repository")


__all__ = ["GalleryCursor", "GalleryRepository", "PickRecord", "gallery_of"]
