"""The Discord adapter (discord.py 2.7, gateway): slash commands, buttons and modals on the core.

Entry points (imported lazily by ``imagine-bot serve``)::

    enabled(settings) -> bool                  # DISCORD_TOKEN is set
    ImagineClient(app, ready=None)             # commands, DynamicItem buttons, "discord" poster
    await serve(app, ready=None)               # gateway client; runs until cancelled

Commands: ``/imagine prompt:<text with flags> [image:<attachment>]``, ``/quota``,
``/imagine-admin text:<admin command>`` (Manage Server, checked in code).

Environment: DISCORD_TOKEN (required); DISCORD_API_BASE_URL (a proxy or a test fake instead of
https://discord.com/api/v10; ``/api/v10`` is appended when no version is given);
DISCORD_GATEWAY_URL (a gateway instead of wss://gateway.discord.gg/); DISCORD_SYNC_COMMANDS
(``global``, the default, syncs the slash commands at start; a guild id syncs them to that
guild only, where they appear at once; ``off`` leaves them alone).
"""

from __future__ import annotations

from adapters.discord.adapter import (
    DiscordPoster,
    ImagineClient,
    InteractionResponder,
    actor_for,
    api_base,
    enabled,
    serve,
)

__all__ = [
    "DiscordPoster",
    "ImagineClient",
    "InteractionResponder",
    "actor_for",
    "api_base",
    "enabled",
    "serve",
]
