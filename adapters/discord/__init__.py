"""The Discord adapter (discord.py 2.7, gateway): slash commands, buttons and modals on the core.

``ADAPTER`` is what ``imagine-bot serve`` sees: enabled when DISCORD_TOKEN is set; discord.py
is imported only when the adapter starts, so a missing library never stops the others. Inside
the package::

    adapter.py  ImagineClient(core, ready=None): commands, DynamicItem buttons, the poster;
                serve(core, settings, ready): the gateway client, until cancelled
    shards.py   ShardedClient: the same on AutoShardedClient, when [discord] shards is set
    options.py  the grammar's flag table -> /imagine's typed options, and back to text; pure
    render.py   Reply -> message parts (text, files, buttons, modals); pure
    tokens.py   check(settings): doctor's token check (login: /users/@me, the application)

Setting a bot up from nothing (the invite URL, its permissions): README.md beside this file.

Commands: ``/imagine prompt:<text with flags> [image:<attachment>] [n:..] [ar:..] ...`` (one
optional option per flag in ``core.flag_help()``), ``/quota``, ``/imagine-admin text:<admin
command>`` (Manage Server, checked in code).

Environment: DISCORD_TOKEN (required); DISCORD_API_BASE_URL (a proxy or a test fake instead of
https://discord.com/api/v10; ``/api/v10`` is appended when no version is given);
DISCORD_GATEWAY_URL (a gateway instead of wss://gateway.discord.gg/); DISCORD_SYNC_COMMANDS
(``global``, the default, syncs the slash commands at start; a guild id syncs them to that
guild only, where they appear at once; ``off`` leaves them alone).
"""

from __future__ import annotations

from bot.core import AdapterSpec, Core, Ready, Settings, TokenCheck


def enabled(settings: Settings) -> bool:
    """Start this adapter when a bot token is configured."""
    return bool(settings.secret("DISCORD_TOKEN"))


async def serve(core: Core, settings: Settings, ready: Ready) -> None:
    """Connect to the gateway and serve until cancelled."""
    from adapters.discord import adapter

    await adapter.serve(core, settings, ready)


async def check(settings: Settings) -> list[TokenCheck]:
    """``doctor``: does each configured token work, and is it the right kind?"""
    from adapters.discord import tokens

    return await tokens.check(settings)


ADAPTER = AdapterSpec(name="discord", enabled=enabled, serve=serve, check=check)

__all__ = ["ADAPTER", "check", "enabled", "serve"]
