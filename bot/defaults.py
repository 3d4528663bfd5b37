"""Saved defaults: a user's and a channel's ``n``, aspect ratio, style, provider, model, remix.

The rule (:func:`merge`, pure): a flag typed in the command wins, then the user's own
default, then the channel's, then the bot's built-in value. The job records where each value
came from (``Display.sources``), so Info can say it. Values are checked when they are saved
(through the grammar itself, so the messages are the ones ``/imagine`` gives) and again when
they are used: a style or provider removed from the config since falls back to built-in.

Stored as JSON in :class:`~bot.storage.protocols.PreferenceRepository` (kind ``defaults``,
scope ``user`` or ``channel``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from bot import grammar
from bot.errors import UserError

if TYPE_CHECKING:
    from bot.context import Context
    from bot.types import Actor

KIND = "defaults"
FLAG, YOURS, CHANNEL, BUILTIN, INPUT = (
    "flag",
    "your default",
    "channel default",
    "built-in",
    "input image",
)
KEYS = ("n", "ar", "style", "provider", "model", "remix")
_CLEAR = {"none", "-", "off-default", "default", "unset"}
_ON, _OFF = {"on", "true", "yes", "1"}, {"off", "false", "no", "0"}


@dataclass(frozen=True)
class Defaults:
    """One scope's saved values; None means "not set here"."""

    n: int | None = None
    ar: str | None = None  # "3:2", checked by the grammar
    style: str | None = None
    provider: str | None = None
    model: str | None = None
    remix: bool | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    def updated(self, other: Defaults, cleared: Collection[str] = ()) -> Defaults:
        """These values with ``other``'s set ones on top and ``cleared`` keys unset."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update({k: v for k, v in vars(other).items() if v is not None})
        out.update({k: None for k in cleared})
        return Defaults(**out)

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return json.dumps({k: v for k, v in data.items() if v is not None}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> Defaults:
        if not text:
            return cls()
        raw: dict[str, Any] = json.loads(text)

        def s(key: str) -> str | None:
            v = raw.get(key)
            return None if v is None else str(v)

        return cls(
            n=None if raw.get("n") is None else int(raw["n"]),
            ar=s("ar"),
            style=s("style"),
            provider=s("provider"),
            model=s("model"),
            remix=None if raw.get("remix") is None else bool(raw["remix"]),
        )

    def describe(self) -> str:
        parts = [
            f"{k}={'on' if v is True else 'off' if v is False else v}"
            for k in KEYS
            if (v := getattr(self, k)) is not None
        ]
        return " ".join(parts) or "(none)"


@dataclass(frozen=True)
class Merged:
    request: grammar.ImagineRequest
    provider: str | None  # None: the bot's default provider
    remix: bool
    sources: tuple[tuple[str, str], ...]


def merge(
    parsed: grammar.ImagineRequest,
    user: Defaults,
    channel: Defaults,
    limits: grammar.GrammarLimits,
    *,
    providers: Collection[str] = (),
    keep_size: bool = False,
) -> Merged:
    """Apply the saved defaults to one parsed request (see the module doc). ``keep_size``:
    the job starts from an uploaded image, whose shape wins over a saved aspect ratio."""
    sources: dict[str, str] = {}
    req = parsed

    def first(key: str, valid: Collection[Any] | None = None) -> tuple[Any, str]:
        for d, source in ((user, YOURS), (channel, CHANNEL)):
            value = getattr(d, key)
            if value is not None and (valid is None or value in valid):
                return value, source
        return None, BUILTIN

    if parsed.n_explicit:
        sources["n"] = FLAG
    else:
        n, sources["n"] = first("n")
        if n is not None:
            req = replace(req, n=max(1, min(int(n), limits.max_images)))
    if parsed.size_explicit:
        sources["size"] = FLAG
    elif keep_size:
        sources["size"] = INPUT
    else:
        ar, sources["size"] = first("ar")
        if ar is not None:
            w, h = (int(x) for x in str(ar).split(":"))
            width, height = _size_for_aspect(w, h, limits)
            req = replace(req, width=width, height=height, size_explicit=True)
    if parsed.style is not None:
        sources["style"] = FLAG
    else:
        style, sources["style"] = first("style", {s.lower() for s in limits.styles})
        if style is not None:
            req = replace(req, style=style)
    if parsed.model is not None:
        sources["model"] = FLAG
    else:
        model, sources["model"] = first("model")
        if model is not None:
            req = replace(req, model=model)
    provider, sources["provider"] = first("provider", providers)
    remix, sources["remix"] = first("remix")
    return Merged(req, provider, bool(remix), tuple(sources.items()))


@functools.lru_cache(maxsize=256)
def _size_for_aspect(w: int, h: int, limits: grammar.GrammarLimits) -> tuple[int, int]:
    return grammar.size_for_aspect(w, h, limits)  # a search over sizes: worth remembering


# ------------------------------------------------------------------ reading what was typed
def parse_assignments(
    words: Sequence[str], limits: grammar.GrammarLimits, providers: Collection[str]
) -> tuple[Defaults, frozenset[str]]:
    """``n=2 ar=3:2 style=anime remix=on`` -> (the values set, the keys cleared with
    ``key=none``). Raises :class:`UserError` with a message for the user."""
    values: dict[str, Any] = {}
    cleared: set[str] = set()
    for word in words:
        key, eq, raw = word.partition("=")
        key = key.strip().lower().removeprefix("--")
        if not eq or key not in KEYS:
            raise UserError(
                f"I did not understand {word[:40]!r}. Settings are key=value with keys "
                f"{', '.join(KEYS)}, e.g. /imagine settings n=2 ar=3:2 style=anime remix=on"
            )
        if key in values or key in cleared:
            raise UserError(f"{key} was given twice.")
        raw = raw.strip()
        if raw.lower() in _CLEAR:
            cleared.add(key)
            continue
        values[key] = _value(key, raw, limits, providers)
    return Defaults(**values), frozenset(cleared)


def _value(key: str, raw: str, limits: grammar.GrammarLimits, providers: Collection[str]) -> Any:
    if not raw:
        raise UserError(f"{key} needs a value, e.g. {key}=" + _EXAMPLES[key])
    if key == "remix":
        if raw.lower() in _ON:
            return True
        if raw.lower() in _OFF:
            return False
        raise UserError("remix is on or off.")
    if key == "provider":
        if raw not in providers:
            raise UserError(
                f"Provider {raw[:40]!r} is not set up here. Known: {', '.join(providers)}."
            )
        return raw
    # The grammar checks the value, with the very message /imagine would give.
    flag = {"n": "--n", "ar": "--ar", "style": "--style", "model": "--model"}[key]
    parsed = grammar.parse(f"x {flag} {raw}", limits)
    if not isinstance(parsed, grammar.ParsedImagine) or parsed.permutations != 1:
        raise UserError(f"{key} takes one value, e.g. {key}={_EXAMPLES[key]}")
    r = parsed.requests[0]
    if key == "n":
        return r.n
    if key == "ar":
        return ":".join(str(int(x)) for x in raw.replace(" ", "").split(":"))
    if key == "style":
        return r.style
    return r.model


_EXAMPLES = {
    "n": "2",
    "ar": "3:2",
    "style": "anime",
    "provider": "offline",
    "model": "sdxl",
    "remix": "on",
}


# ------------------------------------------------------------------------------- storage
def _keys(actor: Actor, channel_id: str) -> list[tuple[str, str]]:
    return [("user", actor.user_id), ("channel", channel_id)]


async def load(ctx: Context, actor: Actor, channel_id: str) -> tuple[Defaults, Defaults]:
    """(the user's defaults, the channel's)."""
    rows = await ctx.store.prefs.get_many(
        actor.platform, actor.tenant, KIND, _keys(actor, channel_id)
    )
    return (
        Defaults.from_json(rows.get(("user", actor.user_id))),
        Defaults.from_json(rows.get(("channel", channel_id))),
    )


async def save(ctx: Context, actor: Actor, scope: str, subject: str, value: Defaults) -> None:
    prefs = ctx.store.prefs
    if value.is_empty():
        await prefs.delete(actor.platform, actor.tenant, KIND, scope, subject)
    else:
        await prefs.put(
            actor.platform, actor.tenant, KIND, scope, subject, value.to_json(), ctx.clock()
        )


def sources_text(sources: Sequence[tuple[str, str]]) -> str:
    """``n: your default, size: flag, style: built-in, ...`` for Info."""
    return ", ".join(f"{k}: {v}" for k, v in sources)


__all__ = [
    "BUILTIN",
    "CHANNEL",
    "FLAG",
    "INPUT",
    "KEYS",
    "YOURS",
    "Defaults",
    "Merged",
    "load",
    "merge",
    "parse_assignments",
    "save",
    "sources_text",
]
