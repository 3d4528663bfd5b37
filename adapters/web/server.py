"""The web playground adapter: aiohttp routes, a WebSocket per open page, and Reply -> JSON.

Like the chat adapters it only translates: a typed line becomes an :class:`Invocation` (with
an uploaded, dropped or pasted image as its ``init_image``: the core's one image gate decides),
a button click or dialog submit an ``action`` invocation, and every :class:`Reply` the core
sends becomes a JSON card the page renders (always as text, never as HTML). The gallery and
the lineage view are the core's (:meth:`Core.gallery`, :meth:`Core.lineage`), shown as JSON.

Routes::

    GET  /                 the page (plain HTML, CSS, JS; no build step)
    GET  /static/{name}    app.js, style.css
    GET  /healthz          {"status": "ok"}; never needs access (container checks)
    GET  /link?t=...       a personal link: binds this browser to its name (a cookie), or a
                           page saying why not (changed, expired)
    GET  /api/config       channels, the flag table, and who this browser is
    GET  /api/quota        ?name=: the quota badge of this browser's person
    POST /api/command      {"name", "channel", "text"}: one typed line
    POST /api/imagine      multipart: name, channel, text and an image: img2img from it
    POST /api/action       {"name", "channel", "action", "fields"}: a button or a dialog
    GET  /api/gallery      ?channel=&mine=1&q=&before=: finished images, newest first
    GET  /api/lineage      ?job=: a job's family
    GET  /ws               ?channel=&name=: the channel's history, then live updates
    GET  /images/{sha256}  a stored image the core still shows (?download=1 to save it)

Who is acting: a browser that opened a personal link is that person (cookie, checked on every
request; the ``name`` it sends is ignored). Any other browser is a guest with the name it typed
(the page suggests one), never an admin, and cannot take a linked name or an admin's.

Safety: without an access token the playground only answers requests addressed to a loopback
name (so a DNS-rebinding page cannot drive it) and :func:`serve` refuses to bind elsewhere;
with a token every route but /healthz and /link needs the token (a shared guest pass: cookie
set by ``/?token=...``, or ``Authorization: Bearer``) or a personal link. Browsers may not post
or open sockets from other origins; the image upload also needs a header a form cannot send.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import BodyPartReader, WSCloseCode, WSMsgType, web

from adapters.web import links
from adapters.web.access import (
    PLATFORM,
    TENANT,
    InputError,
    check_bind,
    guest_actor,
    is_loopback,
    linked_actor,
    web_actor,
    web_admins,
)
from adapters.web.live import Hub, Message, Subscriber
from adapters.web.posting import ChannelPosterImpl, RequestResponder
from adapters.web.wire import (
    FINAL,
    ID_COOKIE,
    JOB_ID_RE,
    MAX_BODY_BYTES,
    MAX_LINE_CHARS,
    PUBLIC_PATHS,
    QUOTA_PUSH_S,
    SECURITY_HEADERS,
    SHA256_RE,
    STATIC_DIR,
    STATIC_FILES,
    TOKEN_COOKIE,
    UPLOAD_HEADER,
    _alt,
    _details_json,
    _flag_json,
    _form_json,
    _gallery_json,
    _image_json,
    _int,
    _is_file_within,
    _json_body,
    _page,
    _read_capped,
    _same_secret,
    hint_text,
    parse_line,
)
from bot.core import Core, JobDetails, Ready, Settings
from bot.errors import ConfigError
from bot.types import (
    Actor,
    Invocation,
    Reply,
)

log = logging.getLogger(__name__)


__all__ = [
    "ChannelPosterImpl",
    "RequestResponder",
    "RunningServer",
    "Subscriber",
    "WebPlayground",
    "create_web_app",
    "hint_text",
    "open_hint",
    "parse_line",
    "serve",
    "start",
    "web_actor",
]


class WebPlayground:
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

    # -- routes: the page --------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(
            STATIC_DIR / "index.html",
            headers={"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-cache"},
        )

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        content_type = STATIC_FILES.get(name)
        if content_type is None:
            raise web.HTTPNotFound()
        return web.FileResponse(
            STATIC_DIR / name,
            headers={"Content-Type": f"{content_type}; charset=utf-8", "Cache-Control": "no-cache"},
        )

    async def favicon(self, request: web.Request) -> web.Response:
        return web.Response(status=204)  # spares the browser console a 404 on every load

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def link(self, request: web.Request) -> web.Response:
        """A personal link: check it, bind this browser to its name, go to the page."""
        try:
            identity = links.verify(self._secret, request.query.get("t", ""))
        except links.LinkRefused as exc:
            return _page("This link cannot be used", str(exc), status=403)
        found = web.HTTPSeeOther("/")
        # The signed token itself is the cookie: checked on every request, so a changed key
        # file or the expiry ends it. Lax: a link opened from a chat message is a navigation
        # from another site; Lax cookies still never go with cross-site POSTs or sockets.
        token = request.query["t"]
        found.set_cookie(
            ID_COOKIE,
            token,
            httponly=True,
            samesite="Lax",
            path="/",
            max_age=max(60, identity.expires_at - int(time.time())),
        )
        found.headers.update(SECURITY_HEADERS)
        raise found

    async def config(self, request: web.Request) -> web.Response:
        identity = self.identity_of(request)
        me: Message | None = None
        if identity is not None:
            actor = linked_actor(
                identity.user_id,
                identity.display_name,
                admin=identity.admin,
                admins=self._admin_ids,
            )
            me = {
                "name": actor.display_name,
                "user_id": actor.user_id,
                "admin": actor.is_admin,
                "expires_at": identity.expires_at,
            }
        return web.json_response(
            {
                "channels": list(self.web_settings.channels),
                "hint": self.hint,
                "flags": [_flag_json(f) for f in self.flags],
                "linked": me,
                "max_upload_bytes": self.core.settings.images.max_input_bytes,
            }
        )

    async def quota(self, request: web.Request) -> web.Response:
        actor = self.actor_of(request, request.query.get("name"))
        return web.json_response({"quota": await self.core.quota_badge(actor)})

    # -- routes: commands --------------------------------------------------------------------

    async def command(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        actor = self.actor_of(request, body.get("name"))
        channel = self.channel_of(body.get("channel"))
        text = str(body.get("text") or "")[:MAX_LINE_CHARS]
        return await self._line(actor, channel, text, None)

    async def _line(
        self, actor: Actor, channel: str, text: str, init_image: bytes | None
    ) -> web.Response:
        parsed = parse_line(text)
        if parsed is None or not text.strip():
            hint = Reply(text=self.hint, ephemeral=True)
            message = self.reply_json(hint, ref=self.new_ref(hint), owner=actor.user_id)
            return web.json_response({"replies": [message]})
        command, rest = parsed
        if init_image is not None and command != "imagine":
            raise InputError("An image goes with /imagine: describe what to make of it.")
        return await self.run(
            Invocation(
                actor=actor, channel_id=channel, command=command, text=rest, init_image=init_image
            )
        )

    async def imagine_image(self, request: web.Request) -> web.Response:
        """An /imagine with an image (uploaded, dropped or pasted): the core's image gate
        checks and cleans it, as it does for Discord and Slack attachments."""
        if request.headers.get(UPLOAD_HEADER) != "1":
            raise web.HTTPForbidden(text="Uploads come from the playground's page.")
        if request.content_type != "multipart/form-data":
            raise web.HTTPUnsupportedMediaType(text="Send the image as multipart/form-data.")
        limit = self.core.settings.images.max_input_bytes
        fields: dict[str, str] = {}
        image: bytes | None = None
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise InputError("That upload was not understood.")
            if part.name == "image":
                image = await _read_capped(
                    part, limit, f"That image is larger than {limit // (1024 * 1024)} MB."
                )
            elif part.name in ("name", "channel", "text"):
                raw = await _read_capped(part, MAX_LINE_CHARS * 4, "That line is too long.")
                fields[part.name] = raw.decode("utf-8", "replace")
            else:
                await part.release()
        if not image:
            raise InputError("Attach an image (PNG, JPEG or WEBP).")
        actor = self.actor_of(request, fields.get("name"))
        channel = self.channel_of(fields.get("channel"))
        text = fields.get("text", "")[:MAX_LINE_CHARS]
        if not text.strip():
            raise InputError("Describe what to make of the image, e.g. 'as a watercolor'.")
        return await self._line(actor, channel, text, image)

    async def action(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        actor = self.actor_of(request, body.get("name"))
        channel = self.channel_of(body.get("channel"))
        action = str(body.get("action") or "")
        raw_fields = body.get("fields") or {}
        if not action or len(action) > 255 or not isinstance(raw_fields, dict):
            raise InputError("That button is not valid.")
        fields = {str(k): str(v) for k, v in raw_fields.items()}
        return await self.run(
            Invocation(
                actor=actor, channel_id=channel, command="action", action=action, fields=fields
            )
        )

    # -- routes: gallery and lineage ---------------------------------------------------------

    async def gallery(self, request: web.Request) -> web.Response:
        q = request.query
        channel = self.channel_of(q.get("channel")) if q.get("channel") else None
        owner = self.actor_of(request, q.get("name")).user_id if q.get("mine") else None
        if channel is None and owner is None:
            raise InputError("Ask for a channel's images or your own.")
        page = await self.core.gallery(
            PLATFORM,
            TENANT,
            channel_id=channel,
            owner_id=owner,
            query=q.get("q", "")[:200],
            before=q.get("before") or None,
            limit=_int(q.get("limit"), 30, 1, 60),
        )
        return web.json_response(
            {"items": [_gallery_json(i) for i in page.items], "next": page.next}
        )

    async def lineage(self, request: web.Request) -> web.Response:
        job_id = request.query.get("job", "")
        tree = (
            await self.core.lineage(PLATFORM, TENANT, job_id)
            if JOB_ID_RE.fullmatch(job_id)
            else None
        )
        if tree is None:
            raise web.HTTPNotFound(text="No such job here.")
        # Only this playground's channels are shown; a node elsewhere keeps its place.
        return web.json_response(
            {
                "root": tree.root_id,
                "focus": tree.focus_id,
                "truncated": tree.truncated,
                "nodes": [_details_json(n) for n in tree.nodes],
            }
        )

    async def image(self, request: web.Request) -> web.StreamResponse:
        sha = request.match_info["sha"].lower()
        # The core resolves the id (None once no live job shows it); the URL never becomes a
        # path here.
        path = self.core.image_path(sha) if SHA256_RE.fullmatch(sha) else None
        if path is None or not await asyncio.to_thread(_is_file_within, path, self.data_dir):
            raise web.HTTPNotFound()
        # Revalidated on every use (a cheap 304): a deleted job's image must stop showing,
        # even from this browser's cache.
        headers = {"Cache-Control": "private, no-cache"}
        if request.query.get("download"):
            suffix = path.suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", path.suffix) else ".png"
            headers["Content-Disposition"] = f'attachment; filename="imagine-{sha[:12]}{suffix}"'
        return web.FileResponse(path, headers=headers)

    # -- the socket --------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        channel = self.channel_of(request.query.get("channel"))
        try:
            user_id = self.actor_of(request, request.query.get("name")).user_id
        except InputError:
            user_id = ""  # watching without a usable name yet: no private replies to deliver
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=64 * 1024)
        await ws.prepare(request)
        self._sockets.add(ws)
        # Subscribe before reading history so nothing published meanwhile is lost; the queued
        # updates are sent after the history and are at least as new as it. Numbered before
        # the read: every update published earlier is no newer than the history, so a late
        # POST answer (seq below this) cannot roll a card back.
        sub = Subscriber(user_id=user_id, joined_seq=next(self._seq))
        self.hub.subscribe(channel, sub)
        sender = asyncio.create_task(self._pump(ws, sub, channel))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT and msg.data == "ping":
                    await ws.send_str("pong")
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self.hub.unsubscribe(channel, sub)
            self._sockets.discard(ws)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        return ws

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

    async def _pump(self, ws: web.WebSocketResponse, sub: Subscriber, channel: str) -> None:
        try:
            replies = await self.history_json(channel, sub.joined_seq)
            await ws.send_json({"type": "history", "channel": channel, "replies": replies})
            while True:
                frame = await sub.take(self.hub.flush_s())
                if frame is None:
                    break
                await ws.send_str(frame)
        except (ConnectionError, RuntimeError):
            return  # the page went away mid-send
        except Exception:
            log.exception("web: socket for #%s failed", channel)
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER)

    async def on_shutdown(self, app: web.Application) -> None:
        if self._quota_task is not None:
            self._quota_task.cancel()
        for ws in tuple(self._sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    # -- middleware -------------------------------------------------------------------------

    @web.middleware
    async def guard(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        try:
            if request.path not in PUBLIC_PATHS:
                self._check_access(request)
            response = await handler(request)
        except InputError as exc:
            response = web.json_response({"error": str(exc)}, status=400)
        except web.HTTPException as exc:
            exc.headers.update(SECURITY_HEADERS)
            raise
        if not response.prepared:
            response.headers.update(SECURITY_HEADERS)
        return response

    def _check_access(self, request: web.Request) -> None:
        token = self.web_settings.access_token
        linked = self.identity_of(request) is not None
        if token:
            offered = request.query.get("token")
            if offered is not None and request.path == "/" and request.method == "GET":
                if not _same_secret(offered, token):
                    raise web.HTTPUnauthorized(text="That access token is not valid.")
                # Move the token out of the address bar (and history) into a cookie.
                found = web.HTTPSeeOther("/")
                # Lax, not Strict: a Strict cookie is withheld from every navigation that starts
                # on another site (the link in a chat message), so the page answered 401. Lax is
                # still never sent on cross-site POSTs or sockets, and the Origin check below
                # refuses those anyway.
                found.set_cookie(
                    TOKEN_COOKIE, token, httponly=True, samesite="Lax", max_age=30 * 86400
                )
                raise found
            auth = request.headers.get("Authorization", "")
            presented = (
                auth[7:] if auth.startswith("Bearer ") else request.cookies.get(TOKEN_COOKIE)
            )
            if not linked and (presented is None or not _same_secret(presented, token)):
                # Worded as before personal links existed: scripts/docker-smoke.sh reads it.
                # The README tells of personal links (imagine-bot web-link NAME).
                raise web.HTTPUnauthorized(
                    text="This playground needs its access token: open /?token=<token> once."
                )
        elif not linked and not is_loopback(request.url.host or ""):
            # Without a token we only serve loopback names: a page on another site that
            # rebinds its DNS name to 127.0.0.1 gets nothing (and has no cookie of ours).
            raise web.HTTPForbidden(text="This playground only answers on localhost.")
        origin = request.headers.get("Origin")
        changes_state = request.method != "GET" or request.path == "/ws"
        if origin and changes_state and urlsplit(origin).netloc.lower() != request.host.lower():
            raise web.HTTPForbidden(text="Cross-site requests are not allowed.")


PLAYGROUND = web.AppKey("playground", WebPlayground)


def create_web_app(core: Core) -> web.Application:
    """The playground's aiohttp application on a running core; registers its poster."""
    playground = WebPlayground(core)
    core.register_poster(PLATFORM, ChannelPosterImpl(playground))
    web_app = web.Application(middlewares=[playground.guard], client_max_size=MAX_BODY_BYTES)
    web_app[PLAYGROUND] = playground
    web_app.on_shutdown.append(playground.on_shutdown)
    web_app.router.add_get("/", playground.index)
    web_app.router.add_get("/static/{name}", playground.static)
    web_app.router.add_get("/healthz", playground.healthz)
    web_app.router.add_get("/favicon.ico", playground.favicon)
    web_app.router.add_get("/link", playground.link)
    web_app.router.add_get("/api/config", playground.config)
    web_app.router.add_get("/api/quota", playground.quota)
    web_app.router.add_post("/api/command", playground.command)
    web_app.router.add_post("/api/imagine", playground.imagine_image)
    web_app.router.add_post("/api/action", playground.action)
    web_app.router.add_get("/api/gallery", playground.gallery)
    web_app.router.add_get("/api/lineage", playground.lineage)
    web_app.router.add_get("/ws", playground.websocket)
    web_app.router.add_get("/images/{sha}", playground.image)
    return web_app


@dataclass
class RunningServer:
    """A started playground: ``url`` has the real port when 0 was asked for."""

    runner: web.AppRunner
    url: str
    port: int

    async def close(self) -> None:
        await self.runner.cleanup()


async def start(core: Core, host: str, port: int) -> RunningServer:
    """Bind and start the playground (used by :func:`serve`, tests and the benchmark)."""
    check_bind(host, core.settings.web.access_token)
    runner = web.AppRunner(create_web_app(core), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    # A wider accept backlog than the default 128: a burst of people pressing Enter at once
    # must not wait out a dropped SYN (a one-second client retransmit).
    site = web.TCPSite(runner, host, port, backlog=1024)
    try:
        await site.start()
    except OSError as exc:  # in use, a privileged port, an address this machine lacks
        await runner.cleanup()
        raise ConfigError(
            f"The web playground cannot listen on {host}:{port} ({exc.strerror}). Set "
            "web.host / web.port (or serve --host / --port), or stop what holds it."
        ) from None
    bound = runner.addresses[0][1] if runner.addresses else port
    shown = f"[{host}]" if ":" in host else host
    return RunningServer(runner=runner, url=f"http://{shown}:{bound}", port=bound)


def open_hint(server: RunningServer, host: str, access_token: str | None) -> str:
    """The line ``serve`` shows the operator: where to open the playground. With a token, the
    address says where it goes (``/?token=...``) without ever showing the token itself."""
    url = server.url
    note = ""
    if host.strip("[]") in ("0.0.0.0", "::", ""):
        url = f"http://localhost:{server.port}"
        note = " (listening on every address)"
    if access_token:
        return (
            f"open {url}/?token=<WEB_ACCESS_TOKEN> once for a guest (a cookie keeps it), "
            f"or a personal link from `imagine-bot web-link NAME`{note}"
        )
    return f"open {url}/{note}"


async def serve(core: Core, settings: Settings, ready: Ready) -> None:
    """Serve the playground on ``web.host``:``web.port`` until cancelled."""
    host, port = settings.web.host, settings.web.port
    server = await start(core, host, port)
    try:
        ready(open_hint(server, host, settings.web.access_token))
        await asyncio.Event().wait()
    finally:
        await server.close()
