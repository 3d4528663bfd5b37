"""Reproducible jobs: the ``/imagine`` line that makes a job again, and ``--from JOB``.

:func:`command_line` is pure: a stored job -> a full ``/imagine ...`` command with its seed,
size and every setting, which :func:`bot.grammar.parse` reads back to the same parameters
(a test holds it to that). :func:`from_job` builds the spec of ``--from``: the same request,
the same seed (so the same per-image seeds), the same provider and the same input image.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING

from bot import grammar, specs
from bot.errors import JobNotFound
from bot.jobs import Job, JobSpec

if TYPE_CHECKING:
    from bot.context import Context
    from bot.types import Invocation

_REFUSAL = "Only {owner} can repeat this job here: this channel keeps results to their owner."


def _quoted(text: str) -> str:
    return f'"{text}"' if '"' not in text else f"'{text}'"


def _prompt_text(job: Job) -> str:
    r = job.request
    parts = r.display.weighted or r.weighted_prompts
    if len(parts) > 1 or any(p.weight != 1.0 for p in parts):
        text = " ".join(f"{p.text}::{p.weight:g}" for p in parts)
    else:
        text = r.shown_prompt
    # Braces would permute again: write them literally.
    return text.replace("{", "\\{").replace("}", "\\}")


def _flag_like(text: str) -> bool:
    return any(grammar.is_flag(w) for w in text.split())


def command_line(job: Job) -> str:
    """A full ``/imagine`` command that repeats ``job`` (its seed included)."""
    r = job.request
    flags = [f"--n {job.n}", f"--size {r.width}x{r.height}", f"--seed {job.seed}"]
    if r.display.style:
        flags.append(f"--style {r.display.style}")
    if r.display.avatar:
        flags.append("--avatar")
    for name, value in (("steps", r.steps), ("cfg", r.cfg)):
        if value is not None:
            flags.append(f"--{name} {value:g}")
    for name, text in (("sampler", r.sampler), ("model", job.model or r.model)):
        if text:
            flags.append(f"--{name} {_quoted(text) if ' ' in text else text}")
    if r.init_sha and r.strength is not None:
        flags.append(f"--strength {r.strength:g}")
    if r.negative_prompt:
        flags.append(f"--no {_quoted(r.negative_prompt)}")
    prompt = _prompt_text(job)
    if _flag_like(prompt):  # a word that reads as a flag: everything after -- is prompt
        return "/imagine " + " ".join(flags) + " -- " + prompt
    return "/imagine " + prompt + " " + " ".join(flags)


def repro_text(job: Job) -> str:
    """Info's lines: the command, and what it cannot carry."""
    lines = [f"Reproduce: {command_line(job)}"]
    if job.request.init_sha:
        lines.append(f"(It started from an image: /imagine --from {job.id} uses it again.)")
    else:
        lines.append(f"Or: /imagine --from {job.id} (the same provider, too)")
    return "\n".join(lines)


_JOB_ID = re.compile(r"[A-Za-z0-9]{6,40}")


async def load_visible(ctx: Context, inv: Invocation, job_id: str, refusal: str) -> Job:
    """The job ``job_id`` if the asker may read its parameters here (the rule of Info)."""
    job = await ctx.runner.load(job_id) if _JOB_ID.fullmatch(job_id) else None
    actor = inv.actor
    if job is None or job.deleted or (job.platform, job.tenant) != (actor.platform, actor.tenant):
        raise JobNotFound(f"I know no job {job_id[:40]!r} here (it may have been deleted).")
    await ctx.access.check("continue", job, inv, refusal)
    return job


async def from_job(ctx: Context, inv: Invocation, job_id: str) -> JobSpec:
    """The spec that makes ``job_id`` again: same parameters, seed, provider and input."""
    job = await load_visible(ctx, inv, job_id, _REFUSAL)
    r = job.request
    parsed = replace(specs.reparse(job), seed=job.seed, model=job.model or r.model)
    name = job.provider if job.provider in ctx.providers.names() else ctx.provider()[0]
    provider = ctx.providers.get(name)
    spec = specs.build_spec(
        parsed,
        kind="imagine",
        provider_name=name,
        caps=provider.capabilities,
        provider_label=provider.label,
        styles=ctx.styles,
        init_sha=r.init_sha,
        init_ext=r.init_ext,
        strength=r.strength,
        seed=job.seed,
        n=job.n,
    )
    note = f"Repeats job {job.id}."
    return replace(
        spec,
        notice=" ".join(x for x in (note, spec.notice) if x),
        display=replace(spec.display, remix=r.remix, sources=(("everything", f"job {job.id}"),)),
    )


__all__ = ["command_line", "from_job", "load_visible", "repro_text"]
