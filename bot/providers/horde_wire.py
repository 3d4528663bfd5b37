"""The AI Horde's wire details: its error bodies, its prompt syntax, its status fields.

Pure functions over what the Horde sends and expects (see :mod:`bot.providers.horde` for the
contract and its source); no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from bot.providers.base import (
    AuthFailed,
    ContentFiltered,
    GenerationRequest,
    InvalidRequest,
    NotFound,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    WeightedPrompt,
)
from bot.providers.http import error_for_status, json_or_none

# ------------------------------------------------------------------------------ error bodies
_KEY_HINT = "set AI_HORDE_API_KEY to a registered key (free at aihorde.net/register)"


def classify(status: int, body: bytes, headers: httpx.Headers) -> ProviderError:
    """``{"message", "rc"}`` (``horde/exceptions.py``); input validation adds ``errors``."""
    data = json_or_none(body)
    rc = message = ""
    if isinstance(data, dict):
        rc = str(data.get("rc") or "")
        message = str(data.get("message") or "")
        if isinstance(data.get("errors"), dict):
            message += " " + "; ".join(f"{k}: {v}" for k, v in data["errors"].items())
    text = f"HTTP {status} {rc}: {message[:300]}".strip()
    tag = rc or None
    if status == 401 or rc == "InvalidAPIKey":
        return AuthFailed(text, status=status, code=tag)
    if rc == "KudosUpfront":
        return InvalidRequest(
            text,
            status=status,
            code=tag,
            user_message=(
                "The AI Horde asks for kudos up front for a request this large (big sizes or "
                "many steps). Try a smaller size or fewer steps; an admin can "
                f"{_KEY_HINT}. Your quota was refunded."
            ),
        )
    if rc in ("CorruptPrompt", "Profanity"):
        return ContentFiltered(text, status=status, code=tag)
    if rc == "TooManyPrompts" or status == 429:
        return RateLimited(
            text,
            status=status,
            code=tag,
            user_message=(
                "The AI Horde has as many requests from this bot as it allows at once. Your "
                "quota was refunded; try again when the others are done."
            ),
        )
    if rc in ("TimeoutIP", "TooManyNewIPs", "UnsafeIP", "NotTrusted", "UntrustedUnsafeIP"):
        # A block for a while, not a rate: waiting seconds and retrying would not help.
        return ProviderUnavailable(
            text,
            status=status,
            code=tag,
            user_message=(
                "The AI Horde is not taking requests from this bot's address for a while. Your "
                "quota was refunded; try again later."
            ),
        )
    if rc in ("MaintenanceMode", "NoValidWorkers"):
        return ProviderUnavailable(
            text,
            status=status,
            code=tag,
            user_message=(
                "The AI Horde is in maintenance or has no workers right now. Your quota was "
                "refunded; try again later."
            ),
        )
    if rc in ("UnsupportedModel", "UnexpectedModelName"):
        return NotFound(text, status=status, code=tag)
    if rc == "RequestNotFound":
        # The request expired or was cleaned up while we waited.
        return ProviderUnavailable(text, status=status, code=tag)
    return error_for_status(status, f"{rc}: {message}" if rc else message, tag)


def horde_prompt(req: GenerationRequest) -> str:
    """Weights as ``(text:weight)``, negatives after ``###`` (the Horde's separator)."""
    pos: list[str] = []
    neg: list[str] = [req.negative_prompt] if req.negative_prompt else []
    for p in req.weighted_prompts or (WeightedPrompt(req.prompt),):
        if not p.text.strip():
            continue
        if p.weight < 0:
            neg.append(p.text)
        elif p.weight == 1.0:
            pos.append(p.text)
        else:
            pos.append(f"({p.text}:{p.weight:g})")
    prompt = ", ".join(pos) or req.prompt
    # "###" inside the user's own text would move the boundary.
    prompt = prompt.replace("###", "#")
    return f"{prompt} ### {', '.join(n.replace('###', '#') for n in neg)}" if neg else prompt


def queue_note(status: Mapping[str, Any]) -> str | None:
    wait = status.get("wait_time")
    about = f", about {int(wait)} s" if isinstance(wait, int | float) and wait > 0 else ""
    position = status.get("queue_position")
    if status.get("waiting") and isinstance(position, int) and position > 0:
        return f"#{position} in the Horde's queue{about}"
    if status.get("processing"):
        return f"a Horde worker is on it{about}"
    return None


def _seed(value: object, fallback: int) -> int:
    """The API types seeds as strings; ours are decimal, so they come back as such."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return fallback


def _censored(gen: Mapping[str, Any]) -> bool:
    if gen.get("censored") is True or gen.get("state") in ("censored", "csam"):
        return True
    meta = gen.get("gen_metadata")
    return isinstance(meta, Sequence) and any(
        isinstance(m, dict) and m.get("type") == "censorship" for m in meta
    )
