"""Team avatars: a channel's or the workspace's avatar style, portraits, and their sizes.

An admin sets the style (``/admin avatar-style channel|workspace STYLE|none [seed=N]
[suffix ...]``): a style name, a prompt suffix and a base seed, kept in the preference store
(kind ``avatar``). ``/imagine avatar DESCRIPTION`` makes square portraits in it;
``/imagine avatar @alice @bob`` one job per member (members named through every mention form,
:func:`bot.admin.resolve_user`), the same style and consecutive seeds, so a team's set looks
like one set. A picked avatar's Sizes button posts it at 1024, 512, 256 and 128 px and a
round-crop preview, resized with Pillow in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageOps

from bot import grammar, images, specs
from bot.errors import NotAllowed, UserError
from bot.lineage_image import file_for, save_png_sync
from bot.types import ImageFile, Invocation, Reply, Responder

if TYPE_CHECKING:
    from bot.context import Context
    from bot.delivery import Delivery
    from bot.jobs import Job, StoredJobImage

KIND = "avatar"
SIZES = (1024, 512, 256, 128)
ROUND_SIDE = 512
ICON_SIDE = 1024  # Discord: "base64 1024x1024 png/jpeg/gif image for the guild icon"
_DEFAULT_DESCRIPTION = "a friendly team member, neutral background"


@dataclass(frozen=True)
class AvatarStyle:
    style: str | None = None
    suffix: str = ""
    seed: int = 0
    where: str = "built-in"  # "channel", "workspace" or "built-in", for the reply

    def to_json(self) -> str:
        return json.dumps({"style": self.style, "suffix": self.suffix, "seed": self.seed})

    @classmethod
    def from_json(cls, text: str, where: str) -> AvatarStyle:
        raw = json.loads(text)
        return cls(raw.get("style") or None, str(raw.get("suffix") or ""), int(raw["seed"]), where)

    def describe(self) -> str:
        return f"style {self.style or 'none'}, base seed {self.seed}" + (
            f", suffix {self.suffix!r}" if self.suffix else ""
        )


# ------------------------------------------------------------------------ the admin's side
def parse_style(text: str, limits: grammar.GrammarLimits) -> AvatarStyle | None:
    """``STYLE|none [seed=N] [suffix words]`` -> the style; ``off`` -> None (clear it)."""
    words = text.split()
    if not words:
        raise UserError(
            "Name a style (or none), e.g. /admin avatar-style channel anime seed=1000 soft "
            "studio light. /admin avatar-style channel off removes it."
        )
    if [w.lower() for w in words] == ["off"]:
        return None
    head, rest = words[0], words[1:]
    style = None
    if head.lower() not in ("none", "-"):
        parsed = grammar.parse(f"x --style {head}", limits)
        assert isinstance(parsed, grammar.ParsedImagine)
        style = parsed.requests[0].style
    seed = None
    suffix: list[str] = []
    for word in rest:
        if word.lower().startswith("seed="):
            value = word[5:]
            if not value.isdigit() or int(value) > grammar.SEED_MAX:
                raise UserError(f"seed must be a whole number from 0 to {grammar.SEED_MAX}.")
            seed = int(value)
        else:
            suffix.append(word)
    text_suffix = grammar.clean_text(" ".join(suffix))[: limits.max_prompt_chars // 4]
    return AvatarStyle(style, text_suffix, specs.random_seed() if seed is None else seed)


async def set_style(ctx: Context, inv: Invocation, where: str, value: AvatarStyle | None) -> str:
    actor = inv.actor
    subject = inv.channel_id if where == "channel" else ""
    prefs = ctx.store.prefs
    label = "This channel's" if where == "channel" else "The workspace's"
    if value is None:
        await prefs.delete(actor.platform, actor.tenant, KIND, where, subject)
        return f"{label} avatar style is removed."
    await prefs.put(
        actor.platform, actor.tenant, KIND, where, subject, value.to_json(), ctx.clock()
    )
    return f"{label} avatar style: {value.describe()}."


async def style_for(ctx: Context, inv: Invocation) -> AvatarStyle:
    """The channel's avatar style, else the workspace's, else none (a fresh base seed)."""
    actor = inv.actor
    keys = [("channel", inv.channel_id), ("workspace", "")]
    rows = await ctx.store.prefs.get_many(actor.platform, actor.tenant, KIND, keys)
    for key in keys:
        if key in rows:
            return AvatarStyle.from_json(rows[key], key[0])
    return AvatarStyle(seed=specs.random_seed())


# -------------------------------------------------------------------------- /imagine avatar
def _is_mention(word: str) -> bool:
    return word.startswith(("<@", "@"))


async def avatar_command(
    ctx: Context, delivery: Delivery, inv: Invocation, responder: Responder, rest: Sequence[str]
) -> None:
    from bot.admin import resolve_user
    from bot.imagine import submit

    members = list(
        dict.fromkeys(resolve_user(w, inv.actor.platform) for w in rest if _is_mention(w))
    )
    words = [w for w in rest if not _is_mention(w)]
    if not words and not members:
        raise UserError(
            "Describe the avatar, e.g. /imagine avatar a fox in a scarf, or mention members "
            "for one each: /imagine avatar @alice @bob."
        )
    cap = ctx.limits.max_permutations
    if len(members) > cap:
        raise UserError(f"At most {cap} members at once ({len(members)} named).")
    look = await style_for(ctx, inv)
    description = " ".join(words) or _DEFAULT_DESCRIPTION
    if any(grammar.is_flag(w) for w in words):
        raise UserError("/imagine avatar takes a description only, no flags.")
    text = description + (f", {look.suffix}" if look.suffix else "") + " --avatar"
    if look.style:
        text += f" --style {look.style}"
    parsed = grammar.parse(text.replace("{", "\\{").replace("}", "\\}"), ctx.limits)
    assert isinstance(parsed, grammar.ParsedImagine)
    base = parsed.requests[0]
    name, provider = ctx.provider()
    job_specs = []
    count = len(members) or 1
    for i in range(count):
        request = replace(
            base, n=1 if members else base.n, seed=(look.seed + i) % (grammar.SEED_MAX + 1)
        )
        spec = specs.build_spec(
            request,
            kind="imagine",
            provider_name=name,
            caps=provider.capabilities,
            provider_label=provider.label,
            styles=ctx.styles,
        )
        note = f"Avatar {i + 1} of {count}, for user {members[i]}." if members else "Avatar."
        job_specs.append(replace(spec, notice=" ".join(x for x in (note, spec.notice) if x)))
    if members:
        await responder.send(
            Reply(
                f"{count} avatars, one per member, {look.describe()} ({look.where}); "
                f"{count} images from your quota.",
                ephemeral=True,
            )
        )
    await submit(ctx, delivery, inv, responder, job_specs)


# ------------------------------------------------------------------------------ the sizes
def _sizes_sync(path: Path, data_dir: Path, stem: str) -> list[ImageFile]:
    out: list[ImageFile] = []
    with Image.open(path) as im:
        square = ImageOps.fit(im.convert("RGB"), (max(SIZES), max(SIZES)), Image.Resampling.LANCZOS)
    for side in SIZES:
        pic = (
            square
            if side == square.width
            else square.resize((side, side), Image.Resampling.LANCZOS)
        )
        stored = save_png_sync(data_dir, images.encode_png_sync(pic))
        out.append(file_for(data_dir, stored, f"{stem}-{side}px"))
    # The round preview: an anti-aliased circle (drawn 4x, then shrunk) as the alpha channel.
    big = ROUND_SIDE * 4
    mask = Image.new("L", (big, big), 0)
    ImageDraw.Draw(mask).ellipse([0, 0, big - 1, big - 1], fill=255)
    mask = mask.resize((ROUND_SIDE, ROUND_SIDE), Image.Resampling.LANCZOS)
    round_pic = square.resize((ROUND_SIDE, ROUND_SIDE), Image.Resampling.LANCZOS).convert("RGBA")
    round_pic.putalpha(mask)
    stored = save_png_sync(data_dir, images.encode_png_sync(round_pic))
    out.append(file_for(data_dir, stored, f"{stem}-round"))
    return out


async def post_sizes(
    ctx: Context, delivery: Delivery, responder: Responder, job: Job, img: StoredJobImage
) -> None:
    data_dir = ctx.settings.data_dir
    path = images._content_path(data_dir, img.sha256, img.ext)
    if not path.is_file():
        raise UserError("That image is no longer on disk, so it cannot be resized.")
    files = await asyncio.to_thread(_sizes_sync, path, data_dir, f"{job.id}-{img.index}")
    sizes = ", ".join(str(s) for s in SIZES)
    ref = await responder.send(
        Reply(
            f"Image {img.index} as an avatar: {sizes} px, and a round preview.",
            images=tuple(files),
            parent_job_id=job.id,
        )
    )
    await delivery.record_post(job, ref, "pick")  # Delete takes these down too


def _icon_sync(path: Path) -> bytes:
    with Image.open(path) as im:
        square = ImageOps.fit(im.convert("RGB"), (ICON_SIDE, ICON_SIDE), Image.Resampling.LANCZOS)
    return images.encode_png_sync(square)


async def set_icon(
    ctx: Context, inv: Invocation, responder: Responder, job: Job, img: StoredJobImage
) -> None:
    """An admin makes a picked avatar the workspace's icon, where the platform allows it."""
    if not ctx.access.is_admin(inv.actor):
        raise NotAllowed("Only a server admin can change the server icon.")
    setter = getattr(responder, "set_workspace_icon", None)
    if setter is None:
        raise UserError("I cannot change the workspace icon on this platform.")
    path = images._content_path(ctx.settings.data_dir, img.sha256, img.ext)
    if not path.is_file():
        raise UserError("That image is no longer on disk.")
    png = await asyncio.to_thread(_icon_sync, path)
    who = inv.actor.display_name or inv.actor.user_id
    await setter(png, f"imagine-bot: image {img.index} of job {job.id}, chosen by {who}")
    await ctx.store.admin_log.append(
        inv.actor.key, "workspace-icon", json.dumps([job.id, img.index]), ctx.clock()
    )
    await responder.send(Reply(f"The server icon is now image {img.index}.", ephemeral=True))


__all__ = [
    "SIZES",
    "AvatarStyle",
    "avatar_command",
    "parse_style",
    "post_sizes",
    "set_icon",
    "set_style",
    "style_for",
]
