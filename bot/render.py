"""Pure rendering: a job and what is known about it -> the :class:`~bot.types.Reply` a channel sees.

Nothing here touches the database, a provider or the clock: the caller gathers a
:class:`JobView` (see :meth:`bot.context.Context.view`) and these functions only format. The
buttons come from the verb table (:mod:`bot.actions`), so a new verb needs no edit here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bot.defaults import sources_text
from bot.jobs import Job, StoredJobImage, image_path
from bot.quotas import QuotaStatus
from bot.reproduce import repro_text
from bot.types import Button, ImageFile, Reply

OFFLINE_NOTICE = "Offline preview: a procedural picture, not a diffusion model."
_LEAD = {
    "imagine": "",
    "refine": "Refinement: ",
    "vary": "Variation: ",
    "vary-subtle": "Variation (subtle): ",
    "vary-strong": "Variation (strong): ",
    "reroll": "Reroll: ",
    "upscale": "Upscale: ",
    "zoom": "Zoom out: ",
    "pan": "Pan: ",
}
_VERDICT = {
    "done": "done, see below",
    "failed": "failed, see below",
    "filtered": "removed by the content filter",
}


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class JobView:
    """Everything a job's message shows, gathered by the caller."""

    job: Job
    data_dir: Path
    images: Sequence[StoredJobImage] = ()
    position: int | None = None
    buttons: tuple[Button, ...] = ()
    left: str = ""  # "alice has 46 of 50 images left today." or ""


def notice(job: Job) -> str:
    notes = [job.notice] if job.notice else []
    if job.provider == "offline":
        notes.append(OFFLINE_NOTICE)
    return " ".join(notes)


def image_file(
    data_dir: Path, sha: str, ext: str, width: int, height: int, kind: str, name: str
) -> ImageFile:
    return ImageFile(
        path=image_path(data_dir, sha, ext),
        filename=f"{name}.{ext}",
        width=width,
        height=height,
        kind="grid" if kind == "grid" else "image",
        sha256=sha,
    )


def job_reply(view: JobView) -> Reply:
    job = view.job
    prompt, who, lead = job.prompt, job.owner_name, _LEAD.get(job.kind, "")
    common: dict[str, Any] = {
        "job_id": job.id,
        "parent_job_id": job.parent_job_id,
        "state": job.state,
        "notice": notice(job) or None,
    }
    meta = {
        "owner": job.owner_id,
        "owner_name": who,
        "prompt": prompt,
        "provider": job.provider,
        "kind": job.kind,
    }
    if job.parent_index is not None:
        meta["parent_index"] = str(job.parent_index)
    if job.state == "queued":
        pos = view.position
        return Reply(
            f"{lead}{prompt} - queued{f' #{pos} in line' if pos else ''} (asked by {who})",
            position=pos,
            meta=meta,
            buttons=view.buttons,
            **common,
        )
    if job.state == "running":
        return Reply(
            f"{lead}{prompt} - generating {plural(job.n, 'image')} (asked by {who})",
            progress=0.0,
            meta=meta,
            **common,
        )
    if job.state == "done":
        grid = (
            image_file(
                view.data_dir, job.grid_sha, job.grid_ext or "jpg", 0, 0, "grid", f"{job.id}-grid"
            )
            if job.grid_sha
            else None
        )
        known = [i.seed for i in view.images if i.seed is not None]
        seeds = f"; seeds {', '.join(map(str, known))}" if len(known) == len(view.images) else ""
        text = f"{lead}{prompt} (asked by {who}{seeds})"
        if view.left:
            text += f"\n{view.left}"
        return Reply(
            text, images=(grid,) if grid else (), buttons=view.buttons, meta=meta, **common
        )
    text = f"{lead}{prompt} - {job.error or 'failed'}"
    if view.left:
        text += f"\n{view.left}"
    return Reply(text, meta=meta, **common)


def settled_status(job: Job, result: Reply) -> Reply:
    """The status message once the result is posted below it."""
    return replace(
        result, text=f"{job.prompt} - {_VERDICT.get(job.state, job.state)}", images=(), buttons=()
    )


_CHILDREN = (("refine", "refinement"), ("vary", "variation"), ("reroll", "reroll"))


def thread_line(root: Job, children: Sequence[Job]) -> Reply:
    """A thread's root, once its job is settled: one compact line per job in the channel
    ("alice: a red fox: 4 images, 2 refinements"); the thread below holds the rest."""
    if root.state == "done":
        parts = [f"{root.n} image" + ("" if root.n == 1 else "s")]
    else:
        parts = [_VERDICT.get(root.state, root.state).removesuffix(", see below")]
    for kind, noun in _CHILDREN:
        count = sum(1 for c in children if c.kind == kind)
        if count:
            parts.append(f"{count} {noun}" + ("" if count == 1 else "s"))
    return Reply(
        f"{root.owner_name}: {root.prompt}: " + ", ".join(parts),
        job_id=root.id,
        state=root.state,
    )


def deleted_reply(job: Job) -> Reply:
    return Reply("This result was deleted.", job_id=job.id, state="deleted")


def pick_reply(job: Job, img: StoredJobImage, data_dir: Path, buttons: tuple[Button, ...]) -> Reply:
    f = image_file(
        data_dir, img.sha256, img.ext, img.width, img.height, "image", f"{job.id}-{img.index}"
    )
    return Reply(
        f'Image {img.index} of "{job.prompt}" ('
        + (f"seed {img.seed}, " if img.seed is not None else "")
        + f"{img.width}x{img.height})",
        images=(f,),
        buttons=buttons,
        parent_job_id=job.id,
        notice=notice(job) or None,
        meta={"owner": job.owner_id, "index": str(img.index)},
    )


def info_text(job: Job, imgs: Sequence[StoredJobImage], provider_label: str) -> str:
    r = job.request
    lines = [
        f"Job {job.id} ({job.kind}, {job.state}) by {job.owner_name}",
        f"Prompt: {job.prompt}",
    ]
    if r.prompt != job.prompt:
        lines.append(f"Prompt sent: {r.prompt}")
    if len(r.weighted_prompts) > 1:
        lines.append("Weights: " + ", ".join(f"{w.text}::{w.weight:g}" for w in r.weighted_prompts))
    for name, value in (
        ("Negative", r.negative_prompt),
        ("Style", r.display.style),
        ("Steps", r.steps),
        ("CFG", r.cfg),
        ("Sampler", r.sampler),
        ("Strength", r.strength),
    ):
        if value not in (None, ""):
            lines.append(f"{name}: {value}")
    lines.append(f"Size: {r.width}x{r.height}, images: {job.n}, base seed: {job.seed}")
    if imgs and all(i.seed is not None for i in imgs):
        lines.append("Seeds: " + ", ".join(f"{i.index}={i.seed}" for i in imgs))
    lines.append(
        f"Provider: {provider_label}"
        + (f", model {job.model}" if job.model else "")
        + (f", on {job.server}" if job.server else "")
    )
    if job.parent_job_id:
        lines.append(
            f"Parent: job {job.parent_job_id}"
            + (f" image {job.parent_index}" if job.parent_index else "")
        )
    if job.notice:
        lines.append(f"Notes: {job.notice}")
    if r.remix:
        lines.append("Remix: on (Vary and Reroll open the prompt first)")
    if r.display.sources:
        lines.append("Where the values came from: " + sources_text(r.display.sources))
    lines.append(repro_text(job))
    return "\n".join(lines)


def quota_text(st: QuotaStatus, now: float) -> str:
    """The ``/imagine quota`` reply."""
    if st.blocked is not None:
        return "You are blocked from generating images here" + (
            f": {st.blocked}" if st.blocked else "."
        )
    if st.exempt:
        return "You are an admin: your images are not counted against a quota."
    parts = []
    if st.daily_limit:
        hours = max(0.0, (st.resets_at.timestamp() - now) / 3600)
        parts.append(
            f"Today: {st.daily_left} of {st.daily_limit} images left (resets at "
            f"{st.resets_at:%H:%M %Z}, in {hours:.0f} h)."
        )
    else:
        parts.append(f"Today: {st.daily_used} images, no daily limit.")
    if st.monthly_limit:
        parts.append(f"This month: {st.monthly_left} of {st.monthly_limit} left.")
    return " ".join(parts)


def left_text(owner_name: str, st: QuotaStatus) -> str:
    """The "N left" line under a result ("" when the payer has no limit)."""
    if st.exempt or st.left() is None:
        return ""
    return f"{owner_name} has {st.badge()}."


__all__ = [
    "OFFLINE_NOTICE",
    "JobView",
    "deleted_reply",
    "image_file",
    "info_text",
    "job_reply",
    "left_text",
    "notice",
    "pick_reply",
    "plural",
    "quota_text",
    "settled_status",
    "thread_line",
]
