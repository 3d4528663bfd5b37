"""Help from the flag table: ``/imagine help`` and ``flag_help`` (Discord's option descriptions,
the playground's hints) are both generated from ``_FLAGS``, with the ranges the limits enforce."""

from __future__ import annotations

import pytest

from bot import grammar
from bot.grammar import (
    HELP_LINE_MAX,
    GrammarLimits,
    ParsedImagine,
    flag_help,
    parse,
    usage,
)
from bot.styles import BUILTIN_STYLES
from bot.types import FlagHelp


def usage_line(text: str, head: str) -> str:
    """The help on the usage line that starts with ``head`` (e.g. "--ar W:H")."""
    [line] = [x for x in text.splitlines() if x.startswith(f"  {head} ")]
    return line[len(head) + 2 :].strip()


def test_every_table_flag_is_in_usage_and_in_flag_help_in_table_order() -> None:
    helps = flag_help()
    assert [h.name for h in helps] == ["--" + name for name in grammar._FLAGS]
    text = usage()
    for flag in grammar._FLAGS.values():
        head = f"--{flag.name} {flag.value}".rstrip()
        assert usage_line(text, head)


def test_flag_help_carries_name_value_and_example() -> None:
    by_name = {h.name: h for h in flag_help()}
    assert by_name["--ar"] == FlagHelp(
        name="--ar",
        value="W:H",
        example="--ar 16:9",
        help="aspect ratio from 1:4 to 4:1, sides 1 to 64; about 1024² pixels (alias --aspect)",
    )
    assert by_name["--avatar"].value == ""
    assert by_name["--n"].help == "images per job, 1 to 10 (default 4)"
    assert by_name["--size"].help == (
        "exact size, sides 256 to 2048 in steps of 64 (not with --ar; default 1024x1024)"
    )


USAGE = """\
/imagine <prompt> [--flag value]...
Flags may go anywhere; a lone -- ends them (the rest is prompt text).
  --n N           images per job, 1 to 10 (default 4)
  --style NAME    one of: 3d-model, analog-film, anime, cinematic, comic-book, digital-art, \
enhance, fantasy-art, isometric, line-art, low-poly, modeling-compound, neon-punk, origami, \
photographic, pixel-art, tile-texture
  --ar W:H        aspect ratio from 1:4 to 4:1, sides 1 to 64; about 1024² pixels (alias --aspect)
  --size WxH      exact size, sides 256 to 2048 in steps of 64 (not with --ar; default 1024x1024)
  --seed N        0 to 4294967295; the same seed and settings repeat a picture
  --steps N       10 to 50 denoising steps
  --cfg X         0 to 35, how closely to follow the prompt
  --no TEXT       what to leave out; runs until the next flag (alias --negative)
  --sampler NAME  a sampler the image service knows, e.g. euler
  --model NAME    a model the image service offers
  --strength X    0 to 1, how much a refine may change the image (0 keeps it)
  --from JOB      make that job again: the same parameters, seeds and provider
  --avatar        a square head-and-shoulders profile picture (1024x1024)
  --remix         Vary and Reroll of the result let you edit the prompt first
Prompt tricks:
  a castle::2 fog::-0.5   weights: the number after :: weighs the text before it
  a {red, blue} car       one job per option (at most 8 jobs); write \\{ for a literal brace
  --no "blurry, text"     quotes keep a value together
Prompts may be up to 1000 characters.
Example: /imagine a lighthouse at dusk --ar 3:2 --style cinematic --n 2"""


def test_usage_at_the_defaults_word_for_word() -> None:
    assert usage() == USAGE


def test_usage_lines_keep_their_column_layout() -> None:
    lines = usage().splitlines()
    assert "  --n N           images per job, 1 to 10 (default 4)" in lines
    assert "  --avatar        a square head-and-shoulders profile picture (1024x1024)" in lines
    no = "  --no TEXT       what to leave out; runs until the next flag (alias --negative)"
    assert no in lines


@pytest.mark.parametrize(
    "limits",
    [
        GrammarLimits(),
        GrammarLimits(max_images=6, default_n=2, styles=frozenset({"house"})),
        GrammarLimits(base_side=512, size_multiple=8, min_side=64, max_side=1024),
        GrammarLimits(styles=frozenset({*BUILTIN_STYLES, *(f"custom-{i}" for i in range(40))})),
        GrammarLimits(styles=frozenset()),
    ],
)
def test_flag_help_lines_fit_discord_and_agree_with_usage(limits: GrammarLimits) -> None:
    text = usage(limits)
    for h in flag_help(limits):
        assert 0 < len(h.help) < 100 and "\n" not in h.help, h
        if h.name != "--style":  # the only flag whose usage line grows with the config
            assert usage_line(text, f"{h.name} {h.value}".rstrip()) == h.help


def test_flag_help_ranges_come_from_the_limits() -> None:
    limits = GrammarLimits(
        max_images=6,
        default_n=2,
        base_side=512,
        size_multiple=8,
        min_side=60,
        max_side=1020,
        styles=frozenset({"house", "noir"}),
    )
    by_name = {h.name: h.help for h in flag_help(limits)}
    assert by_name["--n"] == "images per job, 1 to 6 (default 2)"
    # The sides shown are the multiples actually reachable, not the raw bounds.
    assert by_name["--size"] == (
        "exact size, sides 64 to 1016 in steps of 8 (not with --ar; default 512x512)"
    )
    assert by_name["--ar"].endswith("about 512² pixels (alias --aspect)")
    assert by_name["--avatar"].endswith("(512x512)")
    assert by_name["--style"] == "one of: house, noir"


def test_style_help_lists_every_style_when_it_fits_and_counts_them_when_not() -> None:
    assert {h.name: h.help for h in flag_help()}["--style"] == (
        "one of: 3d-model, analog-film, anime, cinematic, … (17 in all; /imagine help lists them)"
    )
    assert f"one of: {', '.join(sorted(BUILTIN_STYLES))}" in usage()
    none = {h.name: h.help for h in flag_help(GrammarLimits(styles=frozenset()))}["--style"]
    assert none == "one of: (none set up)"
    assert "--style NAME    one of: (none set up)" in usage(GrammarLimits(styles=frozenset()))


def test_style_help_shows_the_full_list_up_to_exactly_99_characters() -> None:
    names = frozenset({"a" * 45, "b" * 44})  # "one of: " + 45 + ", " + 44 = 99
    assert {h.name: h.help for h in flag_help(GrammarLimits(styles=names))}["--style"] == (
        f"one of: {'a' * 45}, {'b' * 44}"
    )
    longer = frozenset({"a" * 45, "b" * 45})  # 100: counted instead
    assert {h.name: h.help for h in flag_help(GrammarLimits(styles=longer))}["--style"] == (
        f"one of: {'a' * 45}, … (2 in all; /imagine help lists them)"
    )


def test_style_help_lists_as_many_as_fit_in_exactly_99_characters() -> None:
    # "one of: " + 51 + ", … (" + "3 in all; /imagine help lists them" + ")" = 99
    names = frozenset({"a" * 51, "b" * 60, "c" * 60})
    style = {h.name: h.help for h in flag_help(GrammarLimits(styles=names))}["--style"]
    assert style == f"one of: {'a' * 51}, … (3 in all; /imagine help lists them)"
    assert len(style) == HELP_LINE_MAX


def test_style_help_with_one_huge_style_name_still_fits() -> None:
    limits = GrammarLimits(styles=frozenset({"x" * 150, "y" * 150}))
    style = {h.name: h.help for h in flag_help(limits)}["--style"]
    assert style == "a style name (2 in all; /imagine help lists them)"


def test_a_help_line_that_only_a_config_could_make_long_is_clipped() -> None:
    huge = 10**95
    helps = {h.name: h.help for h in flag_help(GrammarLimits(max_images=huge))}
    assert len(helps["--n"]) == HELP_LINE_MAX and helps["--n"].endswith("…")
    assert helps["--n"].startswith("images per job, 1 to 1000")
    assert f"1 to {huge} (default 4)" in usage(GrammarLimits(max_images=huge))  # not clipped


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("x" * 99, "x" * 99),  # exactly the maximum: kept whole
        ("x" * 100, "x" * 98 + "…"),
        ("y" * 97 + " " + "zzzz", "y" * 97 + "…"),  # no space left before the ellipsis
    ],
)
def test_a_long_help_line_is_clipped_to_the_maximum(
    monkeypatch: pytest.MonkeyPatch, text: str, shown: str
) -> None:
    monkeypatch.setitem(
        grammar._FLAGS, "long", grammar._Flag("long", "bool", "", "--long", lambda lim: text)
    )
    assert flag_help()[-1].help == shown


def test_every_example_in_the_table_parses() -> None:
    for h in flag_help():
        # --from repeats a job as it was: it stands alone.
        result = parse(h.example if h.name == "--from" else f"a lighthouse {h.example}")
        assert isinstance(result, ParsedImagine), h.example


def test_a_flag_added_to_the_table_alone_shows_up_everywhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tile = grammar._Flag(
        "tile",
        "bool",
        "",
        "--tile",
        lambda lim: f"a seamless texture, {lim.base_side} wide",
        aliases=("seamless", "tiling"),
    )
    monkeypatch.setitem(grammar._FLAGS, "tile", tile)
    assert flag_help()[-1] == FlagHelp(
        name="--tile",
        value="",
        help="a seamless texture, 1024 wide (alias --seamless, --tiling)",
        example="--tile",
    )
    assert usage_line(usage(), "--tile") == (
        "a seamless texture, 1024 wide (alias --seamless, --tiling)"
    )
    # The parser reads the same table: the flag and its alias are known flags now.
    assert isinstance(parse("a wall --tile"), ParsedImagine)
    assert isinstance(parse("a wall --seamless"), ParsedImagine)
    assert isinstance(parse("a wall --tiling"), ParsedImagine)
    with pytest.raises(grammar.GrammarError, match="--tile was given twice"):
        parse("a wall --tile --seamless")
