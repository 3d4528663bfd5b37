"""``store.url``: which database the bot keeps its state in, checked without a driver.

Empty (the default): SQLite in the data dir. ``postgresql://user:password@host:5432/imagine``:
the PostgreSQL store. The password is a secret: :func:`masked` is the only form of the URL
that may be printed or logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

SCHEMES = ("postgresql", "postgres")
DEFAULT_PORT = 5432


class BadStoreUrl(ValueError):
    """What is wrong with a ``store.url``, in words that never repeat the password."""


@dataclass(frozen=True)
class StoreUrl:
    """A checked PostgreSQL URL: ``dsn`` for the driver, ``shown`` for people."""

    dsn: str
    shown: str
    host: str
    port: int
    database: str
    user: str
    password: str | None


def _split(url: str) -> SplitResult:
    try:
        return urlsplit(url.strip())
    except ValueError:  # an unbalanced [ in the host
        raise BadStoreUrl(
            "is not a URL like postgresql://user:password@host:5432/imagine"
        ) from None


def parse(url: str) -> StoreUrl:
    """Check ``url``; :class:`BadStoreUrl` says what is wrong (the scheme, the port, a missing
    host or database name)."""
    parts = _split(url)
    if parts.scheme.lower() not in SCHEMES:
        got = f"{parts.scheme}://" if parts.scheme else "no scheme"
        raise BadStoreUrl(
            f"must start with postgresql:// (got {got}); leave it empty to keep SQLite in "
            "the data dir"
        )
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise BadStoreUrl("has a port that is not a number from 1 to 65535") from None
    if not 1 <= port <= 65535:
        raise BadStoreUrl("has a port that is not a number from 1 to 65535")
    host = parts.hostname or ""
    if not host and "host=" not in parts.query:
        raise BadStoreUrl("names no host (postgresql://user:password@HOST:5432/imagine)")
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise BadStoreUrl("names no database (postgresql://user:password@host:5432/DATABASE)")
    return StoreUrl(
        dsn=url.strip(),
        shown=masked(url),
        host=host,
        port=port,
        database=database,
        user=unquote(parts.username or ""),
        password=None if parts.password is None else unquote(parts.password),
    )


def masked(url: str) -> str:
    """``url`` with its password (in the netloc or a ``password=`` parameter) as ``***``."""
    try:
        parts = _split(url)
    except BadStoreUrl:
        return "(a URL that cannot be read)"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}{':***' if colon else ''}@{hostport}"
    query = "&".join(
        "password=***" if q.lower().startswith("password=") else q
        for q in parts.query.split("&")
        if q
    )
    return parts._replace(netloc=netloc, query=query, fragment="").geturl()


def password_of(url: str) -> str | None:
    """The password in ``url``, for the log filter that hides it; None when it has none."""
    try:
        parts = _split(url)
    except BadStoreUrl:
        return None
    for q in parts.query.split("&"):
        if q.lower().startswith("password="):
            return unquote(q.partition("=")[2]) or None
    return None if parts.password is None else (unquote(parts.password) or None)


__all__ = ["BadStoreUrl", "StoreUrl", "masked", "parse", "password_of"]
