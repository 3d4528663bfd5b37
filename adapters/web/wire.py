"""Translation between the core's objects and the page's JSON, and small request helpers:
pure functions, no state."""

from __future__ import annotations

import hmac
import html
import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from adapters.web.access import (
    InputError,
)
from adapters.web.live import Message
from bot.core import GalleryItem, JobDetails
from bot.types import (
    FlagHelp,
    Form,
    ImageFile,
)

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
# An allowlist rather than a static directory route: nothing else in the package is served.
STATIC_FILES: Mapping[str, str] = {
    "app.js": "text/javascript",
    "style.css": "text/css",
}
PUBLIC_PATHS = frozenset({"/healthz", "/link", "/static/style.css"})  # no access needed
TOKEN_COOKIE = "imagine_token"
ID_COOKIE = "imagine_id"
UPLOAD_HEADER = "X-Imagine-Upload"  # a cross-site form cannot send it
MAX_BODY_BYTES = 256 * 1024
MAX_LINE_CHARS = 8000
SHA256_RE = re.compile(r"[0-9a-f]{64}")
JOB_ID_RE = re.compile(r"[a-z2-9]{12}")
FINAL = frozenset({"done", "failed", "filtered"})
QUOTA_PUSH_S = 0.25  # coalesce the badge updates of one person's burst of results
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def parse_line(text: str) -> tuple[str, str] | None:
    """Translate a typed line to ``(command, rest)``; ``None`` for an empty line.

    This is the adapter's only parsing: flags are the core grammar's business, and so is an
    unknown command (the core answers it, with the closest real one).
    """
    line = text.strip()
    if not line:
        return None
    if not line.startswith("/"):
        return "imagine", line
    head, _, rest = line.partition(" ")
    return head[1:].lower(), rest.strip()


def hint_text(flags: Sequence[FlagHelp]) -> str:
    """The one-line hint, from the grammar's flag table (the page draws the same table)."""
    shown = " ".join(f"[{f'{f.name} {f.value}'.strip()}]" for f in flags)
    return f"Type /imagine <prompt> {shown}, /imagine help for what each flag does, or /quota."


def _flag_json(flag: FlagHelp) -> Message:
    return {"name": flag.name, "value": flag.value, "help": flag.help, "example": flag.example}


def _image_url(sha: str) -> str | None:
    sha = sha.lower()
    return f"/images/{sha}" if SHA256_RE.fullmatch(sha) else None


def _image_json(image: ImageFile, alt: str = "") -> Message:
    # The page saves an image from url + "?download=1": not repeated in every card.
    return {
        "url": _image_url(image.sha256),
        "filename": image.filename,
        "width": image.width,
        "height": image.height,
        "kind": image.kind,
        "alt": alt,
    }


def _alt(prompt: str, index: int | None = None, of: int | None = None) -> str:
    """Alt text from the prompt: what a screen reader says instead of a file name."""
    what = prompt.strip()
    if not what:
        return ""  # the page knows the prompt from the card this belongs to
    if index is None:
        return f"Preview grid: {what}"
    return f"Image {index} of {of}: {what}" if of and of > 1 else what


def _form_json(form: Form) -> Message:
    return {
        "title": form.title,
        "action": form.action,
        "submit_label": form.submit_label,
        "fields": [
            {
                "name": f.name,
                "label": f.label,
                "value": f.value,
                "kind": f.kind,
                "min": f.min_value,
                "max": f.max_value,
            }
            for f in form.fields
            if f.kind != "image"  # the web dialog takes no uploads: the field is optional
        ],
    }


def _details_json(d: JobDetails) -> Message:
    n = len(d.images)
    return {
        "job_id": d.job_id,
        "outcome": d.outcome,
        "prompt": d.prompt,
        "owner": d.owner_id,
        "owner_name": d.owner_name,
        "kind": d.kind,
        "channel": d.channel_id,
        "parent_job_id": d.parent_job_id,
        "parent_index": d.parent_index,
        "created_at": d.created_at,
        "images": [
            {**_image_json(img, _alt(d.prompt, i, n)), "index": i}
            for i, img in enumerate(d.images, 1)
        ],
    }


def _gallery_json(item: GalleryItem) -> Message:
    return {
        **_image_json(item.image, _alt(item.prompt)),
        "job_id": item.job_id,
        "index": item.index,
        "prompt": item.prompt,
        "owner": item.owner_id,
        "owner_name": item.owner_name,
        "channel": item.channel_id,
        "kind": item.kind,
        "created_at": item.created_at,
    }


async def _read_capped(part: BodyPartReader, limit: int, too_big: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise InputError(too_big)
        chunks.append(chunk)
    return b"".join(chunks)


async def _json_body(request: web.Request) -> dict[str, Any]:
    # Requiring JSON also means a plain cross-site form cannot post here without a CORS
    # preflight, which this server never grants.
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="Send JSON.")
    try:
        body = json.loads(await request.text())
    except RecursionError:  # [[[[... deeper than the parser goes
        raise InputError("That request was nested too deeply to read.") from None
    except ValueError:
        raise InputError("That request was not valid JSON.") from None
    if not isinstance(body, dict):
        raise InputError("That request was not a JSON object.")
    return body


def _int(raw: str | None, default: int, low: int, high: int) -> int:
    try:
        return max(low, min(high, int(raw or default)))
    except ValueError:
        return default


def _same_secret(offered: str, token: str) -> bool:
    return hmac.compare_digest(offered.encode(), token.encode())


def _is_file_within(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root.resolve()) and path.is_file()
    except OSError:
        return False


def _page(title: str, text: str, *, status: int) -> web.Response:
    """A small page for a browser (a refused link): no script, every word escaped."""
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        '<link rel="stylesheet" href="/static/style.css"></head>'
        '<body class="plain"><main class="refusal" data-testid="refusal">'
        f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>"
        '<p><a href="/">Go to the playground</a></p></main></body></html>'
    )
    return web.Response(
        text=body, status=status, content_type="text/html", headers={"Cache-Control": "no-store"}
    )
