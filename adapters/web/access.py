"""Who may use the playground and from where: pure rules, no aiohttp.

Kept apart from :mod:`adapters.web.server` so that ``serve`` can refuse an exposed address
before anything is opened, and the CLI's ``quota --platform web`` can name a playground user
the way the page does, without starting a web server.
"""

from __future__ import annotations

import ipaddress
import re

from bot.core import Settings
from bot.errors import ConfigError
from bot.types import Actor

PLATFORM = "web"
TENANT = "local"  # one playground per data dir
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_NAME_CHARS = 64
USER_ID_RE = re.compile(r"[a-z0-9_.-]{1,32}")


class InputError(Exception):
    """A request the page should not have sent (bad name, unknown channel); shown as is."""


def is_loopback(host: str) -> bool:
    """True for names that only ever reach this machine."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, access_token: str | None) -> None:
    """Refuse to expose the playground beyond this machine without an access token."""
    if not is_loopback(host) and not access_token:
        raise ConfigError(
            f"Setting web.host is {host!r}, which other machines can reach: set "
            "web.access_token (or WEB_ACCESS_TOKEN) first, or bind to 127.0.0.1."
        )


def web_admins(settings: Settings) -> tuple[str, ...]:
    """Playground user ids that are admins: ``web.admins`` and ``bot.admins``' ``web:`` ones."""
    return tuple(settings.web.admins) + tuple(
        entry.split(":", 1)[1] for entry in settings.bot.admins if entry.startswith(f"{PLATFORM}:")
    )


def web_actor(name: str, admins: tuple[str, ...] = ()) -> Actor:
    """The playground's identity: whatever name the person typed, normalised to a user id."""
    display = " ".join(str(name).split())[:MAX_NAME_CHARS]
    user_id = re.sub(r"[^a-z0-9_.-]", "", re.sub(r"\s+", "_", display.lower()))[:32]
    if not USER_ID_RE.fullmatch(user_id):
        raise InputError("Type your name first (letters, digits, '.', '_' or '-').")
    return Actor(
        platform=PLATFORM,
        tenant=TENANT,
        user_id=user_id,
        display_name=display,
        is_admin=user_id in admins,
    )
