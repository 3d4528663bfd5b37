"""``doctor``'s Slack check: each configured token, asked of Slack through slack_sdk.

``SLACK_BOT_TOKEN`` goes to ``auth.test`` (no scope needed; the answer names the workspace
and the bot, and its ``x-oauth-scopes`` header lists the scopes the token has, which the core
compares with what the bot asks for). ``SLACK_APP_TOKEN`` goes to ``apps.connections.open``,
the call Socket Mode starts with, which needs ``connections:write``. A token of the wrong
kind (an ``xapp-`` where the ``xoxb-`` belongs) is named before anything is sent. The token
itself is never part of a result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.adapter import _api_url
from bot.core import Settings, TokenCheck

DEFAULT_API = "https://slack.com/api/"
KINDS = {
    "xoxb-": "a bot token",
    "xapp-": "an app-level token",
    "xoxp-": "a user token",
    "xoxe": "a refresh token (token rotation)",
}
# What Slack's documented auth errors mean for an operator.
ERRORS = {
    "invalid_auth": "Slack does not know this token (invalid_auth): it is mistyped, revoked, "
    "or from before the app was reinstalled",
    "not_authed": "Slack saw no token (not_authed)",
    "account_inactive": "the token belongs to a deactivated user or an uninstalled app "
    "(account_inactive)",
    "token_revoked": "the token was revoked (token_revoked): the app was uninstalled or its "
    "tokens reset",
    "token_expired": "the token expired (token_expired): turn token rotation off for this app",
    "not_allowed_token_type": "Slack refuses this kind of token here (not_allowed_token_type)",
    "missing_scope": "the token lacks a scope this needs (missing_scope)",
}


def token_kind(token: str) -> str:
    for prefix, kind in KINDS.items():
        if token.startswith(prefix):
            return kind
    return "not a Slack token"


def _wrong_kind(name: str, token: str, want: str, where: str) -> TokenCheck:
    return TokenCheck(name, False, f"holds {token_kind(token)}, not {want}: {where}", scopes=None)


def _header(headers: Mapping[str, Any], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return str(value)
    return None


def _failure(exc: BaseException, base: str) -> str:
    if isinstance(exc, SlackApiError):
        error = str(exc.response.get("error") or "unknown")
        text = ERRORS.get(error, f"Slack answered {error}")
        needed = exc.response.get("needed")
        return f"{text}; it needs {needed}" if needed else text
    return (
        f"cannot reach Slack at {base} ({type(exc).__name__}): check the network or SLACK_API_URL"
    )


async def _bot_token(token: str, base: str | None) -> TokenCheck:
    name = "SLACK_BOT_TOKEN"
    if not token.startswith("xoxb-"):
        return _wrong_kind(
            name,
            token,
            "a bot token (xoxb-...)",
            "Install App > Bot User OAuth Token is the one"
            + (
                ", and the xapp- one belongs in SLACK_APP_TOKEN"
                if token.startswith("xapp-")
                else ""
            ),
        )
    client = AsyncWebClient(token=token, base_url=base) if base else AsyncWebClient(token=token)
    try:
        resp = await client.auth_test()
    except (SlackApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
        return TokenCheck(name, False, _failure(exc, base or DEFAULT_API))
    header = _header(resp.headers, "x-oauth-scopes")
    scopes = frozenset(s.strip() for s in header.split(",") if s.strip()) if header else None
    detail = (
        f"works: workspace {resp.get('team')} ({resp.get('team_id')}), "
        f"bot user {resp.get('user')} ({resp.get('user_id')})"
    )
    return TokenCheck(name, True, detail, scopes=scopes)


async def _app_token(token: str, base: str | None) -> TokenCheck:
    name = "SLACK_APP_TOKEN"
    if not token.startswith("xapp-"):
        return _wrong_kind(
            name,
            token,
            "an app-level token (xapp-...)",
            "Basic Information > App-Level Tokens, with the scope connections:write",
        )
    client = AsyncWebClient(token=token, base_url=base) if base else AsyncWebClient(token=token)
    try:
        await client.apps_connections_open(app_token=token)
    except (SlackApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
        return TokenCheck(name, False, _failure(exc, base or DEFAULT_API))
    return TokenCheck(name, True, "works: Socket Mode can connect (connections:write)")


def _signing_secret(settings: Settings) -> TokenCheck | None:
    name = "SLACK_SIGNING_SECRET"
    secret = settings.secret(name)
    if settings.secret("SLACK_APP_TOKEN"):
        return None  # Socket Mode: not used
    if not secret:
        return TokenCheck(
            name,
            False,
            "not set, and without SLACK_APP_TOKEN the bot runs in HTTP mode, which needs it "
            "(Basic Information > App Credentials > Signing Secret)",
        )
    if token_kind(secret) != "not a Slack token":
        return TokenCheck(name, False, f"holds {token_kind(secret)}, not the signing secret")
    return TokenCheck(name, True, "set (Slack checks it on each request: HTTP mode)")


async def check(settings: Settings) -> list[TokenCheck]:
    base = _api_url(settings.env)
    results: list[TokenCheck] = []
    bot = settings.secret("SLACK_BOT_TOKEN")
    if bot:
        results.append(await _bot_token(bot.strip(), base))
    else:
        results.append(
            TokenCheck(
                "SLACK_BOT_TOKEN",
                False,
                "not set: Install App > Bot User OAuth Token (xoxb-...); "
                "imagine-bot setup slack prints every step",
            )
        )
    app = settings.secret("SLACK_APP_TOKEN")
    if app:
        results.append(await _app_token(app.strip(), base))
    signing = _signing_secret(settings)
    if signing is not None:
        results.append(signing)
    return results
