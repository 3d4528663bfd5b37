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
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.admins import AdminCache
from adapters.slack.files import FileRefused, allowed_hosts, download, first_image
from adapters.slack.limits import HeldWebClient
from adapters.slack.poster import SlackPoster, slack_error
from adapters.slack.render import (
    MODAL_CALLBACK_ID,
    NEW_IMAGE_CALLBACK_ID,
    FormContext,
    fallback_text,
    modal_view,
    new_image_view,
    reply_blocks,
    view_channel,
    view_fields,
    view_files,
)
from bot.core import Core, Ready, Settings
from bot.errors import ConfigError, DeliveryError
from bot.types import ACTION_RE, Actor, Invocation, Reply, Target

log = logging.getLogger(__name__)

PLATFORM = "slack"
EVENTS_PATH = "/slack/events"
DEFAULT_PORT = 3000
# The core's one button codec, anchored: bolt matches a pattern with re.search. Anything else
# is not ours and gets bolt's default 404 instead of reaching the core.
ACTION_ID_RE = re.compile(rf"\A(?:{ACTION_RE.pattern})\Z")
# The message shortcut ("Refine with imagine") as the app's manifest names it.
SHORTCUT_CALLBACK_ID = "imagine_refine"
# The global shortcut ("New image"): a modal with a prompt and an optional picture.
NEW_SHORTCUT_CALLBACK_ID = "imagine_new"
NO_IMAGE = "That message has no picture to refine. Pick one with an image attached."
NOT_AN_IMAGE = "That file is not a picture. Attach a PNG, JPEG, WebP or GIF."
NO_CHANNEL = "Pick a channel to post the picture in."
DEFAULT_REFINE_PROMPT = "the same picture, refined"
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
    most of the bot's CPU per job under load (bench/load.py --slack-session). A 429 holds
    every call of its method until the ``Retry-After`` has passed (:mod:`.limits`)."""
    token = settings.secret("SLACK_BOT_TOKEN")
    if not token:
        raise ConfigError("SLACK_BOT_TOKEN is not set")
    base = _api_url(settings.env)
    return (
        HeldWebClient(token=token, base_url=base, session=session)
        if base
        else HeldWebClient(token=token, session=session)
    )


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
                log.warning("views.open failed (%s)", slack_error(exc))
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
        self.file_hosts = allowed_hosts(_api_url(core.settings.env))

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
        bare = name == "imagine" and not str(command.get("text") or "").strip()
        # Slack's slash commands take one line of text and no file: a bare /imagine opens the
        # modal that takes a prompt and a picture (the help, should Slack refuse the modal).
        if bare and trigger and await self.open_new_image(str(trigger), FormContext("", channel)):
            return
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

    async def on_shortcut(
        self, body: Mapping[str, Any], team_id: str | None, respond: Respond | None
    ) -> None:
        """ "Refine with imagine" on a message: its picture starts a new image, its text the
        prompt. The file comes from Slack's own hosts with the bot token, size and time capped
        (:mod:`.files`); the core's image gate then judges the bytes."""
        user = body.get("user") or {}
        user_id = str(user.get("id") or "")
        team = str(team_id or (body.get("team") or {}).get("id") or user.get("team_id") or "")
        channel = str((body.get("channel") or {}).get("id") or user_id)
        message = body.get("message") or {}
        thread = message.get("thread_ts")
        trigger = body.get("trigger_id")
        responder = self.responder(
            team, user_id, channel, str(thread) if thread else None, trigger, respond
        )
        files = message.get("files")
        if first_image(files) is None:
            await responder.send(Reply(NO_IMAGE, ephemeral=True))
            return
        data = await self.fetch_image(files, responder)
        if data is None:
            return
        inv = Invocation(
            actor=await self.actor(
                team, user_id, str(user.get("name") or user.get("username") or "")
            ),
            channel_id=channel,
            command="imagine",
            text=str(message.get("text") or "").strip() or DEFAULT_REFINE_PROMPT,
            init_image=data,
            thread_id=str(thread) if thread else None,
            interaction_id=_interaction_key(team, trigger),
        )
        await self.core.handle(inv, responder)

    async def fetch_image(self, files: Any, responder: SlackResponder) -> bytes | None:
        """The first picture among ``files`` from Slack's own hosts with the bot token, size
        and time capped (:mod:`.files`); None when refused, after telling the user why. The
        core's image gate judges the bytes next."""
        image = first_image(files)
        try:
            if image is None:
                raise FileRefused(NOT_AN_IMAGE)
            return await download(
                image,
                str(self.client.token or ""),
                hosts=self.file_hosts,
                max_bytes=self.core.settings.images.max_input_bytes,
            )
        except FileRefused as exc:
            await responder.send(Reply(str(exc), ephemeral=True))
            return None

    async def open_new_image(
        self, trigger: str, context: FormContext, *, pick_channel: bool = False
    ) -> bool:
        """Open the new-image modal; False when Slack would not (a missed 3 s window)."""
        view = new_image_view(context, pick_channel=pick_channel)
        try:
            await self.client.views_open(trigger_id=trigger, view=view)
        except SlackApiError as exc:
            log.warning("views.open failed (%s)", slack_error(exc))
            return False
        return True

    async def on_new_shortcut(
        self, body: Mapping[str, Any], team_id: str | None, respond: Respond | None
    ) -> None:
        """The global "New image" shortcut: no channel comes with it, so the modal asks."""
        trigger = str(body.get("trigger_id") or "")
        if trigger and await self.open_new_image(trigger, FormContext("", ""), pick_channel=True):
            return
        if respond is not None:
            await respond(text="That dialog could not be opened in time. Please try again.")

    async def on_submit(
        self,
        body: Mapping[str, Any],
        view: Mapping[str, Any],
        team_id: str | None,
        respond: Respond | None = None,
    ) -> None:
        """A modal's submit: a form of the core's (a button's action with its fields), or the
        new-image modal (``/imagine`` with its prompt). An uploaded picture becomes the
        invocation's starting image; the core decides what it may be used for."""
        context = FormContext.load(str(view.get("private_metadata") or ""))
        if context is None:
            log.warning("a modal submission without our metadata was ignored")
            return
        new_image = view.get("callback_id") == NEW_IMAGE_CALLBACK_ID
        user = body.get("user") or {}
        user_id = str(user.get("id") or "")
        team = str(team_id or (body.get("team") or {}).get("id") or user.get("team_id") or "")
        channel = context.channel_id or view_channel(view) or ""
        trigger = body.get("trigger_id")
        responder = self.responder(
            team, user_id, channel or user_id, context.thread_id, trigger, respond
        )
        if not channel:
            await responder.send(Reply(NO_CHANNEL, ephemeral=True))
            return
        files = view_files(view)
        data = await self.fetch_image(files, responder) if files else None
        if files and data is None:
            return
        key = (
            _interaction_key(team, trigger)
            if trigger
            else _interaction_key(team, view.get("id"), view.get("hash"))
        )
        fields = view_fields(view)
        inv = Invocation(
            actor=await self.actor(
                team, user_id, str(user.get("name") or user.get("username") or "")
            ),
            channel_id=channel,
            command="imagine" if new_image else "action",
            text=fields.get("prompt", "") if new_image else "",
            action="" if new_image else context.action,
            fields={} if new_image else fields,
            thread_id=context.thread_id,
            init_image=data,
            interaction_id=key,
        )
        await self.core.handle(inv, responder)


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
        ack: AsyncAck,
        body: dict[str, Any],
        view: dict[str, Any],
        context: AsyncBoltContext,
        respond: AsyncRespond,
    ) -> None:
        await ack()  # closes the modal; the core answers in the channel
        # The new-image modal's "Post in" menu asks Slack for a response_url (bolt's respond):
        # the answer reaches the user even where the bot was never invited.
        await adapter.on_submit(
            body, view, context.team_id, respond if body.get("response_urls") else None
        )

    bolt.view(MODAL_CALLBACK_ID)(on_submit)
    bolt.view(NEW_IMAGE_CALLBACK_ID)(on_submit)

    async def on_shortcut(
        ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext, respond: AsyncRespond
    ) -> None:
        await ack()
        await adapter.on_shortcut(
            body, context.team_id, respond if body.get("response_url") else None
        )

    bolt.shortcut(SHORTCUT_CALLBACK_ID)(on_shortcut)

    async def on_new_shortcut(
        ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext, respond: AsyncRespond
    ) -> None:
        await ack()
        await adapter.on_new_shortcut(
            body, context.team_id, respond if body.get("response_url") else None
        )

    bolt.shortcut(NEW_SHORTCUT_CALLBACK_ID)(on_new_shortcut)
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
