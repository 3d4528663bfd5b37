"""Style presets: the builtin book, config overrides and additions, and how prompts are filled."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.errors import ConfigError, Unsupported
from bot.grammar import GrammarLimits, ParsedImagine, parse
from bot.styles import (
    AVATAR_TEMPLATE,
    BUILTIN_STYLES,
    BUILTIN_TEMPLATES,
    StyleBook,
    apply_avatar,
)

# The list, which is Stability's style_preset enum (reference/providers.md).
STABILITY_PRESETS = [
    "3d-model",
    "analog-film",
    "anime",
    "cinematic",
    "comic-book",
    "digital-art",
    "enhance",
    "fantasy-art",
    "isometric",
    "line-art",
    "low-poly",
    "modeling-compound",
    "neon-punk",
    "origami",
    "photographic",
    "pixel-art",
    "tile-texture",
]


def test_builtin_styles_are_stabilitys_presets_in_order() -> None:
    assert list(BUILTIN_STYLES) == STABILITY_PRESETS
    assert set(BUILTIN_TEMPLATES) == set(BUILTIN_STYLES)


@pytest.mark.parametrize("name", BUILTIN_STYLES)
def test_every_builtin_template_wraps_the_prompt_once(name: str) -> None:
    template = BUILTIN_TEMPLATES[name]
    assert template.count("{prompt}") == 1
    filled = StyleBook().apply(name, "a red fox")
    assert filled.count("a red fox") == 1
    assert filled != "a red fox"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("anime", "a red fox, anime artwork, anime style, vibrant, studio anime"),
        ("enhance", "a red fox, highly detailed, sharp focus"),
        ("ANIME", "a red fox, anime artwork, anime style, vibrant, studio anime"),
    ],
)
def test_apply(name: str, expected: str) -> None:
    assert StyleBook().apply(name, "a red fox") == expected


def test_apply_without_style_keeps_the_prompt() -> None:
    assert StyleBook().apply(None, "a red fox") == "a red fox"


def test_prompt_braces_are_not_format_fields() -> None:
    book = StyleBook.from_config({"json": "{prompt} {{ literal }} {other}"})
    assert book.apply("json", "a {red} car {0}") == "a {red} car {0} {{ literal }} {other}"


def test_avatar_framing() -> None:
    assert AVATAR_TEMPLATE.startswith("{prompt}")
    assert apply_avatar("Ada Lovelace") == (
        "Ada Lovelace, head and shoulders portrait, centered, plain background, profile picture"
    )
    assert StyleBook().apply(None, "Ada", avatar=True) == apply_avatar("Ada")
    # The style wraps the framed prompt.
    assert StyleBook().apply("enhance", "Ada", avatar=True) == (
        apply_avatar("Ada") + ", highly detailed, sharp focus"
    )


def test_unknown_style_is_a_user_error() -> None:
    with pytest.raises(Unsupported, match=r"'gone' is not available"):
        StyleBook().apply("gone", "a fox")


def test_config_adds_and_overrides() -> None:
    book = StyleBook.from_config(
        {"house-look": "{prompt}, brand colours teal and orange", "anime": "anime {prompt}"}
    )
    assert book.names() == frozenset({*BUILTIN_STYLES, "house-look"})
    assert book.ordered_names() == (*BUILTIN_STYLES, "house-look")
    assert book.apply("house-look", "a fox") == "a fox, brand colours teal and orange"
    assert book.apply("anime", "a fox") == "anime a fox"
    assert StyleBook().apply("anime", "a fox") != "anime a fox"  # the default is untouched


def test_from_config_without_table_is_the_builtin_book() -> None:
    assert StyleBook.from_config(None) == StyleBook.from_config({}) == StyleBook()
    assert StyleBook().names() == frozenset(BUILTIN_STYLES)


def test_book_is_a_frozen_hashable_value() -> None:
    book = StyleBook()
    hash(book)
    with pytest.raises(AttributeError):
        book.entries = ()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"Anime2": "{prompt}"}, "styles.Anime2: a style name must be 1 to 32 characters"),
        ({"has space": "{prompt}"}, "styles.has space: a style name must be"),
        ({"": "{prompt}"}, "styles.: a style name must be"),
        ({"a" * 33: "{prompt}"}, "styles.aaaa"),
        ({"ok\n": "{prompt}"}, "a style name must be"),
        ({"no-slot": "watercolour"}, "styles.no-slot: the template must contain {prompt}"),
        ({"wrong-slot": "{Prompt} x"}, "styles.wrong-slot: the template must contain {prompt}"),
        ({"not-text": 3}, "styles.not-text: the template must be a string"),
        ({"long": "{prompt}" + "x" * 1000}, "styles.long: the template is 1008 characters"),
        ({7: "{prompt}"}, "styles.7: a style name must be"),
    ],
)
def test_bad_config_names_the_key(table: dict[object, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        StyleBook.from_config(table)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ConfigError, match=r"styles\.x: the template must contain"):
        StyleBook(entries=(("x", "no slot"),))


def test_book_feeds_the_grammar() -> None:
    book = StyleBook.from_config({"house-look": "{prompt}, teal"})
    result = parse("a fox --style House_Look", GrammarLimits(styles=book.names()))
    assert isinstance(result, ParsedImagine)
    (req,) = result.requests
    assert req.style == "house-look"
    assert book.apply(req.style, req.prompt) == "a fox, teal"


@given(st.sampled_from(BUILTIN_STYLES), st.text(max_size=100))
@settings(max_examples=200, deadline=None)
def test_apply_keeps_any_prompt_verbatim(style: str, prompt: str) -> None:
    template = BUILTIN_TEMPLATES[style]
    before, after = template.split("{prompt}")
    filled = StyleBook().apply(style, prompt)
    assert filled == before + prompt + after
