"""The PostgreSQL twin of :mod:`bot.storage.sqlite.gallery` (see :mod:`bot.storage.gallery`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bot.storage.gallery import GalleryCursor, PickRecord
from bot.storage.postgres.database import Database
from bot.storage.postgres.repositories import _job, _marks
from bot.storage.records import Job, StoredJobImage

# Deep enough for any real iteration; a bound so that a corrupted cycle cannot loop forever.
MAX_DEPTH = 200
_IMAGE_COLUMNS = (
    "i.idx AS i_idx, i.sha256 AS i_sha256, i.ext AS i_ext, i.seed AS i_seed, "
    "i.width AS i_width, i.height AS i_height"
)


def _like(text: str) -> str:
    """``text`` as a LIKE pattern that matches it literally, anywhere."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class PgGallery:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record_pick(
        self, job_id: str, index: int, by_id: str, by_name: str, at: float
    ) -> None:
        await self._db.execute(
            "INSERT INTO picks (job_id, idx, picked_by, picked_by_name, created_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (job_id, idx) DO UPDATE SET "
            "picked_by = excluded.picked_by, picked_by_name = excluded.picked_by_name",
            (job_id, index, by_id, by_name, at),
        )

    async def picks(self, job_ids: Sequence[str]) -> list[PickRecord]:
        if not job_ids:
            return []
        rows = await self._db.fetchall(
            f"SELECT job_id, idx, picked_by, picked_by_name, created_at FROM picks "
            f"WHERE job_id IN ({_marks(len(job_ids))}) ORDER BY created_at, job_id, idx",
            job_ids,
        )
        return [
            PickRecord(
                str(r["job_id"]),
                int(r["idx"]),
                str(r["picked_by"]),
                str(r["picked_by_name"]),
                float(r["created_at"]),
            )
            for r in rows
        ]

    async def jobs(self, job_ids: Sequence[str]) -> list[Job]:
        if not job_ids:
            return []
        rows = await self._db.fetchall(
            f"SELECT * FROM jobs WHERE id IN ({_marks(len(job_ids))})", job_ids
        )
        return [_job(r) for r in rows]

    async def images_of(self, job_ids: Sequence[str]) -> dict[str, list[StoredJobImage]]:
        if not job_ids:
            return {}
        rows = await self._db.fetchall(
            "SELECT job_id, idx, sha256, ext, seed, width, height FROM images "
            f"WHERE job_id IN ({_marks(len(job_ids))}) ORDER BY job_id, idx",
            job_ids,
        )
        out: dict[str, list[StoredJobImage]] = {}
        for r in rows:
            out.setdefault(str(r["job_id"]), []).append(
                StoredJobImage(
                    int(r["idx"]),
                    r["sha256"],
                    r["ext"],
                    r["seed"],
                    int(r["width"]),
                    int(r["height"]),
                )
            )
        return out

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
        where = ["j.platform = ?", "j.tenant = ?", "j.state = 'done'", "j.deleted = 0"]
        params: list[Any] = [platform, tenant]
        if channel_id is not None:
            where.append("j.channel_id = ?")
            params.append(channel_id)
        if owner_id is not None:
            where.append("j.owner_id = ?")
            params.append(owner_id)
        if contains:
            # The request is stored as JSON: look for the text as JSON writes it.
            where.append("j.request_json ILIKE ? ESCAPE '\\'")  # SQLite's LIKE ignores ASCII case
            params.append(_like(json.dumps(contains, ensure_ascii=False)[1:-1]))
        if after is not None:
            # Newest job first, then the job's images in order: the rows after the cursor.
            where.append(
                "(j.created_at < ? OR (j.created_at = ? AND (j.id < ? OR "
                "(j.id = ? AND i.idx > ?))))"
            )
            params += [after.created_at, after.created_at, after.job_id, after.job_id, after.index]
        rows = await self._db.fetchall(
            f"SELECT j.*, {_IMAGE_COLUMNS} FROM jobs j JOIN images i ON i.job_id = j.id "
            f"WHERE {' AND '.join(where)} ORDER BY j.created_at DESC, j.id DESC, i.idx "
            "LIMIT ?",
            (*params, limit),
        )
        return [
            (
                _job(r),
                StoredJobImage(
                    int(r["i_idx"]),
                    r["i_sha256"],
                    r["i_ext"],
                    r["i_seed"],
                    int(r["i_width"]),
                    int(r["i_height"]),
                ),
            )
            for r in rows
        ]

    async def family(self, job_id: str, max_nodes: int) -> tuple[str | None, list[Job]]:
        up = await self._db.fetchall(
            "WITH RECURSIVE up(id, parent_job_id, depth) AS ("
            " SELECT id, parent_job_id, 0 FROM jobs WHERE id = ?"
            " UNION ALL"
            " SELECT j.id, j.parent_job_id, up.depth + 1 FROM jobs j"
            " JOIN up ON j.id = up.parent_job_id WHERE up.depth < ?"
            ") SELECT id FROM up ORDER BY depth DESC LIMIT 1",
            (job_id, MAX_DEPTH),
        )
        if not up:
            return None, []
        root = str(up[0]["id"])
        rows = await self._db.fetchall(
            "WITH RECURSIVE down(id, depth) AS ("
            " SELECT CAST(? AS TEXT), 0"  # PostgreSQL types a bare parameter as unknown
            " UNION ALL"
            " SELECT j.id, down.depth + 1 FROM jobs j JOIN down ON j.parent_job_id = down.id"
            " WHERE down.depth < ?"
            ") SELECT jobs.* FROM jobs JOIN down ON jobs.id = down.id "
            "ORDER BY down.depth, jobs.created_at LIMIT ?",
            (root, MAX_DEPTH, max_nodes),
        )
        jobs = sorted((_job(r) for r in rows), key=lambda j: (j.created_at, j.id))
        return root, jobs
