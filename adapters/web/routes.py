"""The playground's HTTP routes: the page, commands, uploads, gallery, lineage and images."""

from __future__ import annotations

import asyncio
import re
import time

from aiohttp import BodyPartReader, web

from adapters.web import links
from adapters.web.access import PLATFORM, TENANT, InputError, linked_actor
from adapters.web.live import Message
from adapters.web.playground import Playground
from adapters.web.wire import (
    ID_COOKIE,
    JOB_ID_RE,
    MAX_LINE_CHARS,
    SECURITY_HEADERS,
    SHA256_RE,
    STATIC_DIR,
    STATIC_FILES,
    UPLOAD_HEADER,
    _details_json,
    _flag_json,
    _gallery_json,
    _int,
    _is_file_within,
    _json_body,
    _page,
    _read_capped,
    parse_line,
)
from bot.types import Actor, Invocation, Reply


class Routes(Playground):
    """The request handlers (the socket and the access guard are :class:`WebPlayground`'s)."""

    # -- the page --------------------------------------------------------------------

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


__all__ = ["Routes"]
