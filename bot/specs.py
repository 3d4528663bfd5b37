"""Pure: a parsed request, a style and a provider's capabilities -> a job spec, fitted.

Also the reverse (:func:`reparse`: a stored job back to a request, for Vary and Reroll) and the
strength rule of Refine. Nothing here does I/O; the only chance is a random seed when none was
asked for.
"""

from __future__ import annotations

import secrets
from dataclasses import replace

from bot import grammar
from bot.errors import UserError
from bot.job_request import Display
from bot.jobs import Job, JobSpec
from bot.providers.base import Capabilities, GenerationRequest, WeightedPrompt, fit_request
from bot.styles import StyleBook

SEED_SPACE = 4294967296  # a fresh seed for Vary and Reroll: any 32-bit value


def random_seed() -> int:
    return secrets.randbelow(SEED_SPACE)


def build_spec(
    parsed: grammar.ImagineRequest,
    *,
    kind: str,
    provider_name: str,
    caps: Capabilities,
    provider_label: str,
    styles: StyleBook,
    init_sha: str | None = None,
    init_ext: str | None = None,
    init_size: tuple[int, int] | None = None,
    strength: float | None = None,
    parent: tuple[str, int | None] | None = None,
    seed: int | None = None,
    n: int | None = None,
) -> JobSpec:
    native = parsed.style is not None and parsed.style in caps.native_styles
    prompt = parsed.prompt
    weighted = parsed.weighted_prompts
    if parsed.avatar or (parsed.style and not native):
        applied = None if native else parsed.style
        prompt = styles.apply(applied, prompt, avatar=parsed.avatar)
        weighted = tuple(
            WeightedPrompt(styles.apply(applied, w.text, avatar=parsed.avatar), w.weight)
            if w.weight > 0
            else w
            for w in weighted
        )
    seed_max = caps.seed_max or 4294967295
    chosen_seed = seed if seed is not None else parsed.seed
    if chosen_seed is None:
        chosen_seed = secrets.randbelow(seed_max + 1)
    width, height = (
        init_size if init_size and not parsed.size_explicit else (parsed.width, parsed.height)
    )
    req = GenerationRequest(
        prompt=prompt,
        negative_prompt=parsed.negative_prompt,
        weighted_prompts=weighted,
        n=n if n is not None else parsed.n,
        width=width,
        height=height,
        seed=chosen_seed,
        steps=parsed.steps,
        cfg=parsed.cfg,
        sampler=parsed.sampler,
        style=parsed.style if native else None,
        model=parsed.model,
        strength=strength if init_sha else None,
        init_image=b"" if init_sha else None,  # the real bytes are loaded by the runner
    )
    fitted = fit_request(req, caps, provider_label)
    return JobSpec(
        kind=kind,
        request=replace(fitted.request, init_image=None),
        provider=provider_name,
        init_sha=init_sha,
        init_ext=init_ext,
        parent_job_id=parent[0] if parent else None,
        parent_index=parent[1] if parent else None,
        notice=" ".join(fitted.notes),
        remix=parsed.remix,
        display=Display(
            prompt=parsed.prompt,
            style=parsed.style or "",
            avatar=parsed.avatar,
            weighted=parsed.weighted_prompts,
        ),
    )


def reparse(job: Job) -> grammar.ImagineRequest:
    """The parent's parameters as a request, for reroll and vary."""
    r = job.request
    weighted = r.weighted_prompts
    display = r.shown_prompt
    style = r.display.style or None
    avatar = r.display.avatar
    if r.display.weighted:  # the user's own parts; build_spec re-applies the style
        weighted = r.display.weighted
    elif style or avatar:  # older jobs: re-apply from the user's own words
        weighted = tuple(
            w if w.weight <= 0 else WeightedPrompt(display, w.weight) for w in weighted[:1]
        ) + tuple(w for w in weighted[1:] if w.weight <= 0)
    return grammar.ImagineRequest(
        prompt=display,
        weighted_prompts=weighted,
        negative_prompt=r.negative_prompt,
        n=job.n,
        width=r.width,
        height=r.height,
        size_explicit=True,
        seed=None,
        steps=r.steps,
        cfg=r.cfg,
        sampler=r.sampler,
        model=r.model,
        style=style,
        strength=r.strength,
        avatar=avatar,
        remix=r.remix,
    )


def strength(field: str | None, flag: float | None, default: float) -> float:
    """``--strength`` typed in the prompt wins over the form's slider, which always sends a
    value; then the slider; then the configured default."""
    if flag is not None:
        return flag
    if field not in (None, ""):
        try:
            value = float(field)
        except ValueError:
            raise UserError("Strength must be a number from 0 to 1.") from None
        if not 0.0 <= value <= 1.0 or value != value:
            raise UserError(f"Strength must be a number from 0 to 1 (got {field}).")
        return value
    return default


__all__ = ["SEED_SPACE", "build_spec", "random_seed", "reparse", "strength"]
