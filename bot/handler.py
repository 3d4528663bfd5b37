"""The one command handler: every surface (Discord, Slack, web, CLI) comes through here.

``handle`` takes an :class:`~bot.types.Invocation` and a :class:`~bot.types.Responder`. It
never raises for a user's mistake: a :class:`~bot.errors.UserError` becomes an ephemeral reply;
anything else is logged with a reference id and the user gets a short apology with that id.

Buttons carry ``verb:job_id:index`` only. Who may press what is decided here, from the
database: the owner, anyone in the channel when the channel allows collaboration, and admins.
The clicker pays for what the click starts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from bot import grammar, images
from bot.config import Settings
from bot.errors import JobNotFound, NotAllowed, UserError
from bot.job_request import Display
from bot.jobs import Job, JobEvent, JobRunner, JobSpec, StoredJobImage, image_path
from bot.providers.base import (
    GenerationRequest,
    NotSupported,
    Provider,
    ProviderError,
    WeightedPrompt,
    fit_request,
)
from bot.providers.hub import ProviderHub
from bot.quotas import Quotas, user_scope, workspace_scope
from bot.store import Store
from bot.styles import StyleBook
from bot.types import (
    FINAL_STATES,
    Actor,
    Button,
    ChannelPoster,
    Form,
    FormField,
    ImageFile,
    Invocation,
    Reply,
    Responder,
    Target,
)

log = logging.getLogger(__name__)

ACTION_RE = re.compile(
    r"(pick|refine|vary|reroll|info|delete|cancel):([a-z2-9]{12})(?::([0-9]{1,2}))?")
SHA_RE = re.compile(r"[0-9a-f]{64}")
OFFLINE_NOTICE = "Offline preview: a procedural picture, not a diffusion model."
ALERT_EVERY_S = 3600.0

ADMIN_USAGE = """Admin commands:
/admin limit USER DAILY [MONTHLY]   set a user's limits (0 = unlimited)
/admin workspace-limit DAILY [MONTHLY]
/admin grant USER UNITS             extra images in the current windows
/admin reset USER                   forget the current windows' usage
/admin block USER [reason]          /admin unblock USER
/admin collab on|off                may others continue results in this channel?"""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class Handler:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        quotas: Quotas,
        runner: JobRunner,
        providers: ProviderHub,
        styles: StyleBook,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._store = store
        self._quotas = quotas
        self._runner = runner
        self._providers = providers
        self._styles = styles
        self._clock = clock
        self._posters: dict[str, ChannelPoster] = {}
        self._background: set[asyncio.Task[None]] = set()
        g = settings.grammar
        self._limits = grammar.GrammarLimits(
            max_images=g.max_images, default_n=g.default_n, max_prompt_chars=g.max_prompt_chars,
            max_permutations=g.max_permutations, styles=styles.names(), base_side=g.base_side,
        )
        self._image_limits = images.ImageLimits(
            max_input_bytes=settings.images.max_input_bytes,
            max_input_pixels=settings.images.max_input_pixels,
            preview_max_bytes=settings.images.preview_max_bytes,
            preview_max_side=settings.images.preview_max_side,
        )

    # ------------------------------------------------------------------ adapter-facing API
    def register_poster(self, platform: str, poster: ChannelPoster) -> None:
        """Called by an adapter once. Results that finished while the platform had no poster
        (jobs resumed at start run before the adapters are up) are delivered now; an adapter
        that can only post later (Discord, after login) calls :meth:`deliver_pending` again."""
        self._posters[platform] = poster
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self.deliver_pending(platform))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        """Let background deliveries finish before the database closes."""
        await asyncio.gather(*self._background, return_exceptions=True)

    def is_admin(self, actor: Actor) -> bool:
        return actor.is_admin or f"{actor.platform}:{actor.user_id}" in self._settings.bot.admins

    async def handle(self, inv: Invocation, responder: Responder) -> None:
        try:
            if inv.command == "action":
                await self._action(inv, responder)
            elif inv.command == "quota":
                await responder.send(Reply(await self._quota_text(inv.actor), ephemeral=True))
            elif inv.command == "admin":
                await self._admin(inv, responder)
            elif inv.command == "imagine":
                await self._imagine(inv, responder)
            else:
                raise UserError(f"Unknown command {inv.command!r}. Try /imagine help.")
        except UserError as exc:
            await responder.send(Reply(exc.message, ephemeral=True))
        except ProviderError as exc:  # a capability check before anything was charged
            await responder.send(Reply(exc.message, ephemeral=True))
        except Exception:
            ref = secrets.token_hex(4)
            log.exception("handling %s failed (ref %s)", inv.command, ref)
            await responder.send(Reply(
                f"Sorry, something went wrong on our side (ref {ref}). Nothing was charged.",
                ephemeral=True,
            ))

    async def history(
        self, platform: str, tenant: str, channel_id: str, limit: int = 50
    ) -> list[Reply]:
        replies = []
        for job in await self._store.jobs.history(platform, tenant, channel_id, limit):
            replies.append(await self.render_job(job, with_quota=False))
        return replies

    def image_path(self, sha256: str) -> Path | None:
        if not SHA_RE.fullmatch(sha256):
            return None
        folder = self._settings.data_dir / "images" / sha256[:2]
        for ext in ("png", "jpg", "webp"):
            path = folder / f"{sha256}.{ext}"
            if path.is_file():
                return path
        return None

    async def quota_badge(self, actor: Actor) -> str:
        return (await self._quotas.status(actor)).badge()

    # ------------------------------------------------------------------------- /imagine
    def _provider(self) -> tuple[str, Provider]:
        name = self._providers.default
        return name, self._providers.get(name)

    def _build_spec(
        self,
        parsed: grammar.ImagineRequest,
        *,
        kind: str,
        provider_name: str,
        provider: Provider,
        init_sha: str | None = None,
        init_ext: str | None = None,
        init_size: tuple[int, int] | None = None,
        strength: float | None = None,
        parent: tuple[str, int | None] | None = None,
        seed: int | None = None,
        n: int | None = None,
    ) -> JobSpec:
        caps = provider.capabilities
        native = parsed.style is not None and parsed.style in caps.native_styles
        prompt = parsed.prompt
        weighted = parsed.weighted_prompts
        if parsed.avatar or (parsed.style and not native):
            prompt = self._styles.apply(None if native else parsed.style, prompt,
                                        avatar=parsed.avatar)
            weighted = tuple(
                WeightedPrompt(self._styles.apply(None if native else parsed.style, w.text,
                                                  avatar=parsed.avatar), w.weight)
                if w.weight > 0 else w
                for w in weighted
            )
        seed_max = caps.seed_max or 4294967295
        chosen_seed = seed if seed is not None else parsed.seed
        if chosen_seed is None:
            chosen_seed = secrets.randbelow(seed_max + 1)
        width, height = init_size if init_size and not parsed.size_explicit else (
            parsed.width, parsed.height)
        req = GenerationRequest(
            prompt=prompt, negative_prompt=parsed.negative_prompt, weighted_prompts=weighted,
            n=n if n is not None else parsed.n, width=width, height=height, seed=chosen_seed,
            steps=parsed.steps, cfg=parsed.cfg, sampler=parsed.sampler,
            style=parsed.style if native else None, model=parsed.model,
            strength=strength if init_sha else None,
            init_image=b"" if init_sha else None,  # the real bytes are loaded by the runner
        )
        fitted = fit_request(req, caps, provider.label)
        req = replace(fitted.request, init_image=None)
        return JobSpec(
            kind=kind, request=req, provider=provider_name, init_sha=init_sha,
            init_ext=init_ext, parent_job_id=parent[0] if parent else None,
            parent_index=parent[1] if parent else None, notice=" ".join(fitted.notes),
            display=Display(prompt=parsed.prompt, style=parsed.style or "",
                            avatar=parsed.avatar, weighted=parsed.weighted_prompts),
        )

    async def _imagine(self, inv: Invocation, responder: Responder) -> None:
        result = grammar.parse(inv.text, self._limits)
        if isinstance(result, grammar.HelpRequest):
            await responder.send(Reply(result.text, ephemeral=True))
            return
        name, provider = self._provider()
        init_sha = init_ext = None
        init_size = None
        if inv.init_image is not None:
            if not provider.capabilities.img2img:  # before anything is stored or charged
                raise NotSupported(f"{provider.label} cannot work from an input image.")
            png = await images.normalize_input(inv.init_image, self._image_limits)
            stored = await images.store_generated(self._settings.data_dir, png,
                                                  {"source": "upload"}, self._image_limits)
            init_sha, init_ext = stored.sha256, stored.path.suffix.lstrip(".")
            init_size = (stored.width, stored.height)
        specs = [
            self._build_spec(
                r, kind="imagine", provider_name=name, provider=provider, init_sha=init_sha,
                init_ext=init_ext, init_size=init_size,
                strength=r.strength if r.strength is not None
                else self._settings.actions.refine_strength,
            )
            for r in result.requests
        ]
        if len(specs) > 1:
            # The cost is told before anything runs.
            await responder.send(Reply(
                f"Your prompt expands to {_plural(len(specs), 'job')} "
                f"({_plural(result.total_images, 'image')} from your quota; the cap is "
                f"{self._limits.max_permutations} jobs).",
                ephemeral=True,
            ))
        await self._submit(inv, responder, specs)

    async def _submit(
        self, inv: Invocation, responder: Responder, specs: Sequence[JobSpec]
    ) -> None:
        ids = await self._runner.submit(
            inv.actor, inv.channel_id, inv.thread_id, specs, interaction_id=inv.interaction_id
        )
        for job_id in ids:
            job = await self._runner.load(job_id)
            if job is None:
                continue
            try:
                ref = await responder.send(await self.render_job(job))
            except Exception:
                # Accepted and charged already: the result still reaches the channel through
                # the poster, so this must not become "nothing was charged".
                log.exception("could not show the status of job %s", job_id)
                continue
            if ref is not None:
                await self._store.execute(
                    "UPDATE jobs SET status_ref = ? WHERE id = ?", (ref, job_id)
                )
                # The job may have started while we posted; show its current state.
                if self._runner.position(job_id) is None:
                    await self.on_job_event(JobEvent(job_id))

    # -------------------------------------------------------------------------- actions
    async def _load_for(self, inv: Invocation) -> tuple[str, Job, int | None]:
        m = ACTION_RE.fullmatch(inv.action)
        if m is None:
            raise JobNotFound("That button is not one of ours, or it has expired.")
        verb, job_id, index = m.group(1), m.group(2), m.group(3)
        job = await self._runner.load(job_id)
        actor = inv.actor
        if job is None or job.deleted or (job.platform, job.tenant) != (actor.platform,
                                                                       actor.tenant):
            raise JobNotFound("That image is no longer available (it was deleted or expired).")
        return verb, job, int(index) if index is not None else None

    async def _collaborative(self, job: Job, inv: Invocation) -> bool:
        row = await self._store.fetchone(
            "SELECT collaborative FROM channels WHERE platform = ? AND tenant = ? "
            "AND channel_id = ?",
            (job.platform, job.tenant, job.channel_id),
        )
        if row is not None:
            return bool(row["collaborative"])
        if inv.channel_allows_collaboration is not None:
            return inv.channel_allows_collaboration
        return self._settings.actions.collaborative

    async def _check_may_continue(self, job: Job, inv: Invocation) -> None:
        actor = inv.actor
        if actor.user_id == job.owner_id or self.is_admin(actor):
            return
        if inv.channel_id == job.channel_id and await self._collaborative(job, inv):
            return
        raise NotAllowed(
            f"Only {job.owner_name} can continue this result here: this channel keeps results "
            "to their owner. (An admin can allow it with /admin collab on.)"
        )

    async def _image(self, job: Job, index: int | None) -> StoredJobImage:
        if job.state != "done":
            raise UserError("That job has no images yet.")
        imgs = await self._runner.load_images(job.id)
        if index is None or not 1 <= index <= len(imgs):
            raise JobNotFound(f"That job has images 1 to {len(imgs)}.")
        return imgs[index - 1]

    async def _action(self, inv: Invocation, responder: Responder) -> None:
        verb, job, index = await self._load_for(inv)
        if verb == "info":
            await responder.send(Reply(await self._info_text(job), ephemeral=True))
            return
        if verb == "cancel":
            if inv.actor.user_id != job.owner_id and not self.is_admin(inv.actor):
                raise NotAllowed("Only the person who asked for this, or an admin, can cancel it.")
            who = inv.actor.display_name or inv.actor.user_id
            if not await self._runner.cancel(
                    job.id, f"Cancelled by {who}. {_plural(job.n, 'image')} refunded."):
                raise UserError("That job has already started, so it can no longer be cancelled.")
            await responder.send(Reply(f"Cancelled; {_plural(job.n, 'image')} refunded.",
                                       ephemeral=True))
            return
        if verb == "delete":
            if inv.actor.user_id != job.owner_id and not self.is_admin(inv.actor):
                raise NotAllowed("Only the person who made this, or an admin, can delete it.")
            await self._store.execute("UPDATE jobs SET deleted = 1 WHERE id = ?", (job.id,))
            gone = Reply("This result was deleted.", job_id=job.id, state="deleted")
            poster = self._posters.get(job.platform)
            if poster is not None:
                for ref in dict.fromkeys(r for r in (job.status_ref, job.result_ref) if r):
                    await poster.update(self._target(job), ref, gone)
            await responder.send(Reply("Deleted.", ephemeral=True))
            return
        await self._check_may_continue(job, inv)
        name, provider = self._provider()
        base = self._reparse(job)
        if verb == "pick":
            img = await self._image(job, index)
            await responder.send(self._pick_reply(job, img))
            return
        if verb == "reroll":
            spec = self._build_spec(
                base, kind="reroll", provider_name=name, provider=provider,
                init_sha=job.request.init_sha, init_ext=job.request.init_ext,
                strength=job.request.strength, parent=(job.id, None),
                n=job.n, seed=secrets.randbelow(4294967296),
            )
            await self._submit(inv, responder, [spec])
            return
        img = await self._image(job, index)
        strength: float
        if verb == "refine":
            if "prompt" not in inv.fields:
                await responder.send(Reply(
                    f"Refine image {img.index}", ephemeral=True,
                    form=Form(
                        title=f"Refine image {img.index}", action=inv.action,
                        submit_label="Refine",
                        fields=(
                            FormField("prompt", "Prompt (flags allowed)", job.prompt),
                            FormField("strength", "Strength (0 keeps the image, 1 ignores it)",
                                      f"{self._settings.actions.refine_strength:g}",
                                      kind="number", min_value=0.0, max_value=1.0),
                        ),
                    ),
                ))
                return
            parsed = grammar.parse(inv.fields.get("prompt", ""), self._limits)
            if isinstance(parsed, grammar.HelpRequest):
                await responder.send(Reply(parsed.text, ephemeral=True))
                return
            refined = parsed.requests[0]
            strength = self._strength(inv.fields.get("strength"), refined.strength,
                                      self._settings.actions.refine_strength)
            n = refined.n if refined.n_explicit else job.n
            spec = self._build_spec(
                refined, kind="refine", provider_name=name, provider=provider,
                init_sha=img.sha256, init_ext=img.ext, init_size=(img.width, img.height),
                strength=strength, parent=(job.id, img.index), n=n,
            )
        else:  # vary
            spec = self._build_spec(
                base, kind="vary", provider_name=name, provider=provider,
                init_sha=img.sha256, init_ext=img.ext, init_size=(img.width, img.height),
                strength=self._settings.actions.vary_strength, parent=(job.id, img.index),
                n=job.n, seed=secrets.randbelow(4294967296),
            )
        await self._submit(inv, responder, [spec])

    @staticmethod
    def _strength(field: str | None, flag: float | None, default: float) -> float:
        """``--strength`` typed in the prompt wins over the form's slider, which always
        sends a value; then the slider; then the configured default."""
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

    def _reparse(self, job: Job) -> grammar.ImagineRequest:
        """The parent's parameters as a request, for reroll and vary."""
        r = job.request
        weighted = r.weighted_prompts
        display = r.shown_prompt
        style = r.display.style or None
        avatar = r.display.avatar
        if r.display.weighted:  # the user's own parts; _build_spec re-applies style
            weighted = r.display.weighted
        elif style or avatar:  # older jobs: re-apply from the user's own words
            weighted = tuple(w if w.weight <= 0 else WeightedPrompt(display, w.weight)
                             for w in weighted[:1]) + tuple(w for w in weighted[1:]
                                                           if w.weight <= 0)
        return grammar.ImagineRequest(
            prompt=display, weighted_prompts=weighted, negative_prompt=r.negative_prompt,
            n=job.n, width=r.width, height=r.height, size_explicit=True,
            seed=None, steps=r.steps, cfg=r.cfg, sampler=r.sampler, model=r.model,
            style=style, strength=r.strength, avatar=avatar,
        )

    # --------------------------------------------------------------------------- quota
    async def _quota_text(self, actor: Actor) -> str:
        st = await self._quotas.status(actor)
        if st.blocked is not None:
            return "You are blocked from generating images here" + (
                f": {st.blocked}" if st.blocked else ".")
        if st.exempt:
            return "You are an admin: your images are not counted against a quota."
        parts = []
        if st.daily_limit:
            left = st.daily_left
            hours = max(0.0, (st.resets_at.timestamp() - self._clock()) / 3600)
            parts.append(
                f"Today: {left} of {st.daily_limit} images left (resets at "
                f"{st.resets_at:%H:%M %Z}, in {hours:.0f} h)."
            )
        else:
            parts.append(f"Today: {st.daily_used} images, no daily limit.")
        if st.monthly_limit:
            parts.append(f"This month: {st.monthly_left} of {st.monthly_limit} left.")
        return " ".join(parts)

    async def _left_text(self, job: Job) -> str:
        actor = Actor(job.platform, job.tenant, job.owner_id, job.owner_name,
                      roles=job.request.payer_roles, is_admin=job.request.payer_admin)
        st = await self._quotas.status(actor)
        if st.exempt or st.left() is None:
            return ""
        return f"{job.owner_name} has {st.badge()}."

    # --------------------------------------------------------------------------- admin
    async def _admin(self, inv: Invocation, responder: Responder) -> None:
        if not self.is_admin(inv.actor):
            raise NotAllowed("Only admins can use /admin.")
        words = inv.text.split()
        if not words or words[0] == "help":
            await responder.send(Reply(ADMIN_USAGE, ephemeral=True))
            return
        verb, args = words[0].lower(), words[1:]
        a = inv.actor

        def who(token: str) -> str:
            uid = token.strip("<@!>").lstrip("@")
            if not uid:
                raise UserError("Name a user, e.g. /admin grant @alice 10")
            return uid

        def num(token: str, what: str) -> int:
            if not token.isdigit():
                raise UserError(f"{what} must be a whole number (got {token}).")
            return int(token)

        message: str
        if verb == "limit" and len(args) in (2, 3):
            uid = who(args[0])
            daily = num(args[1], "DAILY")
            monthly = num(args[2], "MONTHLY") if len(args) == 3 else None
            await self._quotas.set_limits(user_scope(a.platform, a.tenant, uid), daily, monthly)
            message = f"{uid}: daily limit {daily or 'unlimited'}" + (
                f", monthly {monthly or 'unlimited'}." if monthly is not None else ".")
        elif verb == "workspace-limit" and len(args) in (1, 2):
            daily = num(args[0], "DAILY")
            monthly = num(args[1], "MONTHLY") if len(args) == 2 else None
            await self._quotas.set_limits(workspace_scope(a.platform, a.tenant), daily, monthly)
            message = f"Workspace daily limit {daily or 'unlimited'}."
        elif verb == "grant" and len(args) == 2:
            uid, units = who(args[0]), num(args[1], "UNITS")
            await self._quotas.grant(user_scope(a.platform, a.tenant, uid), units)
            message = f"Granted {uid} {_plural(units, 'extra image')}."
        elif verb == "reset" and len(args) == 1:
            uid = who(args[0])
            await self._quotas.reset(user_scope(a.platform, a.tenant, uid))
            message = f"Reset {uid}'s usage for today and this month."
        elif verb == "block" and args:
            uid = who(args[0])
            await self._quotas.block(user_scope(a.platform, a.tenant, uid), " ".join(args[1:]))
            message = f"Blocked {uid}."
        elif verb == "unblock" and len(args) == 1:
            uid = who(args[0])
            await self._quotas.unblock(user_scope(a.platform, a.tenant, uid))
            message = f"Unblocked {uid}."
        elif verb == "collab" and len(args) == 1 and args[0].lower() in ("on", "off"):
            on = args[0].lower() == "on"
            await self._store.execute(
                "INSERT INTO channels (platform, tenant, channel_id, collaborative) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (platform, tenant, channel_id) "
                "DO UPDATE SET collaborative = excluded.collaborative",
                (a.platform, a.tenant, inv.channel_id, int(on)),
            )
            message = ("Anyone in this channel may now continue results." if on
                       else "Only a result's owner (and admins) may continue it here.")
        else:
            raise UserError("I did not understand that.\n" + ADMIN_USAGE)
        await self._store.execute(
            "INSERT INTO admin_log (actor, action, detail, created_at) VALUES (?, ?, ?, ?)",
            (a.key, verb, json.dumps(args), self._clock()),
        )
        await responder.send(Reply(message, ephemeral=True))

    # ------------------------------------------------------------------------ rendering
    def _file(self, sha: str, ext: str, width: int, height: int, kind: str, name: str) -> ImageFile:
        return ImageFile(
            path=image_path(self._settings.data_dir, sha, ext), filename=f"{name}.{ext}",
            width=width, height=height, kind="grid" if kind == "grid" else "image", sha256=sha,
        )

    def _notice(self, job: Job) -> str:
        notes = [job.notice] if job.notice else []
        if job.provider == "offline":
            notes.append(OFFLINE_NOTICE)
        return " ".join(notes)

    async def render_job(self, job: Job, *, with_quota: bool = True) -> Reply:
        prompt = job.prompt
        who = job.owner_name
        lead = {"imagine": "", "refine": "Refinement: ", "vary": "Variation: ",
                "reroll": "Reroll: "}[job.kind]
        common = {"job_id": job.id, "parent_job_id": job.parent_job_id, "state": job.state,
                  "notice": self._notice(job) or None}
        meta = {"owner": job.owner_id, "owner_name": who, "prompt": prompt,
                "provider": job.provider, "kind": job.kind}
        if job.parent_index is not None:
            meta["parent_index"] = str(job.parent_index)
        if job.state == "queued":
            pos = self._runner.position(job.id)
            return Reply(f"{lead}{prompt} - queued{f' #{pos} in line' if pos else ''} "
                         f"(asked by {who})", position=pos, meta=meta,
                         buttons=(Button("Cancel", f"cancel:{job.id}", "danger"),),
                         **common)  # type: ignore[arg-type]
        if job.state == "running":
            return Reply(f"{lead}{prompt} - generating {_plural(job.n, 'image')} "
                         f"(asked by {who})", progress=0.0, meta=meta, **common)  # type: ignore[arg-type]
        left = await self._left_text(job) if with_quota else ""
        if job.state == "done":
            imgs = await self._runner.load_images(job.id)
            grid = (self._file(job.grid_sha, job.grid_ext or "jpg", 0, 0, "grid", f"{job.id}-grid")
                    if job.grid_sha else None)
            buttons: list[Button] = []
            for img in imgs:
                buttons.append(Button(f"Pick {img.index}", f"pick:{job.id}:{img.index}",
                                      "primary"))
            if self._provider()[1].capabilities.img2img:  # no buttons that cannot work
                for img in imgs:
                    buttons.append(Button(f"Refine {img.index}",
                                          f"refine:{job.id}:{img.index}"))
                for img in imgs:
                    buttons.append(Button(f"Vary {img.index}", f"vary:{job.id}:{img.index}"))
            buttons += [Button("Reroll", f"reroll:{job.id}"), Button("Info", f"info:{job.id}"),
                        Button("Delete", f"delete:{job.id}", "danger")]
            known = [i.seed for i in imgs if i.seed is not None]
            seeds = f"; seeds {', '.join(map(str, known))}" if len(known) == len(imgs) else ""
            text = f"{lead}{prompt} (asked by {who}{seeds})"
            if left:
                text += f"\n{left}"
            return Reply(text, images=(grid,) if grid else (), buttons=tuple(buttons),
                         meta=meta, **common)  # type: ignore[arg-type]
        text = f"{lead}{prompt} - {job.error or 'failed'}"
        if left:
            text += f"\n{left}"
        return Reply(text, meta=meta, **common)  # type: ignore[arg-type]

    def _pick_reply(self, job: Job, img: StoredJobImage) -> Reply:
        f = self._file(img.sha256, img.ext, img.width, img.height, "image",
                       f"{job.id}-{img.index}")
        return Reply(
            f"Image {img.index} of \"{job.prompt}\" ("
            + (f"seed {img.seed}, " if img.seed is not None else "")
            + f"{img.width}x{img.height})",
            images=(f,),
            buttons=(
                (Button(f"Refine {img.index}", f"refine:{job.id}:{img.index}", "primary"),
                 Button(f"Vary {img.index}", f"vary:{job.id}:{img.index}"))
                if self._provider()[1].capabilities.img2img else ()
            ) + (Button("Info", f"info:{job.id}"),),
            parent_job_id=job.id, notice=self._notice(job) or None,
            meta={"owner": job.owner_id, "index": str(img.index)},
        )

    async def _info_text(self, job: Job) -> str:
        r = job.request
        imgs = await self._runner.load_images(job.id)
        label = self._providers.get(job.provider).label if job.provider in \
            self._providers.names() else job.provider
        lines = [
            f"Job {job.id} ({job.kind}, {job.state}) by {job.owner_name}",
            f"Prompt: {job.prompt}",
        ]
        if r.prompt != job.prompt:
            lines.append(f"Prompt sent: {r.prompt}")
        if len(r.weighted_prompts) > 1:
            lines.append("Weights: " + ", ".join(f"{w.text}::{w.weight:g}"
                                                 for w in r.weighted_prompts))
        for name, value in (("Negative", r.negative_prompt), ("Style", r.display.style),
                            ("Steps", r.steps), ("CFG", r.cfg), ("Sampler", r.sampler),
                            ("Strength", r.strength)):
            if value not in (None, ""):
                lines.append(f"{name}: {value}")
        lines.append(f"Size: {r.width}x{r.height}, images: {job.n}, base seed: {job.seed}")
        if imgs and all(i.seed is not None for i in imgs):
            lines.append("Seeds: " + ", ".join(f"{i.index}={i.seed}" for i in imgs))
        lines.append(f"Provider: {label}" + (f", model {job.model}" if job.model else ""))
        if job.parent_job_id:
            lines.append(f"Parent: job {job.parent_job_id}"
                         + (f" image {job.parent_index}" if job.parent_index else ""))
        if job.notice:
            lines.append(f"Notes: {job.notice}")
        return "\n".join(lines)

    # --------------------------------------------------------------------- job events
    def _target(self, job: Job) -> Target:
        return Target(job.platform, job.tenant, job.channel_id, job.thread_id, job.owner_id)

    async def _post(self, job: Job, reply: Reply, *, update: bool) -> None:
        poster = self._posters.get(job.platform)
        if poster is None:
            return
        if update:
            if job.status_ref:
                await poster.update(self._target(job), job.status_ref, reply)
            return
        try:
            ref = await poster.post(self._target(job), reply)
        except BaseException:
            if reply.state in FINAL_STATES:  # release the claim: deliver_pending retries it
                await asyncio.shield(self._store.execute(
                    "UPDATE jobs SET result_ref = NULL WHERE id = ? AND result_ref = ''",
                    (job.id,)))
            raise
        if ref is not None and reply.state in FINAL_STATES:
            await self._store.execute("UPDATE jobs SET result_ref = ? WHERE id = ?",
                                      (ref, job.id))

    async def on_job_event(self, event: JobEvent) -> None:
        job = await self._runner.load(event.job_id)
        if job is None or job.deleted:
            return
        reply = await self.render_job(job)
        if event.progress is not None and job.state == "running":
            reply = replace(reply, progress=event.progress)
        if event.position is not None and job.state == "queued":
            reply = replace(reply, position=event.position)
        # Results are posted as new ordinary messages (an interaction token may have expired
        # long ago); queued/running updates edit the status message.
        final = job.state in FINAL_STATES
        if not final:
            await self._post(job, reply, update=True)
            return
        verdict = {"done": "done, see below", "failed": "failed, see below",
                   "filtered": "removed by the content filter"}[job.state]
        status = replace(reply, text=f"{job.prompt} - {verdict}", images=(), buttons=())
        if job.platform not in self._posters:
            return
        # The result is posted once: the runner's final event and _submit's catch-up (the
        # status message was sent after the job had finished) may both get here.
        if not await self._store.execute(
                "UPDATE jobs SET result_ref = '' WHERE id = ? AND result_ref IS NULL", (job.id,)):
            if job.status_ref and job.result_ref and job.status_ref != job.result_ref:
                await self._post(job, status, update=True)  # a separate status message
            return
        if job.status_ref:
            # Settle the status message first, so it does not stay at "generating" above
            # the result.
            await self._post(job, status, update=True)
        await self._post(job, reply, update=False)

    async def deliver_pending(self, platform: str) -> None:
        """Post what finished while ``platform`` had no (working) poster: jobs resumed or
        settled at start run before the adapters are up."""
        rows = await self._store.fetchall(
            "SELECT id FROM jobs WHERE platform = ? AND state IN ('done', 'failed', 'filtered') "
            "AND result_ref IS NULL AND deleted = 0 ORDER BY created_at", (platform,))
        for row in rows:
            try:
                await self.on_job_event(JobEvent(row["id"]))
            except Exception:  # the platform is still not reachable: try again next time
                log.warning("could not deliver the result of job %s yet", row["id"],
                            exc_info=True)
                return

    async def on_alert(self, provider: str, error: ProviderError) -> None:
        key = f"{provider}:{type(error).__name__}"
        now = self._clock()
        async with self._store.transaction() as db:
            cur = await db.execute("SELECT last_at FROM alerts WHERE key = ?", (key,))
            row = await cur.fetchone()
            if row is not None and now - float(row["last_at"]) < ALERT_EVERY_S:
                return
            await db.execute(
                "INSERT INTO alerts (key, last_at) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET last_at = excluded.last_at", (key, now))
        log.error("ADMIN ALERT: provider %s: %s (%s). Jobs fail until an admin acts.",
                  provider, type(error).__name__, error.status)
        target = self._settings.bot.alert_channel
        if target.count(":") >= 2:
            platform, tenant, channel = target.split(":", 2)
            poster = self._posters.get(platform)
            if poster is not None:
                try:
                    await poster.post(Target(platform, tenant, channel), Reply(
                        f"Admin alert: the {provider} provider reports "
                        f"{type(error).__name__}: {error.user_message}"))
                except Exception:
                    log.exception("could not post the admin alert")


__all__ = ["Handler"]
