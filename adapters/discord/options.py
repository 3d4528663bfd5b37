"""The grammar's flag table -> ``/imagine``'s typed options, and typed options back to the one
command language. Pure functions.

Each flag in :meth:`Core.flag_help` becomes an optional option with the flag's one-line help
as its description (a switch such as ``--avatar`` a boolean, the rest text that the grammar
checks), so Discord shows the same ranges as ``/imagine help``. A chosen option is appended to
the prompt as the flag would be typed (``prompt:a fox n:2`` is ``a fox --n 2``): the grammar
stays the only parser, and a flag typed in the prompt works as before.

Discord's limits (application command reference): at most 25 options, names 1-32 lower-case
characters, descriptions 1-100 characters.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bot.types import FlagHelp

log = logging.getLogger(__name__)

MAX_OPTIONS = 25
MAX_DESCRIPTION = 100
OPTION_NAME_RE = re.compile(r"[-_a-z0-9]{1,32}")
OWN_OPTIONS = ("prompt", "image")  # /imagine's own, before the flags
PROMPT_LEAD = "What to draw; flags work here too:"


@dataclass(frozen=True)
class FlagOption:
    """One flag as an option: ``param`` is the callback's Python name, ``name`` Discord's."""

    param: str
    name: str
    flag: FlagHelp

    @property
    def switch(self) -> bool:
        return not self.flag.value

    @property
    def description(self) -> str:
        return _clip(self.flag.help or self.flag.name, MAX_DESCRIPTION)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def flag_options(flags: Sequence[FlagHelp]) -> list[FlagOption]:
    """The flags Discord can show as options, in table order, within its limits."""
    out: list[FlagOption] = []
    for flag in flags:
        name = flag.name.removeprefix("--").lower()
        if not OPTION_NAME_RE.fullmatch(name) or name in OWN_OPTIONS:
            log.warning(
                "flag %s cannot be a Discord option; it still works in the prompt", flag.name
            )
            continue
        if len(out) + len(OWN_OPTIONS) == MAX_OPTIONS:
            log.warning(
                "more flags than Discord's %d options; the rest work in the prompt", MAX_OPTIONS
            )
            break
        # Python names of our own: a flag name need not be an identifier ("no" is, "from"
        # or "neg-prompt" would not be); discord.py renames the parameter to ``name``.
        out.append(FlagOption(param=f"flag_{len(out)}", name=name, flag=flag))
    return out


def prompt_description(flags: Sequence[FlagHelp]) -> str:
    """The prompt option's description: the flags' own examples, as many as fit."""
    text = PROMPT_LEAD
    for flag in flags:
        candidate = f"{text} {flag.example or flag.name}"
        if len(candidate) > MAX_DESCRIPTION:
            break
        text = candidate
    return text


def _typed(value: str) -> str:
    """A value as it would be typed: quotes keep words together (``--no "blurry, text"``)."""
    value = " ".join(value.split())
    if " " not in value:
        return value
    for quote in ('"', "'"):
        if quote not in value:
            return f"{quote}{value}{quote}"
    return value  # both quotes inside: the grammar takes it as written


def command_text(prompt: str, chosen: Iterable[tuple[FlagOption, str | bool | None]]) -> str:
    """The ``/imagine`` line: the prompt, then every option that was filled in."""
    parts = [prompt.strip()]
    for option, value in chosen:
        if value is None or value is False or value == "":
            continue
        if option.switch:
            parts.append(option.flag.name)
        else:
            parts.append(f"{option.flag.name} {_typed(str(value))}")
    return " ".join(p for p in parts if p)
