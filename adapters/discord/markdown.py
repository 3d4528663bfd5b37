"""Plain text -> Discord markdown that shows exactly that text.

``discord.utils.escape_markdown`` leaves URLs alone so that links keep working, and its URL
pattern is greedy across masked links: in ``[a](http://x) [b](http://y)`` everything from the
first ``http`` to the last ``)`` counts as one URL, so the second masked link stays live, and
formatting inside that span (bold, spoilers) stays raw markup. A user's prompt must never
become a link, bold text or a spoiler in the bot's message, so this escapes every character
Discord's markdown gives a meaning to, links included: a backslash before any ASCII
punctuation shows that character literally. Bare URLs stay plain text Discord may still
auto-link (they are the user's own words, shown as typed); a masked link can no longer hide
where it goes.
"""

from __future__ import annotations

import re

# Anywhere: emphasis, strike, spoiler, code, masked links' brackets, angle links, mentions,
# timestamps and custom emoji, and the escape character itself.
_ANYWHERE = re.compile(r"([\\*_~`|\[\]<])")
# At a line's start: quotes, headings and subtext, bulleted and numbered lists.
_LINE_START = re.compile(r"(?m)^(\s*)([>#\-+]|\d+(?=\.))")


def escape_markdown(text: str) -> str:
    r"""``**bold** [a](http://x)`` -> ``\*\*bold\*\* \[a\](http://x)``: no link, no bold."""
    text = _ANYWHERE.sub(r"\\\1", text)
    return _LINE_START.sub(_escape_line_start, text)


def _escape_line_start(match: re.Match[str]) -> str:
    lead, mark = match.group(1), match.group(2)
    if mark[0].isdigit():  # "1. item": the dot makes the list
        return f"{lead}{mark}\\"
    return f"{lead}\\{mark}"


def clip_escaped(text: str, limit: int, ellipsis: str = "…") -> str:
    """Cut escaped text to ``limit`` characters without leaving a dangling backslash."""
    if len(text) <= limit:
        return text
    cut = text[: limit - len(ellipsis)]
    trailing = len(cut) - len(cut.rstrip("\\"))
    if trailing % 2:  # an escape with nothing left to escape
        cut = cut[:-1]
    return cut + ellipsis


__all__ = ["clip_escaped", "escape_markdown"]
