"""The verb table: every button the bot shows, one entry each.

An entry carries its permission rule (:data:`bot.access.Rule`), whether the clicker pays (a
verb that starts a child job charges the clicker, never the owner), which provider capability
it needs (no button that cannot work), where its button appears, and how it runs. The buttons
on a message, the permission check and the dispatch are all read from this table: adding a verb
is one :class:`Verb` here (plus its capability, if a provider must offer something new).

Buttons carry only ``verb:job_id[:index]`` (:class:`bot.types.Action`); the job is read back
from the database when one is pressed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from bot import grammar, image_verbs, render, specs
from bot.access import Rule
from bot.errors import JobNotFound, UserError
from bot.imagine import store_input, submit
from bot.jobs import Job, JobSpec, StoredJobImage
from bot.providers.base import Capabilities
from bot.types import Action, Button, ButtonStyle, Form, FormField, Invocation, Reply, Responder

if TYPE_CHECKING:
    from bot.context import Context
    from bot.delivery import Delivery

Place = Literal["queued", "grid", "pick"]
"""Where a button shows: on a queued job's status, under a finished grid, under a picked image."""


@dataclass(frozen=True)
class Call:
    """One press of a button, with the job it names already loaded."""

    ctx: Context
    delivery: Delivery
    inv: Invocation
    responder: Responder
    job: Job
    index: int | None


Run = Callable[[Call], Awaitable[None]]
Build = Callable[[Call], Awaitable[JobSpec | None]]
"""Builds the child job a click starts; None when it answered already (e.g. showed a form)."""


def _always(_: Capabilities) -> bool:
    return True


def _any_job(_: Job) -> bool:
    return True


@dataclass(frozen=True)
class Verb:
    name: str
    label: str
    rule: Rule
    refusal: str = ""  # shown when the rule refuses; {owner} is the job's owner
    run: Run | None = None  # a verb that acts
    build: Build | None = None  # a verb that starts a child job: the clicker pays
    per_image: bool = False  # one button per image ("Vary 2"), the index travels in the button
    needs: Callable[[Capabilities], bool] = _always
    places: Mapping[Place, ButtonStyle] = field(default_factory=dict)
    help: str = ""
    shows: Callable[[Job], bool] = _any_job  # e.g. only on an avatar job's picks

    @property
    def charges(self) -> bool:
        return self.build is not None


class VerbTable:
    def __init__(self, verbs: Iterable[Verb]) -> None:
        self._verbs: dict[str, Verb] = {}
        for verb in verbs:
            self.add(verb)

    def add(self, verb: Verb) -> None:
        if verb.name in self._verbs:
            raise ValueError(f"verb {verb.name!r} is already in the table")
        if (verb.run is None) == (verb.build is None):
            raise ValueError(f"verb {verb.name!r} needs exactly one of run and build")
        if Action.decode(Action(verb.name, "a" * 12).encode()) is None:
            raise ValueError(f"verb name {verb.name!r} does not fit the button codec")
        self._verbs[verb.name] = verb

    def get(self, name: str) -> Verb | None:
        return self._verbs.get(name)

    def __iter__(self) -> Iterator[Verb]:
        return iter(self._verbs.values())

    def names(self) -> list[str]:
        return list(self._verbs)

    def _for(self, place: Place, caps: Capabilities, job: Job | None = None) -> list[Verb]:
        return [
            v
            for v in self._verbs.values()
            if place in v.places and v.needs(caps) and (job is None or v.shows(job))
        ]

    def buttons(
        self, job: Job, imgs: Sequence[StoredJobImage], caps: Capabilities
    ) -> tuple[Button, ...]:
        """The buttons of a job's message in its current state."""
        place: Place | None = {"queued": "queued", "done": "grid"}.get(job.state)  # type: ignore[assignment]
        if place is None:
            return ()
        out: list[Button] = []
        for verb in self._for(place, caps, job):
            style = verb.places[place]
            if verb.per_image:
                out += [
                    Button(
                        f"{verb.label} {img.index}",
                        Action(verb.name, job.id, img.index).encode(),
                        style,
                    )
                    for img in imgs
                ]
            else:
                out.append(Button(verb.label, Action(verb.name, job.id).encode(), style))
        return tuple(out)

    def pick_buttons(self, job: Job, img: StoredJobImage, caps: Capabilities) -> tuple[Button, ...]:
        """The buttons under one picked image: its message shows that image alone, so the
        labels carry no index ("Upscale", not "Upscale 2"); the buttons do."""
        return tuple(
            Button(
                v.label,
                Action(v.name, job.id, img.index if v.per_image else None).encode(),
                v.places["pick"],
            )
            for v in self._for("pick", caps, job)
        )

    def help_text(self, caps: Capabilities) -> str:
        """The buttons, for ``/imagine help``: where each shows and what it does (the ones
        the current provider cannot do are left out)."""
        # Grouped by where they show, labels only (Zoom out 1.5x/2x): the whole of
        # /imagine help must fit one Discord message (2000 characters).
        where = {"grid": "On a result", "pick": "On a picked image", "queued": "While queued"}
        lines = []
        for place, title in where.items():
            labels = [
                v.label
                for v in self._verbs.values()
                if place in v.places and v.help and v.needs(caps)
            ]
            if labels:
                lines.append(f"  {title}: {', '.join(_compact(labels))}.")
        return "\n".join(["Buttons:", *lines])

    async def press(
        self, ctx: Context, delivery: Delivery, inv: Invocation, responder: Responder
    ) -> None:
        """Run the button in ``inv``: decode, load, check the verb's rule, act or submit."""
        action = Action.decode(inv.action)
        verb = self._verbs.get(action.verb) if action else None
        if action is None or verb is None:
            raise JobNotFound("That button is not one of ours, or it has expired.")
        job = await ctx.runner.load(action.job_id)
        actor = inv.actor
        if (
            job is None
            or job.deleted
            or (job.platform, job.tenant) != (actor.platform, actor.tenant)
        ):
            raise JobNotFound("That image is no longer available (it was deleted or expired).")
        await ctx.access.check(verb.rule, job, inv, verb.refusal)
        call = Call(ctx, delivery, inv, responder, job, action.index)
        if verb.run is not None:
            await verb.run(call)
            return
        assert verb.build is not None
        spec = await verb.build(call)
        if spec is not None:
            await submit(ctx, delivery, inv, responder, [spec])


def _compact(labels: Sequence[str]) -> list[str]:
    """``["Pan left", "Pan right"]`` -> ``["Pan left/right"]``; ``["Vary (Subtle)", "Vary
    (Strong)"]`` -> ``["Vary (Subtle/Strong)"]``: neighbours that differ in their last word."""
    out: list[str] = []
    for label in labels:
        head, _, tail = label.rpartition(" ")
        if out and head and out[-1].startswith(head + " "):
            last = out[-1]
            if tail.startswith("(") and last.endswith(")"):
                out[-1] = f"{last[:-1]}/{tail[1:]}"
            else:
                out[-1] = f"{last}/{tail}"
        else:
            out.append(label)
    return out


# ---------------------------------------------------------------------------- the verbs
async def _info(c: Call) -> None:
    imgs = await c.ctx.runner.load_images(c.job.id)
    text = render.info_text(c.job, imgs, c.ctx.provider_label(c.job.provider))
    note = await c.delivery.undelivered_note(c.job.id)
    if note:
        text += f"\n{note}"
    await c.responder.send(Reply(text, ephemeral=True))


async def _cancel(c: Call) -> None:
    who = c.inv.actor.display_name or c.inv.actor.user_id
    refunded = render.plural(c.job.n, "image")
    if not await c.ctx.runner.cancel(c.job.id, f"Cancelled by {who}. {refunded} refunded."):
        raise UserError("That job has already started, so it can no longer be cancelled.")
    await c.responder.send(Reply(f"Cancelled; {refunded} refunded.", ephemeral=True))


async def _delete(c: Call) -> None:
    await c.delivery.take_down(c.job)
    await c.responder.send(Reply("Deleted.", ephemeral=True))


async def _pick(c: Call) -> None:
    from bot.gallery import record_pick  # only Pick records anything in the gallery

    img = await c.ctx.image(c.job, c.index)
    buttons = c.ctx.verbs.pick_buttons(c.job, img, c.ctx.capabilities)
    # Recorded first: a pick is part of the channel's history, shown again after a reload.
    actor = c.inv.actor
    await record_pick(c.ctx, c.job, img, actor.user_id, actor.display_name or actor.user_id)
    ref = await c.responder.send(render.pick_reply(c.job, img, c.ctx.settings.data_dir, buttons))
    await c.delivery.record_post(c.job, ref, "pick")  # Delete takes it down too


async def _refine(c: Call) -> JobSpec | None:
    img = await c.ctx.image(c.job, c.index)
    default = c.ctx.settings.actions.refine_strength
    if "prompt" not in c.inv.fields:  # first the dialog, prefilled; it comes back here
        await c.responder.send(
            Reply(
                f"Refine image {img.index}",
                ephemeral=True,
                form=Form(
                    title=f"Refine image {img.index}",
                    action=c.inv.action,
                    submit_label="Refine",
                    fields=(
                        FormField("prompt", "Prompt (flags allowed)", c.job.prompt),
                        FormField(
                            "strength",
                            "Strength (0 keeps the image, 1 ignores it)",
                            f"{default:g}",
                            kind="number",
                            min_value=0.0,
                            max_value=1.0,
                        ),
                        FormField("image", "Start from another picture (optional)", kind="image"),
                    ),
                ),
            )
        )
        return None
    parsed = grammar.parse(c.inv.fields.get("prompt", ""), c.ctx.limits)
    if isinstance(parsed, grammar.HelpRequest):
        await c.responder.send(Reply(parsed.text, ephemeral=True))
        return None
    refined = parsed.requests[0]
    # A picture uploaded in the dialog is the starting point instead of the picked image; the
    # rule and the cost are the Refine's, and the lineage still names the image refined.
    init_sha, init_ext, init_size = img.sha256, img.ext, (img.width, img.height)
    if c.inv.init_image is not None:
        init_sha, init_ext, init_size = await store_input(c.ctx, c.inv.init_image)
    return image_verbs.child(
        c,
        refined,
        "refine",
        init_sha=init_sha,
        init_ext=init_ext,
        init_size=init_size,
        strength=specs.strength(c.inv.fields.get("strength"), refined.strength, default),
        parent=(c.job.id, img.index),
        n=refined.n if refined.n_explicit else c.job.n,
    )


async def _tree(c: Call) -> None:
    from bot.lineage_image import post_tree

    await post_tree(c.ctx, c.delivery, c.inv, c.responder, c.job.id)


async def _sizes(c: Call) -> None:
    from bot.avatars import post_sizes

    await post_sizes(c.ctx, c.delivery, c.responder, c.job, await c.ctx.image(c.job, c.index))


def _avatar_job(job: Job) -> bool:
    return job.request.display.avatar


async def _icon(c: Call) -> None:
    from bot.avatars import set_icon

    await set_icon(c.ctx, c.inv, c.responder, c.job, await c.ctx.image(c.job, c.index))


def _discord_avatar(job: Job) -> bool:
    return job.platform == "discord" and job.request.display.avatar


def _img2img(caps: Capabilities) -> bool:
    return caps.img2img


def _upscale(caps: Capabilities) -> bool:
    return caps.upscale != "none"


def _outpaint(caps: Capabilities) -> bool:
    return caps.outpaint


def _subtle(c: Call) -> float:
    return c.ctx.settings.actions.vary_strength


def _strong(c: Call) -> float:
    return c.ctx.settings.actions.vary_strong_strength


_CONTINUE = (
    "Only {owner} can continue this result here: this channel keeps results to their "
    "owner. (An admin can allow it with /admin collab on.)"
)

VERBS: tuple[Verb, ...] = (
    Verb(
        "pick",
        "Pick",
        "continue",
        _CONTINUE,
        run=_pick,
        per_image=True,
        places={"grid": "primary"},
        help="show one image at full size",
    ),
    Verb(
        "upscale",
        "Upscale",
        "continue",
        _CONTINUE,
        build=image_verbs.upscale,
        per_image=True,
        needs=_upscale,
        places={"pick": "primary"},
        help="a larger version of this image (a plain resize where no upscaler exists)",
    ),
    Verb(
        "refine",
        "Refine",
        "continue",
        _CONTINUE,
        build=_refine,
        per_image=True,
        needs=_img2img,
        places={"grid": "secondary", "pick": "primary"},
        help="img2img from this image with an edited prompt",
    ),
    # The single Vary of earlier versions: no longer shown, still answered (a button posted
    # before an upgrade works after it, as Vary (Subtle)).
    Verb(
        "vary",
        "Vary",
        "continue",
        _CONTINUE,
        build=image_verbs.vary(_subtle, "vary", "Remix: Vary"),
        per_image=True,
        needs=_img2img,
    ),
    Verb(
        "vary-subtle",
        "Vary (Subtle)",
        "continue",
        _CONTINUE,
        build=image_verbs.vary(_subtle, "vary-subtle", "Remix: Vary (Subtle)"),
        per_image=True,
        needs=_img2img,
        places={"pick": "secondary"},
        help="close variations of this image",
    ),
    Verb(
        "vary-strong",
        "Vary (Strong)",
        "continue",
        _CONTINUE,
        build=image_verbs.vary(_strong, "vary-strong", "Remix: Vary (Strong)"),
        per_image=True,
        needs=_img2img,
        places={"grid": "secondary", "pick": "secondary"},
        help="bolder variations of this image",
    ),
    Verb(
        "reroll",
        "Reroll",
        "continue",
        _CONTINUE,
        build=image_verbs.reroll,
        places={"grid": "secondary"},
        help="the same prompt with new seeds (with --remix: edit it first)",
    ),
    Verb(
        "zoom-out",
        "Zoom out 1.5x",
        "continue",
        _CONTINUE,
        build=image_verbs.zoom(1.5),
        per_image=True,
        needs=_outpaint,
        places={"pick": "secondary"},
        help="widen the view: the picture is extended on every side",
    ),
    Verb(
        "zoom-out-double",
        "Zoom out 2x",
        "continue",
        _CONTINUE,
        build=image_verbs.zoom(2.0),
        per_image=True,
        needs=_outpaint,
        places={"pick": "secondary"},
        help="widen the view twice as far",
    ),
    *(
        Verb(
            f"pan-{d}",
            f"Pan {d}",
            "continue",
            _CONTINUE,
            build=image_verbs.panner(d),
            per_image=True,
            needs=_outpaint,
            places={"pick": "secondary"},
            help=f"extend the picture to the {d}" if d in ("left", "right") else f"extend it {d}",
        )
        for d in image_verbs.PAN_DIRECTIONS
    ),
    # Info shows the prompt and seeds: the same rule as every verb that continues a result.
    Verb(
        "info",
        "Info",
        "continue",
        _CONTINUE,
        run=_info,
        places={"grid": "secondary", "pick": "secondary"},
        help="the parameters and seeds, to you only",
    ),
    Verb(
        "delete",
        "Delete",
        "owner",
        "Only the person who made this, or an admin, can delete it.",
        run=_delete,
        places={"grid": "danger"},
        help="take the result down",
    ),
    Verb(
        "cancel",
        "Cancel",
        "owner",
        "Only the person who asked for this, or an admin, can cancel it.",
        run=_cancel,
        places={"queued": "danger"},
        help="cancel a queued job, refunded in full",
    ),
    # Team workflows (issue 11): the family tree, and an avatar's download sizes.
    Verb(
        "tree",
        "Lineage",
        "continue",
        _CONTINUE,
        run=_tree,
        places={"pick": "secondary"},
        help="post this job's family tree as one picture",
    ),
    Verb(
        "sizes",
        "Sizes",
        "continue",
        _CONTINUE,
        run=_sizes,
        per_image=True,
        places={"pick": "secondary"},
        shows=_avatar_job,
        help="an avatar at 1024, 512, 256 and 128 px, and a round preview",
    ),
    Verb(
        "icon",
        "Server icon",
        "owner",  # and set_icon asks for an admin: the owner alone may not
        "Only a server admin can change the server icon.",
        run=_icon,
        per_image=True,
        places={"pick": "secondary"},
        shows=_discord_avatar,
        help="an admin makes this avatar the server icon (the bot needs Manage Server)",
    ),
)


def default_table() -> VerbTable:
    return VerbTable(VERBS)


__all__ = ["VERBS", "Call", "Place", "Verb", "VerbTable", "default_table"]
