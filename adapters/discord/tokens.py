"""``doctor``'s Discord check: ``DISCORD_TOKEN``, asked of Discord through discord.py.

``Client.login`` is what ``serve`` starts with: ``GET /users/@me`` (401 for a bad token,
which discord.py raises as ``LoginFailure``) and then the application's own record, which
tells the application id (compared with ``DISCORD_APPLICATION_ID`` when that is set) and
whether an Interactions Endpoint URL is set (then Discord sends commands there, never to the
gateway). With ``discord.shards`` set (or more than one shard recommended), the setting is
shown beside Discord's ``GET /gateway/bot``. No gateway connection is made. The token itself
is never part of a result.
"""

from __future__ import annotations

import aiohttp
import discord

from adapters.discord.adapter import api_base
from bot.core import Settings, TokenCheck

NAME = "DISCORD_TOKEN"
DEFAULT_API = "https://discord.com/api/v10"


def _shape_problem(token: str) -> str | None:
    """A token of the wrong kind, named before anything is sent."""
    if token.lower().startswith(("bot ", "bearer ")):
        return "starts with 'Bot ' or 'Bearer ': give the token alone, the bot adds the prefix"
    if token.count(".") != 2:
        return (
            "is not a bot token (those have three parts separated by dots; the Client Secret "
            "and the Public Key are other fields): Developer Portal > Bot > Reset Token"
        )
    return None


async def check(settings: Settings) -> list[TokenCheck]:
    token = (settings.secret(NAME) or "").strip()
    if not token:
        return [TokenCheck(NAME, False, "not set: Developer Portal > Bot > Reset Token")]
    problem = _shape_problem(token)
    if problem is not None:
        return [TokenCheck(NAME, False, problem)]
    base = api_base(settings.env)
    saved = discord.http.Route.BASE
    client = discord.Client(intents=discord.Intents.none())
    try:
        if base is not None:
            discord.http.Route.BASE = base
        await client.login(token)
        shards = await _shards(client, settings)
    except discord.LoginFailure:
        return [
            TokenCheck(
                NAME,
                False,
                "Discord refused the token (401 Unauthorized): it was reset or mistyped; "
                "Developer Portal > Bot > Reset Token gives a new one",
            )
        ]
    except discord.HTTPException as exc:
        return [TokenCheck(NAME, False, f"Discord answered HTTP {exc.status}")]
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        where = base or DEFAULT_API
        return [
            TokenCheck(
                NAME,
                False,
                f"cannot reach Discord at {where} ({type(exc).__name__}): check the network "
                "or DISCORD_API_BASE_URL",
            )
        ]
    finally:
        await client.close()
        discord.http.Route.BASE = saved
    user, app = client.user, client.application
    assert user is not None and app is not None  # login sets both or raises
    results = [
        TokenCheck(NAME, True, f"works: bot user {user.name} ({user.id}), application {app.id}")
    ]
    given = (settings.env.get("DISCORD_APPLICATION_ID") or "").strip()
    if given and given != str(app.id):
        results.append(
            TokenCheck(
                "DISCORD_APPLICATION_ID",
                False,
                f"is {given}, but the token belongs to application {app.id}: the invite URL "
                "from imagine-bot setup discord would add another app; fix or unset it",
            )
        )
    if shards is not None:
        results.append(shards)
    if app.interactions_endpoint_url:
        results.append(
            TokenCheck(
                "DISCORD_TOKEN",
                False,
                "the application has an Interactions Endpoint URL set, so Discord sends the "
                "commands there and never to this bot: clear it under General Information",
            )
        )
    return results


async def _shards(client: discord.Client, settings: Settings) -> TokenCheck | None:
    """The shard setting beside what Discord recommends (``GET /gateway/bot``); None when
    neither sharding is set nor recommended."""
    plan = settings.discord.shard_plan()
    try:
        recommended, _, limits = await client.http.get_bot_gateway()
    except discord.DiscordException:
        recommended, limits = None, None
    if plan is None and (recommended is None or recommended <= 1):
        return None
    setting = plan.describe() if plan is not None else "off (one connection)"
    if recommended is None:
        return TokenCheck("shards", True, f"{setting}; GET /gateway/bot did not answer")
    assert limits is not None
    detail = (
        f"{setting}; Discord recommends {recommended}, {limits['max_concurrency']} "
        f"may start per 5 s, {limits['remaining']} session starts left today"
    )
    if plan is None:
        detail += ' (sharding is required from 2,500 servers: discord.shards = "auto")'
    return TokenCheck("shards", True, detail)
