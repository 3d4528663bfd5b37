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
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import WSCloseCode, WSMsgType, web

from adapters.web.access import (
    PLATFORM,
    InputError,
    check_bind,
    is_loopback,
    web_actor,
)
from adapters.web.live import Subscriber
from adapters.web.posting import ChannelPosterImpl, RequestResponder
from adapters.web.routes import Routes
from adapters.web.wire import (
    ID_COOKIE,
    MAX_BODY_BYTES,
    PUBLIC_PATHS,
    SECURITY_HEADERS,
    TOKEN_COOKIE,
    _same_secret,
    hint_text,
    parse_line,
)
from bot.core import Core, Ready, Settings
from bot.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "ID_COOKIE",
    "PLAYGROUND",
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


class WebPlayground(Routes):
    """The playground as served: its routes, the socket of each open page, the access guard."""

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

    async def _pump(self, ws: web.WebSocketResponse, sub: Subscriber, channel: str) -> None:
        try:
            replies = await self.history_json(channel, sub.joined_seq)
            await ws.send_json({"type": "history", "channel": channel, "replies": replies})
            while True:
                frame = await sub.take()
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
        self.hub.close()
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
