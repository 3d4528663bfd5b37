"""The builders behind the image verbs of :mod:`bot.actions`: Vary (Subtle) and Vary (Strong),
Remix, Upscale, Zoom out and Pan.

Each returns the :class:`~bot.jobs.JobSpec` of the child job a click starts (the clicker pays,
through the same ledger as every job), or None when it answered already (Remix's form). An
Upscale, a Zoom out and a Pan are one-image jobs whose init image is the picked image and whose
:class:`~bot.providers.edit_types.Edit` says what to do with it; the runner hands them to the
provider's upscaler or outpainter (:mod:`bot.providers.edits`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from bot import grammar, specs
from bot.errors import UserError
from bot.jobs import JobSpec
from bot.providers.base import GenerationRequest, NotSupported, wrap_seed
from bot.providers.edit_types import Edit, pan, zoom_out
from bot.providers.edits import RESIZED_NOTE
from bot.types import Form, FormField, Reply

if TYPE_CHECKING:
    from bot.actions import Call

Builder = Callable[["Call"], Awaitable[JobSpec | None]]

PAN_DIRECTIONS = ("left", "right", "up", "down")


def child(c: Call, parsed: grammar.ImagineRequest, kind: str, **kw: object) -> JobSpec:
    name, provider = c.ctx.provider()
    return specs.build_spec(
        parsed,
        kind=kind,
        provider_name=name,
        caps=provider.capabilities,
        provider_label=provider.label,
        styles=c.ctx.styles,
        **kw,  # type: ignore[arg-type]
    )


async def remixed(c: Call, title: str) -> grammar.ImagineRequest | None:
    """The request a Vary or Reroll starts from: the parent's, or, when the parent was made
    with remix on, the prompt the clicker edits first (a form that comes back to this button).
    None: the form was shown, or help was asked for, and the click has been answered."""
    if not c.job.request.remix:
        return specs.reparse(c.job)
    if "prompt" not in c.inv.fields:
        await c.responder.send(
            Reply(
                title,
                ephemeral=True,
                form=Form(
                    title=title,
                    action=c.inv.action,
                    submit_label="Remix",
                    fields=(FormField("prompt", "Prompt (flags allowed)", c.job.prompt),),
                ),
            )
        )
        return None
    parsed = grammar.parse(c.inv.fields.get("prompt", ""), c.ctx.limits)
    if isinstance(parsed, grammar.HelpRequest):
        await c.responder.send(Reply(parsed.text, ephemeral=True))
        return None
    edited = parsed.requests[0]
    # The edited prompt keeps the parent's size and count unless the edit names new ones.
    base = specs.reparse(c.job)
    return grammar.ImagineRequest(
        **{
            **edited.__dict__,
            "n": edited.n if edited.n_explicit else base.n,
            "width": edited.width if edited.size_explicit else base.width,
            "height": edited.height if edited.size_explicit else base.height,
            "size_explicit": True,
            "remix": True,
        }
    )


def vary(strength_of: Callable[[Call], float], kind: str, title: str) -> Builder:
    async def build(c: Call) -> JobSpec | None:
        img = await c.ctx.image(c.job, c.index)
        parsed = await remixed(c, f"{title} image {img.index}")
        if parsed is None:
            return None
        return child(
            c,
            parsed,
            kind,
            init_sha=img.sha256,
            init_ext=img.ext,
            init_size=(img.width, img.height),
            strength=strength_of(c),
            parent=(c.job.id, img.index),
            n=parsed.n if parsed.n_explicit else c.job.n,
            seed=specs.random_seed(),
        )

    return build


async def reroll(c: Call) -> JobSpec | None:
    parsed = await remixed(c, "Remix: Reroll")
    if parsed is None:
        return None
    r = c.job.request
    return child(
        c,
        parsed,
        "reroll",
        init_sha=r.init_sha,
        init_ext=r.init_ext,
        strength=r.strength,
        parent=(c.job.id, None),
        n=parsed.n if parsed.n_explicit else c.job.n,
        seed=specs.random_seed(),
    )


async def _edit_spec(c: Call, kind: str, make: Callable[[int, int], Edit]) -> JobSpec:
    """A one-image job that upscales or extends the picked image at the current provider."""
    img = await c.ctx.image(c.job, c.index)
    name, provider = c.ctx.provider()
    caps = c.ctx.capabilities
    edit = make(img.width, img.height)
    notice = ""
    cost = 1
    if edit.op == "upscale":
        if caps.upscale == "none":  # a button from before the settings changed
            raise NotSupported(f"{provider.label} offers no upscale here.")
        limit = caps.upscale_max_pixels
        if caps.upscale == "model" and limit and img.width * img.height > limit:
            raise UserError(
                f"That image is {img.width}x{img.height}; the upscaler of {provider.label} "
                f"takes at most {limit / 1e6:.1f} megapixels. Nothing was charged."
            )
        cost = c.ctx.settings.actions.cost_of_upscale(name)
        if caps.upscale == "resize":
            notice = RESIZED_NOTE.format(label=provider.label)
    elif not caps.outpaint:
        raise NotSupported(f"{provider.label} cannot extend an image (no outpainting).")
    r = c.job.request
    seed = img.seed if img.seed is not None else specs.random_seed()
    if edit.op == "outpaint":
        seed = specs.random_seed()
    out_w, out_h = edit.out_size(img.width, img.height)
    if edit.op == "outpaint" and max(out_w, out_h) > caps.max_side * 2:
        raise UserError(
            f"That would make a {out_w}x{out_h} picture, larger than {provider.label} "
            "can extend. Try Pan, or Zoom out on a smaller image."
        )
    req = GenerationRequest(
        prompt=r.prompt,
        negative_prompt=r.negative_prompt,
        weighted_prompts=r.weighted_prompts,
        n=1,
        width=img.width,
        height=img.height,
        seed=wrap_seed(seed, caps),
        style=r.style,
        model=r.model,
        edit=edit,
    )
    return JobSpec(
        kind=kind,
        request=req,
        provider=name,
        init_sha=img.sha256,
        init_ext=img.ext,
        parent_job_id=c.job.id,
        parent_index=img.index,
        notice=notice,
        display=r.display,
        cost=cost,
    )


async def upscale(c: Call) -> JobSpec:
    factor = c.ctx.settings.actions.upscale_factor
    return await _edit_spec(c, "upscale", lambda w, h: Edit("upscale", factor))


def zoom(factor: float) -> Builder:
    async def build(c: Call) -> JobSpec:
        return await _edit_spec(c, "zoom", lambda w, h: zoom_out(w, h, factor))

    return build


def panner(direction: str) -> Builder:
    async def build(c: Call) -> JobSpec:
        fraction = c.ctx.settings.actions.pan_fraction
        return await _edit_spec(c, "pan", lambda w, h: pan(w, h, direction, fraction))

    return build


__all__ = ["PAN_DIRECTIONS", "child", "panner", "remixed", "reroll", "upscale", "vary", "zoom"]
