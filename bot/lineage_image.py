"""A job's family tree as one picture, drawn with Pillow in a worker thread.

``/imagine tree JOB`` and the Lineage button post it: every job of the family as a card (a
thumbnail of its images, which verb made it, who made it, its id), arrows from parent to
child labelled with the image the child started from, the job asked about outlined. A
deleted job that still holds the tree together is a grey card without a picture.

The layout is a tidy tree: leaves take consecutive columns, a parent sits over the middle of
its children, one row per generation. :func:`layout` is pure and tested on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont, ImageOps

from bot import images, render
from bot.core import JobDetails, Lineage
from bot.errors import JobNotFound
from bot.reproduce import load_visible
from bot.types import ImageFile, Invocation, Reply, Responder

if TYPE_CHECKING:
    from bot.context import Context
    from bot.delivery import Delivery

THUMB = 160
CARD_W, CARD_H = THUMB + 24, THUMB + 64
GAP_X, GAP_Y = 28, 56
MARGIN = 24
MAX_SIDE = 8192  # a very wide family is drawn smaller, never beyond this
_BG, _CARD, _FOCUS, _LINE, _TEXT, _MUTED = (
    (250, 250, 250),
    (255, 255, 255),
    (37, 99, 235),
    (120, 120, 120),
    (20, 20, 20),
    (110, 110, 110),
)
_REFUSAL = "Only {owner} can see this family here: this channel keeps results to their owner."


_PAST = {"imagine": "imagined", "vary": "varied", "reroll": "rerolled", "refine": "refined"}


@dataclass(frozen=True)
class Placed:
    job_id: str
    column: float  # in card widths; a parent sits between its children
    row: int


def layout(nodes: Sequence[JobDetails]) -> dict[str, Placed]:
    """Columns and rows for ``nodes`` (oldest first; a node whose parent is not among them
    is a root of its own)."""
    ids = {n.job_id for n in nodes}
    children: dict[str | None, list[str]] = {}
    for n in nodes:
        parent = n.parent_job_id if n.parent_job_id in ids else None
        children.setdefault(parent, []).append(n.job_id)
    placed: dict[str, Placed] = {}
    next_leaf = 0.0

    def place(job_id: str, row: int, seen: frozenset[str]) -> float:
        nonlocal next_leaf
        kids = [k for k in children.get(job_id, []) if k not in seen]
        if not kids:
            column = next_leaf
            next_leaf += 1
        else:
            cols = [place(k, row + 1, seen | {job_id}) for k in kids]
            column = (cols[0] + cols[-1]) / 2
        placed[job_id] = Placed(job_id, column, row)
        return column

    for root in children.get(None, []):
        place(root, 0, frozenset())
    return placed


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _thumb(paths: Sequence[Path], side: int) -> Image.Image | None:
    """The first picture that opens, fitted to a square. The job's preview grid comes first:
    a JPEG, which Pillow decodes at a fraction of its size (``draft``), so a big family does
    not decode every full-size PNG of every job."""
    for path in paths:
        try:
            with Image.open(path) as im:
                im.draft("RGB", (side, side))
                im.thumbnail((side * 2, side * 2), reducing_gap=2.0)
                return ImageOps.fit(im.convert("RGB"), (side, side))
        except (OSError, ValueError):
            continue
    return None


def _label(node: JobDetails) -> tuple[str, str]:
    verb = _PAST.get(node.kind, node.kind)
    who = node.owner_name or node.owner_id
    if node.outcome == "deleted":
        return "deleted", node.job_id
    return f"{verb} by {who}"[:28], f"{node.job_id} · {node.outcome}"


def draw_sync(lineage: Lineage, previews: Mapping[str, Path] | None = None) -> bytes:
    """The tree as PNG bytes (blocking: run it in a thread). ``previews``: each job's grid
    preview, shown instead of its first image where there is one."""
    previews = previews or {}
    placed = layout(lineage.nodes)
    by_id = {n.job_id: n for n in lineage.nodes}
    cols = max((p.column for p in placed.values()), default=0) + 1
    rows = max((p.row for p in placed.values()), default=0) + 1
    width = int(2 * MARGIN + cols * CARD_W + (cols - 1) * GAP_X)
    height = int(2 * MARGIN + rows * CARD_H + (rows - 1) * GAP_Y)
    canvas = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(canvas)
    small, tiny = _font(13), _font(11)

    def origin(p: Placed) -> tuple[int, int]:
        return (
            int(MARGIN + p.column * (CARD_W + GAP_X)),
            int(MARGIN + p.row * (CARD_H + GAP_Y)),
        )

    for p in placed.values():  # arrows first, so cards cover their ends
        node = by_id[p.job_id]
        parent = placed.get(node.parent_job_id or "")
        if parent is None:
            continue
        (px, py), (cx, cy) = origin(parent), origin(p)
        start = (px + CARD_W // 2, py + CARD_H)
        end = (cx + CARD_W // 2, cy - 2)
        draw.line([start, end], fill=_LINE, width=2)
        draw.polygon([end, (end[0] - 6, end[1] - 10), (end[0] + 6, end[1] - 10)], fill=_LINE)
        if node.parent_index:
            mid = ((start[0] + end[0]) // 2 + 4, (start[1] + end[1]) // 2 - 8)
            draw.text(mid, f"image {node.parent_index}", fill=_MUTED, font=tiny)
    for p in placed.values():
        node = by_id[p.job_id]
        x, y = origin(p)
        focus = node.job_id == lineage.focus_id
        draw.rounded_rectangle(
            [x, y, x + CARD_W, y + CARD_H],
            radius=8,
            fill=_CARD,
            outline=_FOCUS if focus else _LINE,
            width=4 if focus else 1,
        )
        grid = previews.get(node.job_id)
        thumb = _thumb([*([grid] if grid else []), *(f.path for f in node.images[:1])], THUMB)
        if thumb is not None:
            canvas.paste(thumb, (x + 12, y + 12))
        else:
            draw.rectangle([x + 12, y + 12, x + 12 + THUMB, y + 12 + THUMB], fill=(225, 225, 225))
        top, bottom = _label(node)
        draw.text((x + 12, y + THUMB + 20), top, fill=_TEXT, font=small)
        draw.text((x + 12, y + THUMB + 40), bottom, fill=_MUTED, font=tiny)
    if max(width, height) > MAX_SIDE:
        canvas.thumbnail((MAX_SIDE, MAX_SIDE))
    return images.encode_png_sync(canvas)


def save_png_sync(data_dir: Path, png: bytes) -> tuple[str, Path, int, int]:
    """Store a derived picture content-addressed, like every image: (sha, path, w, h)."""
    sha, path = images._write_content_addressed(data_dir, png, "png")
    with Image.open(path) as im:
        return sha, path, im.width, im.height


def file_for(data_dir: Path, stored: tuple[str, Path, int, int], name: str) -> ImageFile:
    sha, _, w, h = stored
    return render.image_file(data_dir, sha, "png", w, h, "image", name)


async def draw_tree(
    data_dir: Path, lineage: Lineage, previews: Mapping[str, Path] | None = None
) -> ImageFile:
    def work() -> tuple[str, Path, int, int]:
        return save_png_sync(data_dir, draw_sync(lineage, previews))

    stored = await asyncio.to_thread(work)
    return file_for(data_dir, stored, f"lineage-{lineage.focus_id}")


def summary(lineage: Lineage) -> str:
    counts: dict[str, int] = {}
    for n in lineage.nodes:
        counts[n.kind] = counts.get(n.kind, 0) + 1
    kinds = ", ".join(f"{k} ×{v}" for k, v in counts.items())
    more = " (more below; the picture shows the first ones)" if lineage.truncated else ""
    jobs = render.plural(len(lineage.nodes), "job")
    return f"Family of job {lineage.focus_id}: {jobs} ({kinds}){more}."


async def post_tree(
    ctx: Context, delivery: Delivery, inv: Invocation, responder: Responder, job_id: str
) -> None:
    """Post the family tree of ``job_id`` in the channel (Delete of the job takes it down)."""
    from bot.gallery import Gallery
    from bot.jobs import image_path
    from bot.storage.gallery import gallery_of

    job = await load_visible(ctx, inv, job_id, _REFUSAL)
    lineage = await Gallery(ctx).lineage(job.platform, job.tenant, job.id)
    if lineage is None:
        raise JobNotFound("That job's family is not available.")
    shown = [n.job_id for n in lineage.nodes if n.images]
    data_dir = ctx.settings.data_dir
    previews = {
        j.id: image_path(data_dir, j.grid_sha, j.grid_ext)
        for j in await gallery_of(ctx.store).jobs(shown)
        if j.grid_sha and j.grid_ext
    }
    picture = await draw_tree(data_dir, lineage, previews)
    ref = await responder.send(Reply(summary(lineage), images=(picture,), parent_job_id=job.id))
    await delivery.record_post(job, ref, "pick")


__all__ = ["draw_sync", "draw_tree", "file_for", "layout", "post_tree", "save_png_sync", "summary"]
