"""Personal links: a signed link that binds a browser to one name. Pure: no aiohttp.

``imagine-bot web-link NAME [--admin] [--days N]`` prints a link for this data dir's playground.
Opening it sets an HttpOnly cookie holding the same signed token; from then on that browser
acts as NAME, whatever it types. The token is ``v1.<payload>.<mac>``: the payload (base64url
JSON: user id, display name, admin, issued, expires) signed with HMAC-SHA256 under a secret kept
in the data dir (``web-link.key``, created on first use with mode 0600). Changing one character
of the link, or using it after it expires, gets a refusal page. Deleting the key file voids every
link ever issued (the way to revoke one).

A linked name is **reserved**: the issued names are recorded in ``web-links.json`` beside the
key, and a browser without a link cannot take one of them in any case or spelling (the names
are compared as :func:`adapters.web.access.user_id_of` normalises them). ``web.admins`` apply
to linked identities only.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from adapters.web.access import InputError, clean_display, user_id_of

SECRET_FILE = "web-link.key"
NAMES_FILE = "web-links.json"
LOCK_FILE = "web-links.lock"
VERSION = "v1"
MAX_DAYS = 366
DEFAULT_DAYS = 30
MAX_TOKEN_CHARS = 1024


class LinkRefused(Exception):
    """A link or cookie that must not be honoured; the message is fit for the refusal page."""


@dataclass(frozen=True)
class Identity:
    """Who a personal link says this browser is."""

    user_id: str
    display_name: str
    admin: bool
    expires_at: int
    issued_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_or_create_secret(data_dir: Path) -> bytes:
    """The data dir's link secret; made on first use, readable by this user only."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    secret = secrets.token_bytes(32)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(secret.hex() + "\n")
    return secret


def _read_secret(path: Path) -> bytes:
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)  # a copy with a looser mode: from now on nobody else reads it
    try:
        secret = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except ValueError:
        secret = b""
    if len(secret) < 32:
        raise OSError(f"{path} is damaged; delete it to start over (old links stop working)")
    return secret


def _mac(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, f"{VERSION}.{payload}".encode(), hashlib.sha256).digest())


def sign(secret: bytes, identity: Identity) -> str:
    body = {
        "u": identity.user_id,
        "n": identity.display_name,
        "a": identity.admin,
        "i": identity.issued_at,
        "e": identity.expires_at,
    }
    payload = _b64(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())
    return f"{VERSION}.{payload}.{_mac(secret, payload)}"


def verify(secret: bytes, token: str, now: float | None = None) -> Identity:
    """The identity in ``token``; raises :class:`LinkRefused` saying why it is not honoured."""
    parts = token.split(".") if len(token) <= MAX_TOKEN_CHARS else []
    if len(parts) != 3 or parts[0] != VERSION:
        raise LinkRefused(
            "This is not a personal link of this playground (it is incomplete "
            "or was changed). Ask for a new one."
        )
    payload, mac = parts[1], parts[2]
    if not hmac.compare_digest(_mac(secret, payload), mac):
        raise LinkRefused(
            "This link was changed after it was made, or it belongs to another "
            "playground, so it cannot be used. Ask for a new one."
        )
    try:
        body = json.loads(_unb64(payload))
        identity = Identity(
            user_id=str(body["u"]),
            display_name=str(body["n"]),
            admin=bool(body["a"]),
            issued_at=int(body["i"]),
            expires_at=int(body["e"]),
        )
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise LinkRefused("This link cannot be read. Ask for a new one.") from None
    if (time.time() if now is None else now) >= identity.expires_at:
        ended = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(identity.expires_at))
        raise LinkRefused(f"This personal link expired on {ended}. Ask for a new one.")
    return identity


@contextlib.contextmanager
def _names_lock(data_dir: Path) -> Iterator[None]:
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_names(path: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError:
        raise OSError(
            f"{path} is damaged; fix or delete it (linked names are then free again)"
        ) from None
    names = data.get("names", {}) if isinstance(data, dict) else {}
    return {str(k): dict(v) for k, v in names.items() if isinstance(v, dict)}


def issue(
    data_dir: Path,
    name: str,
    *,
    admin: bool = False,
    days: int = DEFAULT_DAYS,
    now: float | None = None,
) -> tuple[str, Identity]:
    """Sign a link token for ``name`` and reserve the name; raises InputError for a bad one."""
    if not 1 <= days <= MAX_DAYS:
        raise InputError(f"--days must be 1 to {MAX_DAYS}.")
    display = clean_display(name)
    user_id = user_id_of(display)
    at = int(time.time() if now is None else now)
    identity = Identity(
        user_id=user_id,
        display_name=display,
        admin=admin,
        issued_at=at,
        expires_at=at + days * 86400,
    )
    secret = load_or_create_secret(data_dir)
    path = data_dir / NAMES_FILE
    with _names_lock(data_dir):
        names = _read_names(path)
        names[user_id] = {
            "name": display,
            "admin": admin,
            "issued": at,
            "expires": identity.expires_at,
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"version": 1, "names": names}, indent=1, sort_keys=True, ensure_ascii=False)
            + "\n",
            encoding="utf-8",
        )
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)  # readers see the old file or the new one, never half of one
    return sign(secret, identity), identity


class ReservedNames:
    """The linked names, read again whenever ``web-links.json`` changes (the CLI writes it
    while the playground runs)."""

    def __init__(self, data_dir: Path, extra: tuple[str, ...] = ()) -> None:
        self._path = data_dir / NAMES_FILE
        self._extra = frozenset(user_id_of(e, strict=False) for e in extra) - {""}
        self._seen: tuple[int, int] | None = None
        self._names: frozenset[str] = frozenset()
        self._all: frozenset[str] = self._extra

    def current(self) -> frozenset[str]:
        try:
            st = self._path.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._seen:
            self._seen = stamp
            # A damaged file keeps the names last read: nobody's name is freed by it.
            with contextlib.suppress(OSError):
                self._names = frozenset(_read_names(self._path)) if stamp else frozenset()
            self._all = self._names | self._extra
        return self._all

    def __contains__(self, user_id: object) -> bool:
        return user_id in self.current()


def link_url(base: str, token: str) -> str:
    return f"{base.rstrip('/')}/link?t={token}"


__all__ = [
    "DEFAULT_DAYS",
    "Identity",
    "LinkRefused",
    "ReservedNames",
    "issue",
    "link_url",
    "load_or_create_secret",
    "sign",
    "verify",
]
