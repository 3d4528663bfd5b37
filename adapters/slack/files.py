"""Pictures in from Slack: a file someone shared, downloaded from Slack's own file hosts only.

Slack serves a workspace's files from ``files.slack.com`` to a request that carries the bot
token (``url_private_download``, docs.slack.dev "Working with files"). The token is sent
nowhere else: a file whose URL names another host is refused, redirects are not followed, and
the download is capped in size and time. The bytes then go to the core like any other
starting picture, through its one image gate (``bot/images.py``), which decides whether they
are an image it will use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp

log = logging.getLogger(__name__)

SLACK_FILE_HOSTS = frozenset({"files.slack.com"})
DOWNLOAD_TIMEOUT_S = 20.0


class FileRefused(Exception):
    """A file that cannot be used; ``str()`` is a friendly sentence for the user."""


def first_image(files: Any) -> Mapping[str, Any] | None:
    """The first image among a message's (or a file input's) files."""
    if not isinstance(files, Sequence):
        return None
    for f in files:
        if isinstance(f, Mapping) and str(f.get("mimetype") or "").startswith("image/"):
            return f
    return None


def allowed_hosts(api_url: str | None) -> frozenset[str]:
    """Slack's file hosts, and the host of a configured API base (a proxy or a test fake:
    every external base URL is a setting)."""
    hosts = set(SLACK_FILE_HOSTS)
    if api_url:
        host = urlsplit(api_url).hostname
        if host:
            hosts.add(host)
    return frozenset(hosts)


async def download(
    file: Mapping[str, Any],
    token: str,
    *,
    hosts: frozenset[str],
    max_bytes: int,
    timeout_s: float = DOWNLOAD_TIMEOUT_S,
    session: aiohttp.ClientSession | None = None,
) -> bytes:
    """The file's bytes, or :class:`FileRefused` saying why not."""
    size = file.get("size")
    if isinstance(size, int) and size > max_bytes:
        raise FileRefused(
            f"That picture is {size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB."
        )
    url = str(file.get("url_private_download") or file.get("url_private") or "")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or parts.hostname not in hosts:
        log.warning("a Slack file outside Slack's file hosts was not downloaded")
        raise FileRefused("That picture is not a file Slack holds, so it cannot be used.")
    if parts.scheme == "http" and parts.hostname in SLACK_FILE_HOSTS:
        raise FileRefused("That picture is not a file Slack holds, so it cannot be used.")
    own = session is None
    http = session or aiohttp.ClientSession()
    try:
        async with asyncio.timeout(timeout_s):
            async with http.get(
                url, headers={"Authorization": f"Bearer {token}"}, allow_redirects=False
            ) as resp:
                if resp.status != 200:
                    log.warning("downloading a Slack file answered HTTP %s", resp.status)
                    raise FileRefused("Slack would not hand over that picture. Try again later.")
                if (resp.content_length or 0) > max_bytes:
                    raise FileRefused(f"That picture is over the {max_bytes / 2**20:.0f} MB limit.")
                data = await resp.content.read(max_bytes + 1)
                if len(data) > max_bytes:
                    raise FileRefused(f"That picture is over the {max_bytes / 2**20:.0f} MB limit.")
                return data
    except TimeoutError:
        raise FileRefused("That picture took too long to download. Try again.") from None
    except aiohttp.ClientError as exc:
        log.warning("downloading a Slack file failed (%s)", type(exc).__name__)
        raise FileRefused("That picture could not be downloaded. Try again.") from None
    finally:
        if own:
            await http.close()


__all__ = ["FileRefused", "allowed_hosts", "download", "first_image"]
