"""One setting's value as its dataclass field's type (used by :mod:`bot.config`).

TOML and ``IMAGINE_*`` variables give bools, numbers, text and lists; a field's type hint
says which it must be. A wrong one raises :class:`BadValue` with what it must be; the caller
adds the key and where it was set.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any


class BadValue(Exception):
    """A value of the wrong type; the caller names the key and where it was set."""


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def coerce(value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise BadValue("must be true or false")
    if hint is int:
        if _whole(value):
            return value
        raise BadValue("must be a whole number")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise BadValue("must be a number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise BadValue("must be text")
    if origin in (types.UnionType, typing.Union):  # str | None, int | str | None
        if value is None or value == "":
            return None
        if int in typing.get_args(hint) and _whole(value):
            return value
        return coerce(value, str)
    if origin is tuple:
        if typing.get_args(hint)[:1] == (int,):  # tuple[int, ...]; "0, 1" from a variable
            if isinstance(value, str) and all(v.strip().isdigit() for v in value.split(",")):
                value = [int(v) for v in value.split(",")]
            if isinstance(value, list | tuple) and all(_whole(v) for v in value):
                return tuple(value)
            raise BadValue("must be a list of whole numbers, e.g. [0, 1]")
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise BadValue("must be a list of text values")
    if isinstance(value, Mapping):
        return dict(value)
    raise BadValue("must be a table")


def is_text(hint: Any) -> bool:
    return hint is str or (
        typing.get_origin(hint) in (types.UnionType, typing.Union) and str in typing.get_args(hint)
    )
