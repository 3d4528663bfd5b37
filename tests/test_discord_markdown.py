"""Our Discord markdown escaper: a prompt shows as typed, never as a link, bold or spoiler."""

from __future__ import annotations

import re

import discord
import pytest

from adapters.discord.markdown import clip_escaped, escape_markdown
from adapters.discord.render import content
from bot.types import Reply

# Discord's masked link: [text](url), unless the "[" is escaped.
LIVE_MASKED_LINK = re.compile(r"(?<!\\)\[[^\]]*(?<!\\)\]\(")


def test_discord_py_leaves_the_second_masked_link_live_and_ours_does_not() -> None:
    text = "[a](http://x) [b](http://y)"
    assert LIVE_MASKED_LINK.search(discord.utils.escape_markdown(text))  # the library's bug
    assert not LIVE_MASKED_LINK.search(escape_markdown(text))
    assert escape_markdown(text) == r"\[a\](http://x) \[b\](http://y)"


def test_bold_and_spoilers_after_a_link_are_escaped_too() -> None:
    text = "[a](http://x) **b** ||secret|| [b](http://y) __u__ ~~s~~ `c`"
    out = escape_markdown(text)
    assert r"\*\*b\*\*" in out and r"\|\|secret\|\|" in out
    assert r"\_\_u\_\_" in out and r"\~\~s\~\~" in out and r"\`c\`" in out
    assert not LIVE_MASKED_LINK.search(out)


@pytest.mark.parametrize(
    ("typed", "shown"),
    [
        ("# big", r"\# big"),
        ("-# small", r"\-# small"),
        ("> quoted", r"\> quoted"),
        ("- item\n* item", "\\- item\n\\* item"),
        ("1. first", r"1\. first"),
        ("a red-fox, 2. place", "a red-fox, 2. place"),  # only a line's start makes a list
        ("<@123456789012345678> <t:1:R>", r"\<@123456789012345678> \<t:1:R>"),
        (r"a \*b", r"a \\\*b"),
    ],
)
def test_line_starts_angles_and_backslashes(typed: str, shown: str) -> None:
    assert escape_markdown(typed) == shown


def test_clipping_never_leaves_a_dangling_escape() -> None:
    out = clip_escaped(escape_markdown("*" * 50), 10)
    assert out.endswith("…")
    body = out[:-1]
    assert (len(body) - len(body.rstrip("\\"))) % 2 == 0


def test_a_prompt_in_a_message_shows_as_typed_and_pings_nobody() -> None:
    text = content(
        Reply("alice: [free](http://a) **now** [b](http://b) @everyone <@&1200000000000000009>")
    )
    assert not LIVE_MASKED_LINK.search(text)
    assert r"\*\*now\*\*" in text
    assert "@everyone" not in text and "<@&1200000000000000009>" not in text
