"""Who may use the playground and from where: pure rules, no aiohttp.

Two kinds of people: **guests**, who type a name (the page suggests one) and are never admins,
and **linked** people, who opened a personal link (:mod:`adapters.web.links`) and are who the
link says. A guest cannot take a linked name or an admin's.

Kept apart from :mod:`adapters.web.server` so that ``serve`` can refuse an exposed address
before anything is opened, and the CLI's ``quota --platform web`` can name a playground user
the way the page does, without starting a web server.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Container

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


def clean_display(name: str) -> str:
    """A typed name as shown: whitespace collapsed, at most 64 characters."""
    return " ".join(str(name).split())[:MAX_NAME_CHARS]


def user_id_of(name: str, *, strict: bool = True) -> str:
    """The one rule that turns a name into a user id ("  Alice! " -> "alice"): used for typed
    names, linked names and the names in ``web.admins`` alike, so no spelling slips past."""
    user_id = re.sub(r"[^a-z0-9_.-]", "", re.sub(r"\s+", "_", clean_display(name).lower()))[:32]
    if strict and not USER_ID_RE.fullmatch(user_id):
        raise InputError("Type a name with letters or digits ('.', '_' and '-' are fine too).")
    return user_id


def web_actor(name: str, admins: tuple[str, ...] = ()) -> Actor:
    """A playground user as the operator names one (``imagine-bot quota --platform web``):
    the same user id the page uses, an admin when ``admins`` lists it."""
    display = clean_display(name)
    user_id = user_id_of(display)
    listed = {user_id_of(a, strict=False) for a in admins}
    return Actor(
        platform=PLATFORM,
        tenant=TENANT,
        user_id=user_id,
        display_name=display,
        is_admin=user_id in listed,
    )


def guest_actor(name: str, reserved: Container[str] = ()) -> Actor:
    """A browser without a personal link: whatever name the person typed, normalised to a user
    id. A guest is never an admin, and cannot take a name in ``reserved`` (linked names and
    admins'), in any case or spelling."""
    display = clean_display(name)
    user_id = user_id_of(display)
    if user_id in reserved:
        raise InputError(
            f"The name {display!r} belongs to someone with a personal link; "
            "choose another name (or open your own personal link)."
        )
    return Actor(platform=PLATFORM, tenant=TENANT, user_id=user_id, display_name=display)


def linked_actor(
    user_id: str, display_name: str, *, admin: bool, admins: tuple[str, ...] = ()
) -> Actor:
    """Someone who opened a personal link: an admin when the link says so or ``web.admins``
    names them."""
    listed = {user_id_of(a, strict=False) for a in admins}
    return Actor(
        platform=PLATFORM,
        tenant=TENANT,
        user_id=user_id,
        display_name=display_name or user_id,
        is_admin=admin or user_id in listed,
    )
