"""The Slack adapter: bolt listeners -> :class:`Invocation`, :class:`Reply` -> Web API calls.

Flow of one slash command::

    Slack --signed POST--> bolt (RequestVerification, auth.test) --> listener
        ack()                                   # first, inside Slack's 3 s window
        users.info (cached 5 min)               # is the user a workspace admin/owner?
        core.handle(Invocation, responder)      # the core decides everything
            responder.send(Reply)               # chat.postMessage / postEphemeral / views.open
    later, the job runner -> core -> SlackPoster.post/update (files_upload_v2, chat.update)

Only translation lives here: no SQL, no provider calls, no quota rules. Buttons carry the
core's ``verb:job_id:index`` as both ``action_id`` and ``value``; a modal carries its action
and its channel in ``private_metadata``. A retried delivery reuses the payload's
``trigger_id`` as the invocation's idempotency key, so the core accepts it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.render import (
    MODAL_CALLBACK_ID,
    FormContext,
    PostedFile,
    fallback_text,
    modal_view,
    reply_blocks,
    view_fields,
)
from bot.core import Core, Ready, Settings
from bot.errors import ConfigError, DeliveryError
from bot.types import ACTION_RE, Actor, ImageFile, Invocation, PostSteps, Reply, Target

log = logging.getLogger(__name__)

PLATFORM = "slack"
EVENTS_PATH = "/slack/events"
DEFAULT_PORT = 3000
ADMIN_TTL_S = 300.0  # Slack admins change rarely; five minutes bounds a revoked admin's reach
ADMIN_CACHE_MAX = 10_000
# The core's one button codec, anchored: bolt matches a pattern with re.search. Anything else
# is not ours and gets bolt's default 404 instead of reaching the core.
ACTION_ID_RE = re.compile(rf"\A(?:{ACTION_RE.pattern})\Z")
COMMANDS: Mapping[str, str] = {
    "/imagine": "imagine",
    "/imagine-quota": "quota",
    "/imagine-admin": "admin",
}

Respond = Callable[..., Awaitable[Any]]


def _api_url(env: Mapping[str, str]) -> str | None:
    url = (env.get("SLACK_API_URL") or "").strip()
    if not url:
        return None
    # slack_sdk joins method names with urljoin: without the trailing slash a path prefix
    # such as /api would be replaced rather than extended.
    return url if url.endswith("/") else url + "/"


def make_client(
    settings: Settings, *, session: aiohttp.ClientSession | None = None
) -> AsyncWebClient:
    """The Web API client. With ``session`` every call reuses its connections: without one,
    slack_sdk opens a new HTTP session (a new TCP and TLS handshake) for every call, which was
    most of the bot's CPU per job under load (bench/load.py --slack-session)."""
    token = settings.secret("SLACK_BOT_TOKEN")
    if not token:
        raise ConfigError("SLACK_BOT_TOKEN is not set")
    base = _api_url(settings.env)
    client = (
        AsyncWebClient(token=token, base_url=base, session=session)
        if base
        else AsyncWebClient(token=token, session=session)
    )
    # Slack answers bursts with 429 + Retry-After; the SDK's handler waits and retries.
    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
    return client


def _slack_error(exc: SlackApiError) -> str:
    """The API's error code only: never the request, which may hold user text."""
    try:
        return str(exc.response.get("error") or "unknown")
    except Exception:
        return "unknown"


# ------------------------------------------------------------------------------ admins
class AdminCache:
    """``users.info`` -> is the user a workspace admin or owner? Cached, fail closed."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        ttl: float = ADMIN_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[bool, float]] = {}

    async def is_admin(self, team_id: str, user_id: str) -> bool:
        key = (team_id, user_id)
        now = self._clock()
        hit = self._entries.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        try:
            resp = await self._client.users_info(user=user_id)
        except SlackApiError as exc:
            log.warning(
                "users.info failed (%s); treating the user as not an admin", _slack_error(exc)
            )
            return False
        except Exception as exc:  # network, timeout, a malformed answer: all fail closed
            log.warning(
                "users.info failed (%s); treating the user as not an admin", type(exc).__name__
            )
            return False
        user = resp.get("user") or {}
        flag = bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))
        if len(self._entries) >= ADMIN_CACHE_MAX:
            self._entries = {k: v for k, v in self._entries.items() if v[1] > now}
            if len(self._entries) >= ADMIN_CACHE_MAX:
                self._entries.clear()
        self._entries[key] = (flag, now + self._ttl)
        return flag


# ------------------------------------------------------------------------------ posting
class SlackPoster:
    """The core's :class:`~bot.types.ChannelPoster` for Slack: ordinary channel messages,
    so a result lands however long the job waited (a ``response_url`` dies after 30 min)."""

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client

    async def post(
        self, target: Target, reply: Reply, steps: PostSteps | None = None
    ) -> str | None:
        if reply.ephemeral and target.user_id:
            with _delivery_errors("chat.postEphemeral"):
                await self._client.chat_postEphemeral(
                    channel=target.channel_id,
                    user=target.user_id,
                    thread_ts=target.thread_id,
                    text=fallback_text(reply),
                    blocks=reply_blocks(reply),
                )
            return None  # an ephemeral message cannot be updated with chat.update
        files = await self._files(target, reply, steps)
        ids = ",".join(f.file_id for f in files)
        if steps is not None:
            found = await self._already_posted(target, steps)
            if found is not None:
                return _ref(found, ids)
            await steps.record("posting", f"{time.time() - 5:.6f}")
        with _delivery_errors("chat.postMessage"):
            resp = await self._client.chat_postMessage(
                channel=target.channel_id,
                thread_ts=target.thread_id,
                text=fallback_text(reply),
                blocks=reply_blocks(reply, files),
                unfurl_links=False,
                unfurl_media=False,
                metadata=(
                    {"event_type": METADATA_EVENT, "event_payload": {"key": steps.key}}
                    if steps is not None
                    else None
                ),
            )
        ts = resp.get("ts")
        return _ref(str(ts), ids) if ts else None

    async def update(self, target: Target, ref: str, reply: Reply) -> None:
        with _delivery_errors("chat.update"):
            await self._client.chat_update(
                channel=target.channel_id,
                ts=_ts(ref),
                text=fallback_text(reply),
                blocks=reply_blocks(reply),
            )

    async def delete(self, target: Target, ref: str) -> None:
        """The message, then the bot's own uploads shown in it (``files.delete``)."""
        ts, _, ids = ref.partition("|")
        if ts:
            with _delivery_errors("chat.delete", gone=("message_not_found",)):
                await self._client.chat_delete(channel=target.channel_id, ts=ts)
        for file_id in filter(None, ids.split(",")):
            with _delivery_errors("files.delete", gone=("file_not_found", "file_deleted")):
                await self._client.files_delete(file=file_id)

    async def _already_posted(self, target: Target, steps: PostSteps) -> str | None:
        """A previous attempt sent chat.postMessage and died before hearing the answer: find
        that message by its metadata instead of posting a second one."""
        since = steps.get("posting")
        if since is None:
            return None
        try:
            if target.thread_id:
                resp = await self._client.conversations_replies(
                    channel=target.channel_id,
                    ts=target.thread_id,
                    oldest=since,
                    include_all_metadata=True,
                    limit=100,
                )
            else:
                resp = await self._client.conversations_history(
                    channel=target.channel_id, oldest=since, include_all_metadata=True, limit=100
                )
        except SlackApiError as exc:  # e.g. missing_scope: posting again is all we can do
            log.warning("could not look for an earlier post (%s)", _slack_error(exc))
            return None
        for message in resp.get("messages") or []:
            meta = message.get("metadata") if isinstance(message, Mapping) else None
            if (
                isinstance(meta, Mapping)
                and meta.get("event_type") == METADATA_EVENT
                and (meta.get("event_payload") or {}).get("key") == steps.key
            ):
                return str(message.get("ts"))
        return None

    async def _files(
        self, target: Target, reply: Reply, steps: PostSteps | None
    ) -> tuple[PostedFile, ...]:
        """Upload the reply's images once: a retry reuses the files already uploaded."""
        if steps is not None and steps.get("files"):
            return tuple(PostedFile(*f) for f in json.loads(steps.get("files") or "[]"))
        files = await self._upload(target, reply.images, reply)
        if steps is not None and files:
            await steps.record(
                "files", json.dumps([[f.file_id, f.title, f.permalink] for f in files])
            )
            await steps.record("undo", _ref("", ",".join(f.file_id for f in files)))
        return files

    async def _upload(
        self, target: Target, images: tuple[ImageFile, ...], reply: Reply
    ) -> tuple[PostedFile, ...]:
        if not images:
            return ()
        uploads: list[dict[str, Any]] = []
        alt = (reply.meta.get("prompt") or reply.text)[:1000]
        for img in images:
            # The SDK would read a path synchronously on the event loop; read it in a thread.
            data = await asyncio.to_thread(img.path.read_bytes)
            uploads.append(
                {"file": data, "filename": img.filename, "title": img.filename, "alt_txt": alt}
            )
        with _delivery_errors("files_upload_v2"):
            resp = await self._client.files_upload_v2(
                file_uploads=uploads,
                channel=target.channel_id,
                thread_ts=target.thread_id,
            )
        out = []
        for f in resp.get("files") or []:
            if isinstance(f, Mapping):
                out.append(
                    PostedFile(
                        str(f.get("id", "")),
                        str(f.get("title") or ""),
                        str(f.get("permalink") or ""),
                    )
                )
        return tuple(out)


METADATA_EVENT = "imagine_bot_post"
# Slack errors that retrying cannot cure.
_PERMANENT = frozenset(
    {
        "channel_not_found",
        "is_archived",
        "not_in_channel",
        "account_inactive",
        "invalid_auth",
        "token_revoked",
        "not_authed",
        "missing_scope",
        "restricted_action",
        "msg_too_long",
        "message_not_found",
        "cant_update_message",
        "cant_delete_message",
        "cant_delete_file",
        "file_not_found",
        "file_deleted",
        "channel_is_archived",
        "ekm_access_denied",
    }
)


def _ref(ts: str, file_ids: str) -> str:
    """The poster's reference: the message's ts, and after a bar the files it shows."""
    return f"{ts}|{file_ids}" if file_ids else ts


def _ts(ref: str) -> str:
    return ref.partition("|")[0]


@contextlib.contextmanager
def _delivery_errors(method: str, *, gone: tuple[str, ...] = ()) -> Iterator[None]:
    """slack_sdk's failures as the core's :class:`DeliveryError` (``gone``: an error that means
    the thing is already deleted, which is success for a delete)."""
    try:
        yield
    except SlackApiError as exc:
        code = _slack_error(exc)
        if code in gone:
            return
        retry_after = None
        if code == "ratelimited":
            header = exc.response.headers.get("Retry-After") or exc.response.headers.get(
                "retry-after"
            )
            retry_after = float(header) if header else 1.0
        raise DeliveryError(
            f"{method}: {code}", permanent=code in _PERMANENT, retry_after=retry_after
        ) from exc
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise DeliveryError(f"{method}: {type(exc).__name__}") from exc


@dataclass
class SlackResponder:
    """The :class:`~bot.types.Responder` for one slash command, click or modal submit."""

    poster: SlackPoster
    client: AsyncWebClient
    target: Target
    trigger_id: str | None = None
    respond: Respond | None = None

    async def send(self, reply: Reply) -> str | None:
        if reply.form is not None:
            await self._open_form(reply)
            return None
        try:
            return await self.poster.post(self.target, reply)
        except DeliveryError as exc:
            # Typically not_in_channel: the bot was never invited. The response_url still
            # reaches the user for 30 minutes.
            if self.respond is None:
                raise
            log.warning("Slack refused a message (%s); answering through response_url", exc.reason)
            await self.respond(
                text=fallback_text(reply),
                blocks=reply_blocks(reply),
                response_type="ephemeral" if reply.ephemeral else "in_channel",
                replace_original=False,
            )
            return None

    async def edit(self, ref: str, reply: Reply) -> None:
        await self.poster.update(self.target, ref, reply)

    async def _open_form(self, reply: Reply) -> None:
        assert reply.form is not None
        form = reply.form
        if self.trigger_id:
            view = modal_view(
                form, FormContext(form.action, self.target.channel_id, self.target.thread_id)
            )
            try:
                await self.client.views_open(trigger_id=self.trigger_id, view=view)
                return
            except SlackApiError as exc:  # expired_trigger_id: we missed Slack's 3 s window
                log.warning("views.open failed (%s)", _slack_error(exc))
        await self.send(
            Reply("That dialog could not be opened in time. Please click again.", ephemeral=True)
        )


# ------------------------------------------------------------------------------ listeners
def _interaction_key(team_id: str, *parts: object) -> str | None:
    if not all(parts):
        return None
    return f"slack:{team_id}:" + ":".join(str(p) for p in parts)


class SlackAdapter:
    """Turns bolt payloads into invocations; one per bolt app."""

    def __init__(
        self, core: Core, client: AsyncWebClient, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.core = core
        self.client = client
        self.poster = SlackPoster(client)
        self.admins = AdminCache(client, clock=clock)

    async def actor(self, team_id: str, user_id: str, name: str) -> Actor:
        return Actor(
            PLATFORM,
            team_id,
            user_id,
            display_name=name or user_id,
            is_admin=await self.admins.is_admin(team_id, user_id),
        )

    def responder(
        self,
        team_id: str,
        user_id: str,
        channel_id: str,
        thread_id: str | None,
        trigger_id: str | None,
        respond: Respond | None,
    ) -> SlackResponder:
        return SlackResponder(
            self.poster,
            self.client,
            Target(PLATFORM, team_id, channel_id, thread_id, user_id),
            trigger_id,
            respond,
        )

    async def on_command(
        self, name: str, command: Mapping[str, Any], respond: Respond | None
    ) -> None:
        team = str(command.get("team_id") or "")
        user = str(command.get("user_id") or "")
        channel = str(command.get("channel_id") or user)
        trigger = command.get("trigger_id")
        inv = Invocation(
            actor=await self.actor(team, user, str(command.get("user_name") or "")),
            channel_id=channel,
            command=name,
            text=str(command.get("text") or ""),
            interaction_id=_interaction_key(team, trigger),
        )
        await self.core.handle(inv, self.responder(team, user, channel, None, trigger, respond))

    async def on_action(
        self,
        body: Mapping[str, Any],
        action: Mapping[str, Any],
        team_id: str | None,
        respond: Respond | None,
    ) -> None:
        user = body.get("user") or {}
        user_id = str(user.get("id") or "")
        team = str(team_id or (body.get("team") or {}).get("id") or user.get("team_id") or "")
        container = body.get("container") or {}
        message = body.get("message") or {}
        channel = str(
            (body.get("channel") or {}).get("id") or container.get("channel_id") or user_id
        )  # a click outside a channel (App Home) answers in the DM
        thread = container.get("thread_ts") or message.get("thread_ts")
        trigger = body.get("trigger_id")
        key = (
            _interaction_key(team, trigger)
            if trigger
            else _interaction_key(team, container.get("message_ts"), action.get("action_ts"))
        )
        inv = Invocation(
            actor=await self.actor(
                team, user_id, str(user.get("name") or user.get("username") or "")
            ),
            channel_id=channel,
            command="action",
            action=str(action.get("value") or action.get("action_id") or ""),
            thread_id=str(thread) if thread else None,
            interaction_id=key,
        )
        await self.core.handle(
            inv, self.responder(team, user_id, channel, inv.thread_id, trigger, respond)
        )

    async def on_submit(
        self, body: Mapping[str, Any], view: Mapping[str, Any], team_id: str | None
    ) -> None:
        context = FormContext.load(str(view.get("private_metadata") or ""))
        if context is None:
            log.warning("a modal submission without our metadata was ignored")
            return
        user = body.get("user") or {}
        user_id = str(user.get("id") or "")
        team = str(team_id or (body.get("team") or {}).get("id") or user.get("team_id") or "")
        trigger = body.get("trigger_id")
        key = (
            _interaction_key(team, trigger)
            if trigger
            else _interaction_key(team, view.get("id"), view.get("hash"))
        )
        inv = Invocation(
            actor=await self.actor(
                team, user_id, str(user.get("name") or user.get("username") or "")
            ),
            channel_id=context.channel_id,
            command="action",
            action=context.action,
            fields=view_fields(view),
            thread_id=context.thread_id,
            interaction_id=key,
        )
        await self.core.handle(
            inv, self.responder(team, user_id, context.channel_id, context.thread_id, trigger, None)
        )


def build_bolt_app(core: Core, *, client: AsyncWebClient | None = None) -> AsyncApp:
    """A bolt app wired to the core; also registers the ``slack`` channel poster."""
    settings = core.settings
    web_client = client if client is not None else make_client(settings)
    # Without a signing secret (Socket Mode needs none) a random one makes every HTTP request
    # fail verification, rather than an empty key that anyone can sign with.
    signing_secret = settings.secret("SLACK_SIGNING_SECRET") or secrets.token_hex(32)
    bolt = AsyncApp(client=web_client, signing_secret=signing_secret, name="imagine-bot")
    adapter = SlackAdapter(core, web_client)
    core.register_poster(PLATFORM, adapter.poster)

    def command_listener(name: str) -> Callable[..., Awaitable[None]]:
        async def listener(
            ack: AsyncAck, command: dict[str, Any], body: dict[str, Any], respond: AsyncRespond
        ) -> None:
            await ack()  # before any I/O: Slack gives us 3 s
            await adapter.on_command(name, command, respond if body.get("response_url") else None)

        return listener

    for slash, name in COMMANDS.items():
        bolt.command(slash)(command_listener(name))

    async def on_action(
        ack: AsyncAck,
        body: dict[str, Any],
        action: dict[str, Any],
        context: AsyncBoltContext,
        respond: AsyncRespond,
    ) -> None:
        await ack()
        await adapter.on_action(
            body, action, context.team_id, respond if body.get("response_url") else None
        )

    bolt.action(ACTION_ID_RE)(on_action)

    async def on_submit(
        ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        await ack()  # closes the modal; the core answers in the channel
        await adapter.on_submit(body, view, context.team_id)

    bolt.view(MODAL_CALLBACK_ID)(on_submit)
    return bolt


def create_web_app(bolt: AsyncApp, *, port: int = DEFAULT_PORT) -> web.Application:
    """bolt's aiohttp app (POST /slack/events) plus GET /healthz for container checks."""
    web_app = bolt.web_app(path=EVENTS_PATH, port=port)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    web_app.router.add_get("/healthz", healthz)
    return web_app


async def serve(core: Core, settings: Settings, ready: Ready) -> None:
    """Run until cancelled: Socket Mode when SLACK_APP_TOKEN is set, else HTTP on SLACK_PORT."""
    if not settings.secret("SLACK_BOT_TOKEN"):
        raise ConfigError("SLACK_BOT_TOKEN is not set")
    app_token = settings.secret("SLACK_APP_TOKEN")
    if not app_token and not settings.secret("SLACK_SIGNING_SECRET"):
        raise ConfigError(
            "Slack HTTP mode needs SLACK_SIGNING_SECRET (or set SLACK_APP_TOKEN for Socket Mode)"
        )
    session = aiohttp.ClientSession()
    try:
        await _serve(core, settings, ready, make_client(settings, session=session), app_token)
    finally:
        await session.close()


async def _serve(
    core: Core, settings: Settings, ready: Ready, client: AsyncWebClient, app_token: str | None
) -> None:
    bolt = build_bolt_app(core, client=client)
    if app_token:
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        handler = AsyncSocketModeHandler(bolt, app_token)
        # bolt's socket-mode handler declares no return types on these two coroutines (as of
        # slack-bolt 1.30), so strict mypy sees untyped calls; they return None.
        try:
            await handler.connect_async()  # type: ignore[no-untyped-call]
            ready("connected (Socket Mode)")
            await asyncio.Event().wait()  # until cancelled
        finally:
            await handler.close_async()  # type: ignore[no-untyped-call]
        return
    env = settings.env
    try:
        port = int(env.get("SLACK_PORT") or DEFAULT_PORT)
    except ValueError:
        raise ConfigError("SLACK_PORT must be a port number") from None
    host = env.get("SLACK_HOST") or "0.0.0.0"  # Slack must reach it; put TLS in front
    runner = web.AppRunner(create_web_app(bolt, port=port), access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            raise ConfigError(
                f"The Slack adapter cannot listen on {host}:{port} "
                f"({exc.strerror}). Set SLACK_HOST / SLACK_PORT."
            ) from None
        ready(f"listening on http://{host}:{port}{EVENTS_PATH}")
        await asyncio.Event().wait()  # until cancelled
    finally:
        await runner.cleanup()
