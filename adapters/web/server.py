"""The web playground adapter: aiohttp routes, a WebSocket per channel, and Reply -> JSON.

Like the chat adapters it only translates: a typed line becomes an :class:`Invocation`, a
button click or dialog submit an ``action`` invocation, and every :class:`Reply` the core
sends becomes a JSON message the page renders (always as text, never as HTML).

Routes::

    GET  /                 the page (plain HTML, CSS, JS; no build step)
    GET  /static/{name}    app.js, style.css
    GET  /healthz          {"status": "ok"}; never needs the access token (container checks)
    GET  /api/config       channels of this playground
    GET  /api/quota        ?name=: the quota badge of that user
    POST /api/command      {"name", "channel", "text"}: one typed line
    POST /api/action       {"name", "channel", "action", "fields"}: a button or a dialog submit
    GET  /ws               ?channel=&name=: history of the channel, then live replies
    GET  /images/{sha256}  a stored image, looked up by the core (?download=1 to save it)

Safety: a playground without an access token only answers requests addressed to a loopback
name (so a DNS-rebinding page cannot drive it) and :func:`serve` refuses to bind elsewhere;
with a token every route but /healthz requires it (cookie set by ``/?token=...``, or an
``Authorization: Bearer`` header). Browsers may not post or open sockets from other origins.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSCloseCode, WSMsgType, web

from adapters.web.access import (
    PLATFORM,
    TENANT,
    InputError,
    check_bind,
    is_loopback,
    web_actor,
    web_admins,
)
from bot.core import Core, Ready, Settings
from bot.errors import ConfigError
from bot.types import (
    Actor,
    FlagHelp,
    Form,
    ImageFile,
    Invocation,
    PostSteps,
    Reply,
    Target,
)

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
# An allowlist rather than a static directory route: nothing else in the package is served.
STATIC_FILES: Mapping[str, str] = {
    "app.js": "text/javascript",
    "style.css": "text/css",
}
TOKEN_COOKIE = "imagine_token"
MAX_BODY_BYTES = 256 * 1024
MAX_LINE_CHARS = 8000
# A socket that cannot keep up is dropped rather than buffering without bound; the page
# reconnects and reloads the channel's history.
SUBSCRIBER_QUEUE = 1000  # distinct cards waiting to be sent
SHA256_RE = re.compile(r"[0-9a-f]{64}")
COMMANDS = frozenset({"imagine", "quota", "admin"})
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

Message = dict[str, Any]


def parse_line(text: str) -> tuple[str, str] | None:
    """Translate a typed line to ``(command, rest)``; ``None`` for an unknown slash command.

    This is the adapter's only parsing: flags are the core grammar's business.
    """
    line = text.strip()
    if not line.startswith("/"):
        return "imagine", line
    head, _, rest = line.partition(" ")
    command = head[1:].lower()
    if command not in COMMANDS:
        return None
    return command, rest.strip()


def hint_text(flags: Sequence[FlagHelp]) -> str:
    """The one-line hint, from the grammar's flag table (the page draws the same table)."""
    shown = " ".join(f"[{f'{f.name} {f.value}'.strip()}]" for f in flags)
    return f"Type /imagine <prompt> {shown}, /imagine help for what each flag does, or /quota."


def _flag_json(flag: FlagHelp) -> Message:
    return {"name": flag.name, "value": flag.value, "help": flag.help, "example": flag.example}


def _image_json(image: ImageFile) -> Message:
    sha = image.sha256.lower()
    url = f"/images/{sha}" if SHA256_RE.fullmatch(sha) else None
    return {
        "url": url,
        "download_url": f"{url}?download=1" if url else None,
        "filename": image.filename,
        "width": image.width,
        "height": image.height,
        "kind": image.kind,
    }


def _form_json(form: Form) -> Message:
    return {
        "title": form.title,
        "action": form.action,
        "submit_label": form.submit_label,
        "fields": [
            {
                "name": f.name,
                "label": f.label,
                "value": f.value,
                "kind": f.kind,
                "min": f.min_value,
                "max": f.max_value,
            }
            for f in form.fields
        ],
    }


@dataclass(eq=False)
class _Subscriber:
    """One open page: what its socket has yet to send, and who is looking.

    Pending updates are keyed by job: when a page falls behind (a busy queue announces many
    positions and progress steps), only the newest state of each card is still sent, in the
    place of the first. Values are pre-encoded JSON, encoded once per update for all pages.
    """

    user_id: str
    pending: dict[str, str] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    overflowed: bool = False

    def put(self, key: str, encoded: str) -> bool:
        if key not in self.pending and len(self.pending) >= SUBSCRIBER_QUEUE:
            self.overflowed = True
            self.wake.set()
            return False
        self.pending[key] = encoded
        self.wake.set()
        return True

    async def take(self) -> str:
        while not self.pending:
            self.wake.clear()
            await self.wake.wait()
        key = next(iter(self.pending))
        return self.pending.pop(key)


class WebPlayground:
    """Holds the open sockets per channel and renders Replies for them."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.web_settings = core.settings.web
        self.data_dir = core.settings.data_dir
        self._admin_ids = web_admins(core.settings)
        self.flags = tuple(core.flag_help())
        self.hint = hint_text(self.flags)
        self._subscribers: dict[str, set[_Subscriber]] = {}
        self._sockets: set[web.WebSocketResponse] = set()
        self._seq = itertools.count(1)
        self._message_ids = itertools.count(1)

    # -- rendering and delivery -------------------------------------------------------------

    def reply_json(self, reply: Reply, *, ref: str, owner: str = "") -> Message:
        """A Reply as the page sees it. ``seq`` lets the page keep the newest state of a card
        when the same update arrives both in a POST answer and on the socket."""
        return {
            "seq": next(self._seq),
            "ref": ref,
            # History replies come without a target; the core names the owner in meta.
            "owner": owner or str(reply.meta.get("owner", "")),
            "text": reply.text,
            "images": [_image_json(i) for i in reply.images],
            "buttons": [
                {"label": b.label, "action": b.action, "style": b.style} for b in reply.buttons
            ],
            "ephemeral": reply.ephemeral,
            "form": _form_json(reply.form) if reply.form else None,
            "job_id": reply.job_id,
            "parent_job_id": reply.parent_job_id,
            "state": reply.state,
            "position": reply.position,
            "progress": reply.progress,
            "notice": reply.notice,
            "meta": {str(k): str(v) for k, v in reply.meta.items()},
        }

    def new_ref(self, reply: Reply) -> str:
        return reply.job_id or f"m{next(self._message_ids)}"

    def publish(self, channel: str, message: Message, *, only_user: str | None = None) -> None:
        encoded: str | None = None
        job_id = message.get("job_id")
        key = f"job:{job_id}" if job_id else f"seq:{message['seq']}"
        for sub in tuple(self._subscribers.get(channel, ())):
            if only_user is not None and (not only_user or sub.user_id != only_user):
                continue
            if encoded is None:
                encoded = json.dumps({"type": "reply", "reply": message})
            if not sub.put(key, encoded):
                self._subscribers[channel].discard(sub)

    def deliver(self, channel: str, reply: Reply, *, ref: str, owner: str) -> Message:
        message = self.reply_json(reply, ref=ref, owner=owner)
        self.publish(channel, message, only_user=owner if reply.ephemeral else None)
        return message

    # -- request helpers --------------------------------------------------------------------

    def channel_of(self, value: object) -> str:
        channel = str(value or "")
        if channel not in self.web_settings.channels:
            raise InputError("Pick one of this playground's channels.")
        return channel

    def actor_of(self, value: object) -> Actor:
        return web_actor(str(value or ""), self._admin_ids)

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

    # -- routes -----------------------------------------------------------------------------

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

    async def config(self, request: web.Request) -> web.Response:
        return web.json_response({
            "channels": list(self.web_settings.channels),
            "hint": self.hint,
            "flags": [_flag_json(f) for f in self.flags],
        })

    async def quota(self, request: web.Request) -> web.Response:
        actor = self.actor_of(request.query.get("name"))
        return web.json_response({"quota": await self.core.quota_badge(actor)})

    async def command(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        actor = self.actor_of(body.get("name"))
        channel = self.channel_of(body.get("channel"))
        text = str(body.get("text") or "")[:MAX_LINE_CHARS]
        parsed = parse_line(text)
        if parsed is None or not text.strip():
            hint = Reply(text=f"Unknown command. {self.hint}", ephemeral=True)
            message = self.reply_json(hint, ref=self.new_ref(hint), owner=actor.user_id)
            return web.json_response({"replies": [message]})
        command, rest = parsed
        return await self.run(
            Invocation(actor=actor, channel_id=channel, command=command, text=rest)
        )

    async def action(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        actor = self.actor_of(body.get("name"))
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

    async def image(self, request: web.Request) -> web.StreamResponse:
        sha = request.match_info["sha"].lower()
        # The core resolves the id; the URL never becomes a path here.
        path = self.core.image_path(sha) if SHA256_RE.fullmatch(sha) else None
        if path is None or not await asyncio.to_thread(_is_file_within, path, self.data_dir):
            raise web.HTTPNotFound()
        headers = {"Cache-Control": "private, max-age=31536000, immutable"}
        if request.query.get("download"):
            suffix = path.suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", path.suffix) else ".png"
            headers["Content-Disposition"] = f'attachment; filename="imagine-{sha[:12]}{suffix}"'
        return web.FileResponse(path, headers=headers)

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        channel = self.channel_of(request.query.get("channel"))
        try:
            user_id = self.actor_of(request.query.get("name")).user_id
        except InputError:
            user_id = ""  # watching without a name yet: no private replies to deliver
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=64 * 1024)
        await ws.prepare(request)
        self._sockets.add(ws)
        sub = _Subscriber(user_id=user_id)
        # Subscribe before reading history so nothing published meanwhile is lost; the queued
        # updates are sent after the history and are at least as new as it.
        self._subscribers.setdefault(channel, set()).add(sub)
        sender = asyncio.create_task(self._pump(ws, sub, channel))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT and msg.data == "ping":
                    await ws.send_str("pong")
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._subscribers.get(channel, set()).discard(sub)
            self._sockets.discard(ws)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        return ws

    async def _pump(self, ws: web.WebSocketResponse, sub: _Subscriber, channel: str) -> None:
        try:
            # Numbered before the read: every update published earlier is no newer than the
            # history, so a late POST answer (seq below this) cannot roll a card back; every
            # later one is applied on top of it.
            history_seq = next(self._seq)
            history = await self.core.history(PLATFORM, TENANT, channel)
            await ws.send_json(
                {
                    "type": "history",
                    "channel": channel,
                    "replies": [
                        {**self.reply_json(r, ref=self.new_ref(r)), "seq": history_seq}
                        for r in history
                    ],
                }
            )
            while True:
                encoded = await sub.take()
                if sub.overflowed:
                    break
                await ws.send_str(encoded)
        except (ConnectionError, RuntimeError):
            return  # the page went away mid-send
        except Exception:
            log.exception("web: socket for #%s failed", channel)
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER)

    async def on_shutdown(self, app: web.Application) -> None:
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
            if request.path != "/healthz":
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
            if presented is None or not _same_secret(presented, token):
                raise web.HTTPUnauthorized(
                    text="This playground needs its access token: open /?token=<token> once."
                )
        elif not is_loopback(request.url.host or ""):
            # Without a token we only serve loopback names: a page on another site that
            # rebinds its DNS name to 127.0.0.1 gets nothing.
            raise web.HTTPForbidden(text="This playground only answers on localhost.")
        origin = request.headers.get("Origin")
        changes_state = request.method != "GET" or request.path == "/ws"
        if origin and changes_state and urlsplit(origin).netloc.lower() != request.host.lower():
            raise web.HTTPForbidden(text="Cross-site requests are not allowed.")


class RequestResponder:
    """The Responder for one POST: ephemeral replies go back in its answer (or, once it has
    been answered, to that user's open pages); the rest also go to everyone in the channel."""

    def __init__(self, playground: WebPlayground, channel: str, user_id: str) -> None:
        self.playground = playground
        self.channel = channel
        self.user_id = user_id
        self.messages: list[Message] = []
        self.closed = False

    async def send(self, reply: Reply) -> str | None:
        ref = self.playground.new_ref(reply)
        await self._show(ref, reply)
        return ref

    async def edit(self, ref: str, reply: Reply) -> None:
        await self._show(ref, reply)

    async def _show(self, ref: str, reply: Reply) -> None:
        if reply.ephemeral and not self.closed:
            message = self.playground.reply_json(reply, ref=ref, owner=self.user_id)
        else:
            message = self.playground.deliver(self.channel, reply, ref=ref, owner=self.user_id)
        if not self.closed:
            self.messages.append(message)


class ChannelPosterImpl:
    """Registered with the core for platform "web": job updates long after the request."""

    def __init__(self, playground: WebPlayground) -> None:
        self.playground = playground

    async def post(
        self, target: Target, reply: Reply, steps: PostSteps | None = None
    ) -> str | None:
        ref = self.playground.new_ref(reply)
        self.playground.deliver(target.channel_id, reply, ref=ref, owner=target.user_id)
        return ref

    async def update(self, target: Target, ref: str, reply: Reply) -> None:
        self.playground.deliver(target.channel_id, reply, ref=ref, owner=target.user_id)

    async def delete(self, target: Target, ref: str) -> None:
        # A job's card has the job id as its ref; every open page drops it.
        gone = Reply("This result was deleted.", job_id=ref, state="deleted")
        self.playground.deliver(target.channel_id, gone, ref=ref, owner=target.user_id)


async def _json_body(request: web.Request) -> dict[str, Any]:
    # Requiring JSON also means a plain cross-site form cannot post here without a CORS
    # preflight, which this server never grants.
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="Send JSON.")
    try:
        body = json.loads(await request.text())
    except ValueError:
        raise InputError("That request was not valid JSON.") from None
    if not isinstance(body, dict):
        raise InputError("That request was not a JSON object.")
    return body


def _same_secret(offered: str, token: str) -> bool:
    return hmac.compare_digest(offered.encode(), token.encode())


def _is_file_within(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root.resolve()) and path.is_file()
    except OSError:
        return False


def create_web_app(core: Core) -> web.Application:
    """The playground's aiohttp application on a running core; registers its poster."""
    playground = WebPlayground(core)
    core.register_poster(PLATFORM, ChannelPosterImpl(playground))
    web_app = web.Application(middlewares=[playground.guard], client_max_size=MAX_BODY_BYTES)
    web_app.on_shutdown.append(playground.on_shutdown)
    web_app.router.add_get("/", playground.index)
    web_app.router.add_get("/static/{name}", playground.static)
    web_app.router.add_get("/healthz", playground.healthz)
    web_app.router.add_get("/favicon.ico", playground.favicon)
    web_app.router.add_get("/api/config", playground.config)
    web_app.router.add_get("/api/quota", playground.quota)
    web_app.router.add_post("/api/command", playground.command)
    web_app.router.add_post("/api/action", playground.action)
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
        return f"open {url}/?token=<WEB_ACCESS_TOKEN> once (a cookie keeps it){note}"
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
