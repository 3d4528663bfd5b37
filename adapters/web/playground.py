"""The playground's state: the open pages, who is who, and Reply -> JSON delivery.

:class:`Playground` is the part every route shares: rendering a :class:`Reply` as the page's
JSON, showing it on the pages of its channel (:class:`~adapters.web.live.Hub`), the live quota
badge, who a request is (personal link or guest), and running an invocation through the core.
The routes build on it (:mod:`adapters.web.routes`, :mod:`adapters.web.server`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from aiohttp import web

from adapters.web import links
from adapters.web.access import (
    PLATFORM,
    TENANT,
    InputError,
    guest_actor,
    linked_actor,
    web_admins,
)
from adapters.web.live import Hub, Message
from adapters.web.posting import RequestResponder
from adapters.web.wire import (
    FINAL,
    ID_COOKIE,
    QUOTA_PUSH_S,
    _alt,
    _form_json,
    _image_json,
    hint_text,
)
from bot.core import Core, JobDetails
from bot.types import Actor, Invocation, Reply

log = logging.getLogger(__name__)


class Playground:
    """The open pages, who is who, and Reply -> JSON."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.web_settings = core.settings.web
        self.data_dir = core.settings.data_dir
        self._admin_ids = web_admins(core.settings)
        self._secret = links.load_or_create_secret(self.data_dir)
        # Linked names and admins' are nobody else's to type.
        self.reserved = links.ReservedNames(self.data_dir, extra=self._admin_ids)
        self.flags = tuple(core.flag_help())
        self.hint = hint_text(self.flags)
        self.hub = Hub()
        self._sockets: set[web.WebSocketResponse] = set()
        self._seq = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._actors: OrderedDict[str, Actor] = OrderedDict()  # for badge pushes
        self._quota_due: set[str] = set()
        self._quota_task: asyncio.Task[None] | None = None

    # -- rendering and delivery -------------------------------------------------------------

    def reply_json(
        self, reply: Reply, *, ref: str, owner: str = "", details: JobDetails | None = None
    ) -> Message:
        """A Reply as the page sees it. ``seq`` lets the page keep the newest state of a card
        when the same update arrives both in a POST answer and on the socket. With the job's
        ``details``, a finished card carries each image on its own and how the job ended."""
        prompt = str(reply.meta.get("prompt", ""))
        n = len(details.images) if details else 0
        return {
            "seq": next(self._seq),
            "ref": ref,
            # History replies come without a target; the core names the owner in meta.
            "owner": owner or str(reply.meta.get("owner", "")),
            "text": reply.text,
            "images": [
                _image_json(i, _alt(prompt) if i.kind == "grid" else _alt(prompt, 1))
                for i in reply.images
            ],
            "tiles": [
                {**_image_json(img, _alt(prompt, i, n)), "index": i}
                for i, img in enumerate(details.images, 1)
            ]
            if details
            else [],
            "buttons": [
                {"label": b.label, "action": b.action, "style": b.style} for b in reply.buttons
            ],
            "ephemeral": reply.ephemeral,
            "form": _form_json(reply.form) if reply.form else None,
            "job_id": reply.job_id,
            "parent_job_id": reply.parent_job_id,
            "state": reply.state,
            "outcome": details.outcome if details else reply.state,
            "position": reply.position,
            "progress": reply.progress,
            "notice": reply.notice,
            "meta": {str(k): str(v) for k, v in reply.meta.items()},
        }

    def new_ref(self, reply: Reply) -> str:
        """A card's reference: the job id for a job's card, one per picked image (so the Pick
        made live and the one from history are the same card), else a fresh one."""
        if reply.job_id:
            return reply.job_id
        index = str(reply.meta.get("index", ""))
        if reply.parent_job_id and index.isdigit():
            return f"pick:{reply.parent_job_id}:{index}"
        return f"m{next(self._message_ids)}"

    async def details(self, job_ids: Sequence[str]) -> Mapping[str, JobDetails]:
        if not job_ids:
            return {}
        return await self.core.job_details(PLATFORM, TENANT, job_ids)

    async def deliver(self, channel: str, reply: Reply, *, ref: str, owner: str) -> Message:
        """Show ``reply`` on the pages of ``channel`` (an ephemeral one: on ``owner``'s)."""
        if reply.state == "deleted":
            self.hub.remove(channel, ref)
            return {"seq": next(self._seq), "ref": ref, "state": "deleted", "removed": True}
        details = None
        if reply.job_id and reply.state in FINAL:
            details = (await self.details([reply.job_id])).get(reply.job_id)
        message = self.reply_json(reply, ref=ref, owner=owner, details=details)
        if reply.ephemeral:
            self.hub.send_to(
                channel, owner, f"p:{message['seq']}", {"op": "card", "reply": message}
            )
        else:
            self.hub.publish(channel, message)
        if reply.job_id and reply.state in FINAL:
            self.quota_changed(message["owner"])
        return message

    # -- the quota badge, live ---------------------------------------------------------------

    def seen(self, actor: Actor) -> None:
        self._actors[actor.user_id] = actor
        self._actors.move_to_end(actor.user_id)
        while len(self._actors) > 2000:
            self._actors.popitem(last=False)

    def quota_changed(self, user_id: str) -> None:
        """A job of ``user_id`` ended (charged or refunded): refresh the badge on their pages,
        once for a burst."""
        if not user_id or user_id not in self._actors:
            return
        self._quota_due.add(user_id)
        if self._quota_task is None or self._quota_task.done():
            self._quota_task = asyncio.get_running_loop().create_task(self._push_quotas())

    async def _push_quotas(self) -> None:
        await asyncio.sleep(QUOTA_PUSH_S)
        due, self._quota_due = self._quota_due, set()
        for user_id in due & self.hub.users_of():
            actor = self._actors.get(user_id)
            if actor is None:
                continue
            try:
                badge = await self.core.quota_badge(actor)
            except Exception:
                log.exception("web: quota badge of a playground user failed")
                continue
            self.hub.send_to_user(user_id, "quota", {"op": "quota", "quota": badge})

    # -- who is acting -----------------------------------------------------------------------

    def identity_of(self, request: web.Request) -> links.Identity | None:
        token = request.cookies.get(ID_COOKIE)
        if not token:
            return None
        try:
            return links.verify(self._secret, token)
        except links.LinkRefused:
            return None

    def actor_of(self, request: web.Request, name: object) -> Actor:
        identity = self.identity_of(request)
        if identity is not None:
            actor = linked_actor(
                identity.user_id,
                identity.display_name,
                admin=identity.admin,
                admins=self._admin_ids,
            )
        else:
            actor = guest_actor(str(name or ""), self.reserved)
        self.seen(actor)
        return actor

    def channel_of(self, value: object) -> str:
        channel = str(value or "")
        if channel not in self.web_settings.channels:
            raise InputError("Pick one of this playground's channels.")
        return channel

    async def run(self, inv: Invocation) -> web.Response:
        responder = RequestResponder(self, inv.channel_id, inv.actor.user_id)
        try:
            await self.core.handle(inv, responder)
        except Exception:
            # The core shows user errors itself; anything reaching here is a bug.
            ref = secrets.token_hex(4)
            log.exception("web: handling %s failed (ref %s)", inv.command, ref)
            return web.json_response(
                {"error": f"Sorry, something went wrong on our side (ref {ref})."}, status=500
            )
        finally:
            responder.closed = True
        # The quota badge is not part of the answer: under load its query would queue behind
        # everyone else's submissions and delay the acknowledgement. The page asks for it
        # separately (/api/quota) right after.
        return web.json_response({"replies": responder.messages})

    async def history_json(self, channel: str, seq: int) -> list[Message]:
        history = await self.core.history(PLATFORM, TENANT, channel)
        details = await self.details([r.job_id for r in history if r.job_id])
        out: list[Message] = []
        picks: list[Message] = []
        for reply in history:
            d = details.get(reply.job_id or "")
            out.append({**self.reply_json(reply, ref=self.new_ref(reply), details=d), "seq": seq})
            for pick in d.picks if d else ():
                picks.append({**self.reply_json(pick, ref=self.new_ref(pick)), "seq": seq})
        return out + picks  # picks after the cards they belong under


__all__ = ["Playground"]
