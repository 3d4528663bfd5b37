"""``imagine-bot setup slack|discord``: what to paste into each platform's app settings.

Pure: no I/O, no platform library. Everything a new operator has to type into Slack's or
Discord's app pages is generated here from tables that say why each item is there, so that
the manifest, the invite URL, ``doctor``'s scope check and the adapters' READMEs agree:

- :data:`SLACK_SCOPES`: every bot scope, with the Web API methods (or the feature) that need
  it. ``tests/test_setup.py`` reads the methods ``adapters/slack`` calls and checks each is
  covered, so a new call without its scope fails a test rather than a workspace.
- :data:`DISCORD_PERMISSIONS`: the channel permissions the bot uses, by name, each with the
  bit Discord documents; the invite URL's integer is their sum (never Administrator).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from bot.errors import ConfigError

# ------------------------------------------------------------------------------------ Slack
SLACK_APP_NAME = "imagine"  # display_information.name: at most 35 characters
SLACK_EVENTS_PATH = "/slack/events"  # bolt's one endpoint: commands, buttons, modals, shortcuts
REFINE_SHORTCUT_ID = "imagine_refine"  # the message shortcut's callback_id
NEW_SHORTCUT_ID = "imagine_new"  # the global shortcut's: a prompt and an optional picture


@dataclass(frozen=True)
class SlackCommand:
    command: str
    description: str
    usage_hint: str


SLACK_COMMANDS: tuple[SlackCommand, ...] = (
    SlackCommand("/imagine", "Draw pictures from a prompt", "a red fox in the snow --n 4 --ar 3:2"),
    SlackCommand("/imagine-quota", "How many images you have left today", ""),
    SlackCommand("/imagine-admin", "Quotas, bans and limits (workspace admins)", "help"),
)


@dataclass(frozen=True)
class SlackShortcut:
    type: str  # "message" (a message's ... menu) or "global"
    name: str
    callback_id: str
    description: str  # at most 150 characters


SLACK_SHORTCUTS: tuple[SlackShortcut, ...] = (
    SlackShortcut(
        "message",
        "Refine with imagine",
        REFINE_SHORTCUT_ID,
        "Start a new image from the picture in this message",
    ),
    SlackShortcut(
        "global",
        "New image",
        NEW_SHORTCUT_ID,
        "Draw a picture from a prompt, optionally starting from a picture you upload",
    ),
)


@dataclass(frozen=True)
class Scope:
    name: str
    why: str
    methods: tuple[str, ...] = ()  # the Web API methods this scope lets the bot call


SLACK_SCOPES: tuple[Scope, ...] = (
    Scope("commands", "the slash commands and the shortcuts"),
    Scope(
        "chat:write",
        "status, results and replies",
        ("chat.postMessage", "chat.postEphemeral", "chat.update", "chat.delete"),
    ),
    Scope(
        "files:write",
        "uploading the images, and taking them down on Delete",
        ("files.getUploadURLExternal", "files.completeUploadExternal", "files.delete"),
    ),
    Scope(
        "files:read",
        "reading an image someone shares, to refine it (url_private, with the bot token)",
        ("files.info",),
    ),
    Scope("users:read", "is the user a workspace admin or owner?", ("users.info",)),
    # A retried post looks for the message it may already have made (its metadata), in the
    # channel or its thread: each kind of conversation has its own history scope.
    Scope(
        "channels:history",
        "finding a post again after a retry, in public channels",
        ("conversations.history", "conversations.replies"),
    ),
    Scope(
        "groups:history",
        "the same in private channels",
        ("conversations.history", "conversations.replies"),
    ),
    Scope(
        "im:history",
        "the same in direct messages",
        ("conversations.history", "conversations.replies"),
    ),
    Scope(
        "mpim:history",
        "the same in group direct messages",
        ("conversations.history", "conversations.replies"),
    ),
)

# Methods that need no scope: the token check, and modals opened from a trigger id.
SLACK_SCOPELESS_METHODS = frozenset({"auth.test", "views.open", "views.update", "views.push"})
APP_TOKEN_SCOPE = "connections:write"  # the app-level token (xapp-) for Socket Mode


def slack_bot_scopes() -> list[str]:
    return [s.name for s in SLACK_SCOPES]


def required_scopes(platform: str, token_name: str) -> list[str]:
    """The scopes ``doctor`` expects a platform's token to report (empty: none to compare)."""
    if (platform, token_name) == ("slack", "SLACK_BOT_TOKEN"):
        return slack_bot_scopes()
    return []


def slack_methods_covered() -> frozenset[str]:
    """Every Web API method the bot may call with the scopes it asks for."""
    return frozenset(m for s in SLACK_SCOPES for m in s.methods) | SLACK_SCOPELESS_METHODS


def slack_request_url(http_url: str) -> str:
    """The request URL Slack posts to, from what the operator gave: the bot's public
    address (``https://bot.example.com``) or the full URL ending in ``/slack/events``."""
    url = http_url.strip()
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(
            f"--http-url {http_url!r}: Slack sends requests only to https:// addresses. Give "
            "the public https address of the bot (put a TLS proxy in front of SLACK_PORT), "
            "or leave --http-url out for Socket Mode, which needs no public address."
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"--http-url {http_url!r}: give an address without ?query or #part.")
    path = parts.path.rstrip("/")
    if not path.endswith(SLACK_EVENTS_PATH):
        path += SLACK_EVENTS_PATH
    return f"https://{parts.netloc}{path}"


def slack_manifest(http_url: str | None = None) -> dict[str, Any]:
    """A Slack app manifest (schema ``_metadata`` 1.1): Socket Mode without ``http_url``,
    else every request URL set to it."""
    request_url = slack_request_url(http_url) if http_url is not None else None
    commands: list[dict[str, Any]] = []
    for c in SLACK_COMMANDS:
        entry: dict[str, Any] = {
            "command": c.command,
            "description": c.description,
            "should_escape": False,
        }
        if c.usage_hint:
            entry["usage_hint"] = c.usage_hint
        if request_url:
            entry["url"] = request_url
        commands.append(entry)
    interactivity: dict[str, Any] = {"is_enabled": True}
    if request_url:
        interactivity["request_url"] = request_url
    return {
        "_metadata": {"major_version": 1, "minor_version": 1},
        "display_information": {
            "name": SLACK_APP_NAME,
            "description": "Draws pictures from a prompt: /imagine a red fox in the snow",
        },
        "features": {
            "bot_user": {"display_name": SLACK_APP_NAME, "always_online": True},
            "shortcuts": [
                {
                    "name": s.name,
                    "type": s.type,
                    "callback_id": s.callback_id,
                    "description": s.description,
                }
                for s in SLACK_SHORTCUTS
            ],
            "slash_commands": commands,
        },
        "oauth_config": {"scopes": {"bot": slack_bot_scopes()}},
        "settings": {
            "interactivity": interactivity,
            "org_deploy_enabled": False,
            "socket_mode_enabled": request_url is None,
            "token_rotation_enabled": False,
        },
    }


def slack_steps(http_url: str | None = None) -> str:
    """The steps after the manifest, in plain words."""
    steps = [
        'Open https://api.slack.com/apps?new_app=1, choose "From a manifest", pick your '
        "workspace, paste the JSON above (JSON tab), then Next and Create.",
    ]
    if http_url is None:
        steps.append(
            "Basic Information > App-Level Tokens > Generate Token and Scopes: any name, add "
            f"the scope {APP_TOKEN_SCOPE}, Generate. Copy the token (xapp-...): that is "
            "SLACK_APP_TOKEN. Socket Mode needs no public address and no signing secret."
        )
    else:
        steps.append(
            "Basic Information > App Credentials > Signing Secret: Show, copy it: that is "
            "SLACK_SIGNING_SECRET. Do not set SLACK_APP_TOKEN (with it the bot uses Socket Mode)."
        )
    steps.append(
        "Install App > Install to Workspace > Allow. Copy the Bot User OAuth Token (xoxb-...): "
        "that is SLACK_BOT_TOKEN."
    )
    if http_url is None:
        env = "SLACK_BOT_TOKEN=xoxb-... SLACK_APP_TOKEN=xapp-..."
        serve = 'imagine-bot serve  (it says "slack: connected (Socket Mode)")'
    else:
        url = slack_request_url(http_url)
        env = "SLACK_BOT_TOKEN=xoxb-... SLACK_SIGNING_SECRET=<the secret>"
        serve = (
            "imagine-bot serve  (it listens on SLACK_HOST:SLACK_PORT, default 0.0.0.0:3000; "
            f"your TLS proxy must pass {url} to http://<this host>:3000{SLACK_EVENTS_PATH})"
        )
    steps.append(f"Set the environment: {env}. Then run imagine-bot doctor: it checks both.")
    steps.append(f"Start the bot: {serve}.")
    steps.append(
        f"In each channel where people should draw: /invite @{SLACK_APP_NAME} (the bot posts "
        "only where it is a member). Then try /imagine a red fox in the snow."
    )
    return "\n".join(f"{i}. {text}" for i, text in enumerate(steps, 1))


# ---------------------------------------------------------------------------------- Discord
@dataclass(frozen=True)
class Permission:
    name: str  # as the Developer Portal's permission list spells it
    bit: int
    why: str


# Bits from Discord's permissions reference (developers/topics/permissions).
ADMINISTRATOR = 1 << 3
DISCORD_PERMISSIONS: tuple[Permission, ...] = (
    Permission("View Channels", 1 << 10, "see the channel it is asked to draw in"),
    Permission("Send Messages", 1 << 11, "the status message and the results"),
    Permission("Send Messages in Threads", 1 << 38, "the same when /imagine is used in a thread"),
    Permission("Attach Files", 1 << 15, "the image grid and the picked images"),
    Permission("Read Message History", 1 << 16, "a result replies to the message it came from"),
)
DISCORD_THREAD_PERMISSIONS: tuple[Permission, ...] = (
    Permission("Create Public Threads", 1 << 35, "one thread per job (discord.threads)"),
)
DISCORD_SCOPES = ("bot", "applications.commands")
DISCORD_AUTHORIZE_URL = "https://discord.com/oauth2/authorize"
_SNOWFLAKE = re.compile(r"\A[0-9]{15,21}\Z")


def discord_permissions(*, threads: bool = False) -> tuple[Permission, ...]:
    return DISCORD_PERMISSIONS + (DISCORD_THREAD_PERMISSIONS if threads else ())


def discord_permission_value(*, threads: bool = False) -> int:
    value = 0
    for p in discord_permissions(threads=threads):
        value |= p.bit
    assert not value & ADMINISTRATOR, "the bot never asks for Administrator"
    return value


def application_id_from_token(token: str) -> str | None:
    """A bot token's first segment is its bot user's id in base64, which for every
    application made since 2016 is the application id. None when it does not decode."""
    first = token.strip().split(".", 1)[0]
    if not first:
        return None
    try:
        decoded = base64.b64decode(first + "=" * (-len(first) % 4), validate=False).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return decoded if _SNOWFLAKE.match(decoded) else None


def discord_application_id(env: Mapping[str, str]) -> str:
    """``DISCORD_APPLICATION_ID``, else read from ``DISCORD_TOKEN``. Never says the token."""
    given = (env.get("DISCORD_APPLICATION_ID") or "").strip()
    if given:
        if not _SNOWFLAKE.match(given):
            raise ConfigError(
                f"DISCORD_APPLICATION_ID {given!r} is not an application id (15 to 21 digits: "
                "Developer Portal > your app > General Information > Application ID)."
            )
        return given
    token = (env.get("DISCORD_TOKEN") or "").strip()
    if not token:
        raise ConfigError(
            "set DISCORD_APPLICATION_ID (Developer Portal > your app > General Information > "
            "Application ID), or DISCORD_TOKEN, to build the invite URL."
        )
    found = application_id_from_token(token)
    if found is None:
        raise ConfigError(
            "DISCORD_TOKEN does not look like a bot token (Bot > Reset Token gives one), so "
            "the application id cannot be read from it; set DISCORD_APPLICATION_ID instead."
        )
    return found


def discord_invite_url(application_id: str, *, threads: bool = False) -> str:
    query = {
        "client_id": application_id,
        "permissions": str(discord_permission_value(threads=threads)),
        "integration_type": "0",  # a server install (the bot user joins the server)
        "scope": " ".join(DISCORD_SCOPES),
    }
    return f"{DISCORD_AUTHORIZE_URL}?{urlencode(query)}"


def discord_text(env: Mapping[str, str], *, threads: bool = False) -> str:
    app_id = discord_application_id(env)
    perms = discord_permissions(threads=threads)
    lines = [
        "Invite the bot to your server (you need Manage Server there):",
        "",
        f"  {discord_invite_url(app_id, threads=threads)}",
        "",
        f"Scopes: {' + '.join(DISCORD_SCOPES)}. Permissions "
        f"({discord_permission_value(threads=threads)}), no Administrator:",
        *(f"  - {p.name}: {p.why}" for p in perms),
        "",
        "No privileged intents are needed: leave Presence, Server Members and Message Content "
        "off under Bot > Privileged Gateway Intents. The bot reads only its own commands.",
        "In a channel that limits who may post, give the bot's role the permissions above "
        "there too. Then type /imagine in the server (commands can take a minute to appear "
        "after the first start; DISCORD_SYNC_COMMANDS=<server id> makes them appear at once).",
    ]
    return "\n".join(lines)


def slack_text(http_url: str | None = None) -> tuple[str, str]:
    """The manifest as JSON alone (so ``setup slack > manifest.json`` works), and the words
    around it: which mode it is for and the steps after it."""
    manifest = json.dumps(slack_manifest(http_url), indent=2)
    mode = "Socket Mode" if http_url is None else f"HTTP mode ({slack_request_url(http_url)})"
    words = "\n".join(
        [
            "",
            f"That is the Slack app manifest for {mode}. Then:",
            slack_steps(http_url),
        ]
    )
    return manifest, words


def manifest_problems(manifest: Mapping[str, Any]) -> Sequence[str]:
    """Where ``manifest`` breaks Slack's documented manifest limits (empty when it fits)."""
    problems: list[str] = []
    info = manifest.get("display_information", {})
    if not 0 < len(info.get("name", "")) <= 35:
        problems.append("display_information.name must be 1..35 characters")
    if len(info.get("description", "")) > 140:
        problems.append("display_information.description is over 140 characters")
    features = manifest.get("features", {})
    bot_user = features.get("bot_user", {})
    if not re.fullmatch(r"[a-z0-9._-]{1,80}", bot_user.get("display_name", "")):
        problems.append("bot_user.display_name: 1..80 of a-z 0-9 - _ .")
    socket = manifest.get("settings", {}).get("socket_mode_enabled", False)
    shortcuts = features.get("shortcuts", [])
    if len(shortcuts) > 10:
        problems.append("at most 10 shortcuts")
    for s in shortcuts:
        if s.get("type") not in ("message", "global"):
            problems.append(f"shortcut {s.get('name')}: type must be message or global")
        if not 0 < len(s.get("callback_id", "")) <= 255:
            problems.append(f"shortcut {s.get('name')}: callback_id 1..255 characters")
        if not s.get("name"):
            problems.append("a shortcut needs a name")
        if not 0 < len(s.get("description", "")) <= 150:
            problems.append(f"shortcut {s.get('name')}: description 1..150 characters")
    commands = features.get("slash_commands", [])
    if len(commands) > 50:
        problems.append("at most 50 slash commands")
    for c in commands:
        name = c.get("command", "")
        if not re.fullmatch(r"/[a-z0-9_-]{1,31}", name):
            problems.append(f"slash command {name!r}: a / and 1..31 of a-z 0-9 - _")
        if not 0 < len(c.get("description", "")) <= 2000:
            problems.append(f"slash command {name}: description 1..2000 characters")
        if len(c.get("usage_hint", "")) > 1000:
            problems.append(f"slash command {name}: usage_hint over 1000 characters")
        if not socket and not str(c.get("url", "")).startswith("https://"):
            problems.append(f"slash command {name}: an https url is required without Socket Mode")
    interactivity = manifest.get("settings", {}).get("interactivity", {})
    needs_url = bool(shortcuts or interactivity.get("is_enabled")) and not socket
    if needs_url and not str(interactivity.get("request_url", "")).startswith("https://"):
        problems.append("interactivity.request_url: https required without Socket Mode")
    return problems
