"""The one command handler: every surface (Discord, Slack, web, CLI) comes through here.

``handle`` routes an :class:`~bot.types.Invocation` to the code for its command and draws the
two tiers of errors:

- a :class:`~bot.errors.UserError` (or a :class:`~bot.providers.base.ProviderError` raised by
  a capability check before anything was charged) becomes an ephemeral reply with its message;
- anything else is logged with a reference id, and the user gets a short apology with that id.
  ``str(exc)`` of an unexpected error is never shown.

Where things are: ``/imagine`` in :mod:`bot.imagine`, buttons in :mod:`bot.actions` (the verb
table), ``/admin`` in :mod:`bot.admin`, permissions in :mod:`bot.access`, what a message looks
like in :mod:`bot.render`, posting it in :mod:`bot.delivery`.
"""

from __future__ import annotations

import difflib
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from bot import admin, confirm, render, team
from bot.access import Access
from bot.actions import VerbTable, default_table
from bot.config import Settings
from bot.context import Context
from bot.delivery import Delivery
from bot.errors import UserError
from bot.events import JobEvent
from bot.grammar import GrammarLimits
from bot.imagine import imagine
from bot.jobs import Job, JobRunner
from bot.providers.base import ProviderError
from bot.providers.hub import ProviderHub
from bot.quotas import Quotas
from bot.storage.protocols import Storage
from bot.styles import StyleBook
from bot.types import ACTION_RE, Action, Actor, ChannelPoster, Invocation, Reply, Responder

log = logging.getLogger(__name__)

__all__ = ["ACTION_RE", "Handler"]  # ACTION_RE: kept for code that imported it from here

SHA_RE = re.compile(r"[0-9a-f]{64}")
Route = Callable[[Invocation, Responder], Awaitable[None]]


class Handler:
    def __init__(
        self,
        settings: Settings,
        store: Storage,
        quotas: Quotas,
        runner: JobRunner,
        providers: ProviderHub,
        styles: StyleBook,
        *,
        access: Access | None = None,
        verbs: VerbTable | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ctx = Context(
            settings=settings,
            store=store,
            quotas=quotas,
            runner=runner,
            providers=providers,
            styles=styles,
            access=access or Access(settings, store.channels),
            verbs=verbs or default_table(),
            clock=clock,
        )
        self.delivery = Delivery(self.ctx)
        self._routes: Mapping[str, Route] = {
            "imagine": lambda inv, r: imagine(self.ctx, self.delivery, inv, r),
            "action": self._press,
            "admin": lambda inv, r: admin.run(self.ctx, inv, r),
            "quota": self._quota,
        }

    # ------------------------------------------------------------------ adapter-facing API
    @property
    def verbs(self) -> VerbTable:
        return self.ctx.verbs

    @property
    def limits(self) -> GrammarLimits:
        return self.ctx.limits

    def is_admin(self, actor: Actor) -> bool:
        return self.ctx.access.is_admin(actor)

    async def handle(self, inv: Invocation, responder: Responder) -> None:
        try:
            route = self._routes.get(inv.command)
            if route is None or (inv.command == "action" and not inv.action):
                raise UserError(unknown_command(inv.command))
            await route(inv, responder)
        except (UserError, ProviderError) as exc:
            await responder.send(Reply(exc.message, ephemeral=True))
        except Exception:
            ref = secrets.token_hex(4)
            log.exception("handling %s failed (ref %s)", inv.command, ref)
            await responder.send(
                Reply(
                    f"Sorry, something went wrong on our side (ref {ref}). Nothing was charged.",
                    ephemeral=True,
                )
            )

    async def _press(self, inv: Invocation, responder: Responder) -> None:
        action = Action.decode(inv.action)
        if action is not None and action.verb in confirm.VERBS:
            await confirm.press(self.ctx, self.delivery, inv, responder, action)
        elif not await team.press(self.ctx, inv, responder):  # the settings form: no job
            await self.ctx.verbs.press(self.ctx, self.delivery, inv, responder)

    async def _quota(self, inv: Invocation, responder: Responder) -> None:
        st = await self.ctx.quotas.status(inv.actor)
        await responder.send(Reply(render.quota_text(st, self.ctx.clock()), ephemeral=True))

    async def history(
        self, platform: str, tenant: str, channel_id: str, limit: int = 50
    ) -> list[Reply]:
        jobs = await self.ctx.store.jobs.history(platform, tenant, channel_id, limit)
        return [await self.ctx.render(job, with_quota=False) for job in jobs]

    def image_path(self, sha256: str) -> Path | None:
        if not SHA_RE.fullmatch(sha256):
            return None
        folder = self.ctx.settings.data_dir / "images" / sha256[:2]
        for ext in ("png", "jpg", "webp"):
            path = folder / f"{sha256}.{ext}"
            if path.is_file():
                return path
        return None

    async def quota_badge(self, actor: Actor) -> str:
        return (await self.ctx.quotas.status(actor)).badge()

    async def render_job(self, job: Job, *, with_quota: bool = True) -> Reply:
        return await self.ctx.render(job, with_quota=with_quota)

    # ------------------------------------------------------- delivery (wired by bot.app)
    def register_poster(self, platform: str, poster: ChannelPoster) -> None:
        self.delivery.register_poster(platform, poster)

    async def deliver_pending(self, platform: str) -> None:
        await self.delivery.deliver_pending(platform)

    async def on_job_event(self, event: JobEvent) -> None:
        await self.delivery.on_job_event(event)

    async def on_alert(self, provider: str, error: ProviderError) -> None:
        await self.delivery.on_alert(provider, error)

    async def aclose(self) -> None:
        await self.delivery.aclose()


# The commands a person types (a button press arrives as "action").
TYPED_COMMANDS = ("imagine", "quota", "admin")


def unknown_command(command: str) -> str:
    """``Unknown command /imagin. Did you mean /imagine? ...``"""
    shown = "/" + command.lstrip("/")[:40]
    close = difflib.get_close_matches(command.lstrip("/").lower(), TYPED_COMMANDS, n=1, cutoff=0.7)
    hint = f" Did you mean /{close[0]}?" if close else ""
    return f"Unknown command {shown}.{hint} Try /imagine help."
