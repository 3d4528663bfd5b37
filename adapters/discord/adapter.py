"""The Discord adapter: slash commands, buttons and modals -> Invocations; Replies -> messages.

Flow of one interaction (all inside Discord's 3-second window for the first response):

* ``/imagine`` defers publicly (a "thinking" message), ``/quota`` and ``/imagine-admin``
  defer ephemerally, then the core runs. The first reply of the matching visibility replaces
  the thinking message (``edit_original_response``); an ephemeral reply after a public defer
  deletes the thinking message first, because Discord cannot turn a message private.
* A button click is deferred with ``defer()`` (no loading state), so every follow-up is a
  new message with its own visibility. A ``refine`` click is the exception: a modal must be
  the *first* response, so the core is asked first (it answers from SQLite in milliseconds)
  and its form is sent with ``send_modal``; if the core is slow the click is deferred after
  ``LAZY_ACK_S`` and the user is told to click again.
* Results and status updates arrive later through :class:`DiscordPoster` as ordinary
  channel messages (bot token), so they land after the 15-minute interaction token expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import discord
import yarl
from discord import app_commands

from adapters.discord.options import command_text, flag_options, prompt_description
from adapters.discord.poster import DiscordPoster, _message_kwargs
from adapters.discord.render import (
    ACTION_TEMPLATE,
    ActionButton,
    FormModal,
    modal_fields,
)
from adapters.discord.threads import make_ref, split_ref, where
from bot.core import Core, Ready, Settings
from bot.errors import ConfigError
from bot.types import Action, Actor, Invocation, Reply

log = logging.getLogger(__name__)

PLATFORM = "discord"
# Clicks the core may answer with a form (Refine always; Vary and Reroll of a remix job): a
# modal must be the first response, so these are not deferred at once.
FORM_VERBS = frozenset({"refine", "vary", "vary-subtle", "vary-strong", "reroll", "settings"})
LAZY_ACK_S = 2.0  # refine clicks: answer with the modal, or defer after this long
FORM_TOO_LATE = "That took too long to open the form. Please click the button again."
DEFAULT_API = "https://discord.com/api/v10"


def api_base(env: Mapping[str, str]) -> str | None:
    """``DISCORD_API_BASE_URL`` (a proxy or a test fake), with the API version path added
    when it is missing. None keeps discord.py's default."""
    url = (env.get("DISCORD_API_BASE_URL") or "").strip().rstrip("/")
    if not url:
        return None
    return url if re.search(r"/api/v\d+$", url) else url + "/api/v10"


def actor_for(interaction: discord.Interaction[Any]) -> Actor:
    user = interaction.user
    guild_id = interaction.guild_id
    roles: tuple[str, ...] = ()
    if isinstance(user, discord.Member):
        # Names come from the gateway's guild cache; the payload itself only has role ids.
        roles = tuple(r.name for r in user.roles if not r.is_default())
    perms = interaction.permissions
    # Manage Guild is checked here, not only through the command's default permissions,
    # which a server can override per role.
    is_admin = guild_id is not None and (perms.manage_guild or perms.administrator)
    return Actor(
        platform=PLATFORM,
        tenant=str(guild_id) if guild_id is not None else f"dm:{user.id}",
        user_id=str(user.id),
        display_name=user.display_name,
        roles=roles,
        is_admin=is_admin,
    )


# ------------------------------------------------------------------------------ responder
class InteractionResponder:
    """The core's :class:`~bot.types.Responder` for one interaction.

    ``loading`` means the interaction was deferred with a thinking message that the first
    reply must replace. Returned refs are message ids of public messages only (the core may
    later edit them through :class:`DiscordPoster`; ephemeral ones cannot be edited that way).
    """

    def __init__(
        self,
        interaction: discord.Interaction[Any],
        *,
        loading: bool = False,
        loading_ephemeral: bool = False,
    ) -> None:
        self._interaction = interaction
        self._loading = loading
        self._loading_ephemeral = loading_ephemeral
        self._lock = asyncio.Lock()
        self.responded = asyncio.Event()
        if interaction.response.is_done():
            self.responded.set()

    async def send(self, reply: Reply) -> str | None:
        async with self._lock:
            try:
                return await self._send(reply)
            finally:
                self.responded.set()

    async def _send(self, reply: Reply) -> str | None:
        it = self._interaction
        if not it.response.is_done():  # a click answered directly (refine)
            if reply.form is not None:
                await it.response.send_modal(FormModal(reply.form))
                return None
            kwargs = await _message_kwargs(reply)
            cb = await it.response.send_message(ephemeral=reply.ephemeral, **kwargs)
            msg = cb.resource
            if reply.ephemeral or not isinstance(msg, discord.InteractionMessage):
                return None
            return self._ref(msg.id)
        if reply.form is not None:
            reply = Reply(FORM_TOO_LATE, ephemeral=True)
        if self._loading:
            self._loading = False
            if reply.ephemeral and not self._loading_ephemeral:
                # A public "thinking" message cannot become private: remove it and whisper.
                await it.delete_original_response()
            else:
                kwargs = await _message_kwargs(reply)
                files = kwargs.pop("files", None)
                if files:
                    kwargs["attachments"] = files
                msg = await it.edit_original_response(**kwargs)
                return None if reply.ephemeral or self._loading_ephemeral else self._ref(msg.id)
        kwargs = await _message_kwargs(reply)
        sent = await it.followup.send(ephemeral=reply.ephemeral, wait=True, **kwargs)
        return None if reply.ephemeral else self._ref(sent.id)

    def _ref(self, message_id: int) -> str:
        """A message of this interaction, named with its thread when in one (a pick in a
        job's thread is taken down with the job, whose channel is the thread's parent)."""
        thread = where(self._interaction)[1]
        return make_ref(int(thread), message_id, 0) if thread else str(message_id)

    async def set_workspace_icon(self, png: bytes, reason: str) -> None:
        """The core's server-icon capability (see :mod:`adapters.discord.icon`)."""
        from adapters.discord.icon import set_guild_icon

        await set_guild_icon(self._interaction, png, reason)

    async def edit(self, ref: str, reply: Reply) -> None:
        kwargs = await _message_kwargs(reply)
        files = kwargs.pop("files", [])
        async with self._lock:
            await self._interaction.followup.edit_message(
                split_ref(ref, 0)[1], attachments=files, view=kwargs.pop("view", None), **kwargs
            )

    async def acknowledge(self) -> None:
        """The core was too slow for a direct answer: defer so the click does not fail."""
        async with self._lock:
            if not self._interaction.response.is_done():
                await self._interaction.response.defer(thinking=True, ephemeral=True)
                self._loading, self._loading_ephemeral = True, True
            self.responded.set()

    async def finish(self) -> None:
        """After the core is done: never leave a click unanswered or a thinking message."""
        async with self._lock:
            it = self._interaction
            with contextlib.suppress(discord.HTTPException):
                if not it.response.is_done():
                    await it.response.defer()
                elif self._loading:
                    self._loading = False
                    await it.delete_original_response()
            self.responded.set()


class ImagineClient(discord.Client):
    """A gateway client with the three slash commands, restart-proof buttons and the poster.

    ``DISCORD_API_BASE_URL`` and ``DISCORD_GATEWAY_URL`` (from the settings' env) redirect
    discord.py to a proxy or a fake. discord.py reads both from class attributes, so they are
    set for the process while this client lives and restored by :meth:`close`.
    """

    def __init__(self, core: Core, *, ready: Ready | None = None, **options: Any) -> None:
        intents = discord.Intents.none()
        intents.guilds = True  # guild, channel and role cache (role names for quotas)
        # ``options``: the shard settings of :class:`~adapters.discord.shards.ShardedClient`.
        super().__init__(
            intents=intents, allowed_mentions=discord.AllowedMentions.none(), **options
        )
        self.core = core
        self._announce = ready  # not _ready: discord.Client has its own
        env = core.settings.env
        self._sync = (env.get("DISCORD_SYNC_COMMANDS") or "global").strip().lower()
        self._saved: list[tuple[Any, str, Any]] = []
        base = api_base(env)
        if base is not None:
            self._override(discord.http.Route, "BASE", base)
        gateway = (env.get("DISCORD_GATEWAY_URL") or "").strip()
        if gateway:
            self._override(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(gateway))
        # At DEBUG these loggers print request URLs, and follow-up URLs hold the
        # interaction token.
        for name in ("discord.http", "discord.webhook.async_", "discord.gateway"):
            logger = logging.getLogger(name)
            if logger.getEffectiveLevel() < logging.INFO:
                logger.setLevel(logging.INFO)
        self.tree: app_commands.CommandTree[ImagineClient] = app_commands.CommandTree(self)
        _register_commands(self)
        core.register_poster(PLATFORM, DiscordPoster(self, threads=core.settings.discord.threads))

    def _override(self, owner: Any, name: str, value: Any) -> None:
        self._saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            while self._saved:
                owner, name, value = self._saved.pop()
                setattr(owner, name, value)

    async def setup_hook(self) -> None:
        self.add_dynamic_items(ActionButton)
        if self._sync in ("off", "no", "false", "0"):
            return
        try:
            if self._sync.isdigit():  # a development guild: commands appear at once
                guild = discord.Object(int(self._sync))
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
            else:
                # A bulk overwrite: unchanged commands do not count against the daily
                # command-create limit.
                await self.tree.sync()
        except discord.HTTPException as exc:
            log.warning("could not sync slash commands: HTTP %s (code %s)", exc.status, exc.code)

    async def on_ready(self) -> None:
        log.info("Discord adapter ready")
        # on_ready comes again after a reconnect that could not resume; the operator hears of
        # the first one only.
        ready, self._announce = self._announce, None
        if ready is not None:
            ready(f"connected to the gateway as {self.user}")
        # Results that finished before we could post (jobs resumed at start, or while the
        # gateway was down) go out now.
        await self.core.deliver_pending(PLATFORM)

    # ---------------------------------------------------------------------------- events
    async def run_command(
        self,
        interaction: discord.Interaction[Any],
        command: str,
        text: str,
        image: discord.Attachment | None,
        responder: InteractionResponder,
    ) -> None:
        async def invocation() -> Invocation | None:
            init = None
            if image is not None:
                limit = self.core.settings.images.max_input_bytes
                if image.size > limit:
                    await responder.send(
                        Reply(
                            f"That image is {image.size / 2**20:.1f} MB; the limit is "
                            f"{limit / 2**20:.0f} MB.",
                            ephemeral=True,
                        )
                    )
                    return None
                init = await image.read()
            return Invocation(
                actor_for(interaction),
                where(interaction)[0],
                thread_id=where(interaction)[1],
                command=command,
                text=text,
                init_image=init,
                interaction_id=str(interaction.id),
            )

        await self._guarded(responder, invocation)

    async def on_action(self, interaction: discord.Interaction[Any], action: str) -> None:
        """A button from any message, old or new (dispatched by :class:`ActionButton`)."""

        async def invocation() -> Invocation:
            return Invocation(
                actor_for(interaction),
                where(interaction)[0],
                thread_id=where(interaction)[1],
                command="action",
                action=action,
                interaction_id=str(interaction.id),
            )

        decoded = Action.decode(action)
        if decoded is None or decoded.verb not in FORM_VERBS:
            await interaction.response.defer()
            await self._guarded(InteractionResponder(interaction), invocation)
            return
        # A modal must be the first response: let the core answer before acknowledging.
        responder = InteractionResponder(interaction)
        task = asyncio.create_task(self._guarded(responder, invocation))
        waiter = asyncio.create_task(responder.responded.wait())
        try:
            await asyncio.wait(
                {task, waiter}, timeout=LAZY_ACK_S, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
        if not responder.responded.is_set():
            with contextlib.suppress(discord.HTTPException):
                await responder.acknowledge()
        await task

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        # Modal submits are read from the raw payload rather than from the Modal object
        # discord.py keeps in memory, so a form opened before a restart still works.
        if interaction.type is not discord.InteractionType.modal_submit:
            return
        data = cast(dict[str, Any], interaction.data or {})
        custom_id = str(data.get("custom_id") or "")
        if not ACTION_TEMPLATE.fullmatch(custom_id):
            return
        await interaction.response.defer()
        fields = modal_fields(data.get("components") or [])

        async def invocation() -> Invocation:
            return Invocation(
                actor_for(interaction),
                where(interaction)[0],
                thread_id=where(interaction)[1],
                command="action",
                action=custom_id,
                fields=fields,
                interaction_id=str(interaction.id),
            )

        await self._guarded(InteractionResponder(interaction), invocation)

    async def _guarded(
        self, responder: InteractionResponder, build: Callable[[], Awaitable[Invocation | None]]
    ) -> None:
        """Run the core for one interaction; rendering failures get an apology with a ref."""
        try:
            inv = await build()
            if inv is not None:
                await self.core.handle(inv, responder)
        except Exception:
            ref = secrets.token_hex(4)
            log.exception("Discord interaction failed (ref %s)", ref)
            with contextlib.suppress(Exception):
                await responder.send(
                    Reply(f"Sorry, something went wrong on our side (ref {ref}).", ephemeral=True)
                )
        finally:
            await responder.finish()


REFINE_MENU = "Refine with imagine"  # a message context-menu command (1..32 characters)
NO_IMAGE = "That message has no image to refine. Pick one with a picture attached."
DEFAULT_REFINE_PROMPT = "the same picture, refined"


def _register_commands(client: ImagineClient) -> None:
    tree = client.tree
    flags = client.core.flag_help()
    options = flag_options(flags)

    async def imagine(
        interaction: discord.Interaction[Any],
        /,
        prompt: str,
        image: discord.Attachment | None = None,
        **chosen: str | bool | None,
    ) -> None:
        """Generate images from a prompt. Try "help" for the flags."""
        await interaction.response.defer(thinking=True)
        responder = InteractionResponder(interaction, loading=True)
        text = command_text(prompt, [(o, chosen.get(o.param)) for o in options])
        await client.run_command(interaction, "imagine", text, image, responder)

    # discord.py reads a command's options from its callback's signature, so the flags'
    # options are written into it: one optional parameter per flag in the grammar's table.
    keyword = inspect.Parameter.KEYWORD_ONLY
    # (typeshed does not declare __signature__ on functions; inspect.signature reads it)
    imagine.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            *list(inspect.signature(imagine).parameters.values())[:3],
            *(
                inspect.Parameter(
                    o.param,
                    keyword,
                    default=None,
                    annotation=bool | None if o.switch else str | None,
                )
                for o in options
            ),
        ]
    )
    described = app_commands.describe(
        prompt=prompt_description(flags),
        image="A starting picture to transform (img2img)",
        **{o.param: o.description for o in options},
    )(imagine)
    tree.command(name="imagine")(
        app_commands.rename(**{o.param: o.name for o in options})(described)
    )

    @tree.context_menu(name=REFINE_MENU)
    async def refine_with_imagine(
        interaction: discord.Interaction[Any], message: discord.Message
    ) -> None:
        """A message's picture as the start of a new image (img2img); its text the prompt."""
        image = next(
            (a for a in message.attachments if (a.content_type or "").startswith("image/")),
            None,
        )
        if image is None:
            await interaction.response.send_message(NO_IMAGE, ephemeral=True)
            return
        await interaction.response.defer(thinking=True)
        responder = InteractionResponder(interaction, loading=True)
        text = message.content.strip() or DEFAULT_REFINE_PROMPT
        await client.run_command(interaction, "imagine", text, image, responder)

    @tree.command(name="quota")
    async def quota(interaction: discord.Interaction[Any]) -> None:
        """How many images you have left today and this month."""
        await interaction.response.defer(thinking=True, ephemeral=True)
        responder = InteractionResponder(interaction, loading=True, loading_ephemeral=True)
        await client.run_command(interaction, "quota", "", None, responder)

    @tree.command(name="imagine-admin")
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.describe(text="limit, workspace-limit, grant, reset, block, unblock, collab")
    async def imagine_admin(interaction: discord.Interaction[Any], text: str = "help") -> None:
        """Quotas and channel settings (needs Manage Server)."""
        await interaction.response.defer(thinking=True, ephemeral=True)
        responder = InteractionResponder(interaction, loading=True, loading_ephemeral=True)
        await client.run_command(interaction, "admin", text, None, responder)


async def serve(core: Core, settings: Settings, ready: Ready) -> None:
    """Connect to the gateway and serve until cancelled; the client is closed on the way out."""
    token = settings.secret("DISCORD_TOKEN")
    if not token:
        raise ConfigError("DISCORD_TOKEN is not set")
    plan = settings.discord.shard_plan()
    client: ImagineClient
    if plan is None:
        client = ImagineClient(core, ready=ready)
    else:
        from adapters.discord.shards import ShardedClient

        client = ShardedClient(core, plan.count, plan.ids, label=plan.describe(), ready=ready)
    async with client:
        try:
            await client.start(token)
        except discord.LoginFailure:
            raise ConfigError(
                "Discord refused DISCORD_TOKEN: check that it is the bot token "
                "from the Developer Portal (Bot, Reset Token)."
            ) from None
        except discord.ConnectionClosed as exc:
            if exc.code == 4011:  # Sharding required: 2,500 servers or more on one connection
                raise ConfigError(
                    'Discord requires sharding for this bot: set discord.shards = "auto" '
                    '(adapters/discord/README.md, "Sharding").'
                ) from None
            if exc.code == 4010:  # Invalid shard
                raise ConfigError(
                    "Discord refused the shard settings: check discord.shards and "
                    "discord.shard_ids (ids 0..shards-1, the same shards in every process)."
                ) from None
            raise
