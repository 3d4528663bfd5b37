"""The Slack adapter (slack-bolt, asyncio): slash commands, buttons, modals and the
"Refine with imagine" message shortcut (callback id ``imagine_refine``) and the "New image"
global shortcut (``imagine_new``: a modal with a prompt and an optional picture) on the core.

``ADAPTER`` is what ``imagine-bot serve`` sees: enabled when any of the Slack secrets is set
(a half-configured app is refused with the missing key named, rather than silently skipped);
slack-bolt is imported only when the adapter starts. Inside the package::

    adapter.py  build_bolt_app(core, client=None) -> AsyncApp: listeners and the poster;
                serve(core, settings, ready): Socket Mode or HTTP, until cancelled
    poster.py   SlackPoster: the core's ChannelPoster (chat.*, files_upload_v2), errors
    admins.py   AdminCache: users.info -> admin or not, cached, failing closed
    limits.py   HeldWebClient: calls paced to Slack's documented limits, held after a 429
    files.py    a shared picture in: Slack's own file hosts only, bot token, size/time capped
    render.py   Reply / Form -> Block Kit JSON, and modal submissions back; pure
    tokens.py   check(settings): doctor's token checks (auth.test, apps.connections.open)

Setting an app up from nothing, Socket Mode or HTTP: README.md beside this file.

Environment: SLACK_BOT_TOKEN (required), SLACK_SIGNING_SECRET (HTTP mode), SLACK_APP_TOKEN
(Socket Mode), SLACK_PORT / SLACK_HOST (HTTP mode, default 0.0.0.0:3000), SLACK_API_URL (a
proxy or a test fake in place of https://slack.com/api/).
"""

from __future__ import annotations

from bot.core import AdapterSpec, Core, Ready, Settings, TokenCheck

SECRETS = ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET")


def enabled(settings: Settings) -> bool:
    """Start this adapter when any of its tokens is configured; ``serve`` names what is missing."""
    return any(settings.secret(name) for name in SECRETS)


async def serve(core: Core, settings: Settings, ready: Ready) -> None:
    """Socket Mode when SLACK_APP_TOKEN is set, else HTTP on SLACK_PORT; until cancelled."""
    from adapters.slack import adapter

    await adapter.serve(core, settings, ready)


async def check(settings: Settings) -> list[TokenCheck]:
    """``doctor``: does each configured token work, and is it the right kind?"""
    from adapters.slack import tokens

    return await tokens.check(settings)


ADAPTER = AdapterSpec(name="slack", enabled=enabled, serve=serve, check=check)

__all__ = ["ADAPTER", "check", "enabled", "serve"]
