"""The /imagine command language: every rule and every error message, then property tests."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.errors import ConfigError, UserError
from bot.grammar import (
    EXAMPLE,
    SEED_MAX,
    GrammarError,
    GrammarLimits,
    HelpRequest,
    ImagineRequest,
    ParsedImagine,
    clean_text,
    parse,
    size_for_aspect,
    usage,
)
from bot.providers.base import WeightedPrompt
from bot.styles import BUILTIN_STYLES


def one(text: str, limits: GrammarLimits | None = None) -> ImagineRequest:
    result = parse(text, limits)
    assert isinstance(result, ParsedImagine), result
    assert len(result.requests) == 1
    return result.requests[0]


def error(text: str, limits: GrammarLimits | None = None) -> str:
    with pytest.raises(GrammarError) as info:
        parse(text, limits)
    return info.value.message


# ------------------------------------------------------------------------------------ defaults
def test_plain_prompt_gets_every_default() -> None:
    req = one("a lighthouse at dusk")
    assert req == ImagineRequest(
        prompt="a lighthouse at dusk",
        weighted_prompts=(WeightedPrompt("a lighthouse at dusk", 1.0),),
        negative_prompt=None,
        n=4,
        width=1024,
        height=1024,
        size_explicit=False,
        seed=None,
        steps=None,
        cfg=None,
        sampler=None,
        model=None,
        style=None,
        strength=None,
        avatar=False,
    )


def test_grammar_error_is_the_core_user_error() -> None:
    assert issubclass(GrammarError, UserError)


def test_total_images_sums_n_over_jobs() -> None:
    result = parse("a {red, blue, green} car --n 3")
    assert isinstance(result, ParsedImagine)
    assert result.permutations == 3
    assert result.total_images == 9


# ---------------------------------------------------------------------------------- each flag
@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        ("a cat --n 1", "n", 1),
        ("a cat --n 10", "n", 10),
        ("a cat --n +2", "n", 2),
        ("a cat --seed 0", "seed", 0),
        (f"a cat --seed {SEED_MAX}", "seed", SEED_MAX),
        ("a cat --steps 10", "steps", 10),
        ("a cat --steps 50", "steps", 50),
        ("a cat --cfg 0", "cfg", 0.0),
        ("a cat --cfg 7.5", "cfg", 7.5),
        ("a cat --cfg 35", "cfg", 35.0),
        ("a cat --cfg .5", "cfg", 0.5),
        ("a cat --strength 0", "strength", 0.0),
        ("a cat --strength 0.35", "strength", 0.35),
        ("a cat --strength 1", "strength", 1.0),
        ("a cat --sampler euler_a", "sampler", "euler_a"),
        ('a cat --sampler "DPM++ 2M Karras"', "sampler", "DPM++ 2M Karras"),
        ("a cat --model sdxl-1.0", "model", "sdxl-1.0"),
        ("a cat --style anime", "style", "anime"),
        ("a cat --style ANIME", "style", "anime"),
        ("a cat --style Pixel_Art", "style", "pixel-art"),
        ("a cat --style 'pixel-art'", "style", "pixel-art"),
        ('a cat --style "pixel art"', "style", "pixel-art"),
        ("a cat --style=3d-model", "style", "3d-model"),
        ("a cat --no dogs", "negative_prompt", "dogs"),
        ("a cat --no blurry,   low quality text", "negative_prompt", "blurry, low quality text"),
        ('a cat --no "blurry, text"', "negative_prompt", "blurry, text"),
        ('a cat --no="blurry, text"', "negative_prompt", "blurry, text"),
        ('a cat --no "a --n 2" b', "negative_prompt", "a --n 2 b"),
        ("a cat --no it's \"bad", "negative_prompt", "it's \"bad"),
        ("a cat --negative dogs", "negative_prompt", "dogs"),
        ("a cat --avatar", "avatar", True),
        ("a cat --n=3", "n", 3),
        ("a cat --n= 3", "n", 3),  # nothing after '=': the value is the next word
        ('a cat --style " anime "', "style", "anime"),
        ('a cat --style "pixel art "', "style", "pixel-art"),  # the closing quote stands alone
        ("a cat --sampler " + "s" * 100, "sampler", "s" * 100),  # exactly at the limit
        ("a cat --model " + "m" * 100, "model", "m" * 100),
        ("a cat --N 3", "n", 3),
        ("a cat --Style Anime", "style", "anime"),
    ],
)
def test_flag_values(text: str, field: str, expected: object) -> None:
    req = one(text)
    assert getattr(req, field) == expected
    assert req.prompt == "a cat"


def test_flags_anywhere_and_prompt_rejoined() -> None:
    req = one("--n 2 a cat --seed 7 on a mat --style anime in the sun")
    assert (req.prompt, req.n, req.seed, req.style) == ("a cat on a mat in the sun", 2, 7, "anime")


def test_no_runs_until_the_next_flag() -> None:
    req = one("a cat --no blurry text --n 2 on a mat")
    assert (req.negative_prompt, req.n, req.prompt) == ("blurry text", 2, "a cat on a mat")


def test_no_stops_at_the_end_marker() -> None:
    req = one("a cat --no dogs -- --n 2")
    assert (req.negative_prompt, req.prompt, req.n) == ("dogs", "a cat --n 2", 4)


def test_every_flag_at_once() -> None:
    req = one(
        "a fox --n 2 --style anime --ar 16:9 --seed 1 --steps 20 --cfg 5 --no rain "
        "--sampler euler --model m --strength 0.5"
    )
    assert (req.n, req.style, req.width, req.height, req.seed, req.steps, req.cfg) == (
        2,
        "anime",
        1344,
        768,
        1,
        20,
        5.0,
    )
    assert (req.negative_prompt, req.sampler, req.model, req.strength) == (
        "rain",
        "euler",
        "m",
        0.5,
    )
    assert req.size_explicit


# ----------------------------------------------------------------------------------- sizes
@pytest.mark.parametrize(
    ("text", "size", "explicit"),
    [
        ("a cat", (1024, 1024), False),
        ("a cat --ar 1:1", (1024, 1024), True),
        ("a cat --ar 2:2", (1024, 1024), True),
        ("a cat --ar 3:2", (1280, 832), True),
        ("a cat --ar 2:3", (832, 1280), True),
        ("a cat --ar 16:9", (1344, 768), True),
        ("a cat --ar 9:16", (768, 1344), True),
        ("a cat --ar 4:3", (1152, 896), True),
        ("a cat --ar 21:9", (1536, 640), True),
        ("a cat --ar 4:1", (2048, 512), True),
        ("a cat --ar 1:4", (512, 2048), True),
        # 704x1408 and 704x1472 score the same (the ratio error and the area error trade
        # off exactly); ties go to the smaller area
        ("a cat --ar 1:2", (704, 1408), True),
        ("a cat --ar 2:1", (1408, 704), True),
        ("a cat --ar 1:3", (576, 1728), True),
        ("a cat --aspect 16:9", (1344, 768), True),
        ("a cat --ar 16：9", (1344, 768), True),  # fullwidth colon from a phone keyboard
        ("a cat --size 512x768", (512, 768), True),
        ("a cat --size 512X768", (512, 768), True),
        ("a cat --size 512×768", (512, 768), True),
        ('a cat --size "512 x 768"', (512, 768), True),
        ("a cat --size 256x2048", (256, 2048), True),
        ("a cat --avatar", (1024, 1024), True),
        ("a cat --avatar --ar 1:1", (1024, 1024), True),
        ("a cat --avatar --size 512x512", (512, 512), True),
    ],
)
def test_size_resolution(text: str, size: tuple[int, int], explicit: bool) -> None:
    req = one(text)
    assert (req.width, req.height) == size
    assert req.size_explicit is explicit


_AR_REFUSED = (
    "--ar must be W:H with whole numbers from 1 to 64, between 1:4 and 4:1, "
    "e.g. --ar 16:9 (got {})."
)


@pytest.mark.parametrize(
    ("ar", "size"),
    [
        ("64:64", (1024, 1024)),  # both sides at AR_SIDE_MAX
        ("1:1", (1024, 1024)),  # both sides at the lower bound
        ("64:16", (2048, 512)),  # the widest ratio with the widest side
        ("16:64", (512, 2048)),
        ("4:1", (2048, 512)),
        ("1:4", (512, 2048)),
    ],
)
def test_ar_is_accepted_exactly_at_its_limits(ar: str, size: tuple[int, int]) -> None:
    req = one(f"a cat --ar {ar}")
    assert (req.width, req.height) == size


@pytest.mark.parametrize("ar", ["65:64", "64:65", "0:1", "1:0", "17:4", "4:17", "65:16", "0:0"])
def test_ar_is_refused_one_past_its_limits(ar: str) -> None:
    assert error(f"a cat --ar {ar}") == _AR_REFUSED.format(ar)


@pytest.mark.parametrize("size", ["256x256", "2048x2048", "256x2048", "2048x256"])
def test_size_is_accepted_exactly_at_its_limits(size: str) -> None:
    req = one(f"a cat --size {size}")
    assert f"{req.width}x{req.height}" == size


@pytest.mark.parametrize(
    "size", ["255x256", "256x255", "2049x2048", "2048x2049", "192x256", "256x2112", "0x0"]
)
def test_size_is_refused_one_past_its_limits(size: str) -> None:
    assert error(f"a cat --size {size}") == (
        f"--size sides must be from 256 to 2048 pixels (got {size})."
    )


@pytest.mark.parametrize(
    ("size", "nearest"),
    [
        ("1000x1024", "1024x1024"),  # only the width is off
        ("1024x1000", "1024x1024"),  # only the height is off
        ("1090x300", "1088x320"),
        ("2040x260", "2048x256"),
    ],
)
def test_size_sides_must_each_be_a_multiple(size: str, nearest: str) -> None:
    assert error(f"a cat --size {size}") == (
        f"--size sides must be multiples of 64 (got {size}); the nearest is {nearest}."
    )


def test_size_bounds_and_the_nearest_size_follow_the_limits() -> None:
    limits = GrammarLimits(min_side=330, max_side=2030)  # multiples of 64: 384 to 1984
    assert error("a --size 329x512", limits) == (
        "--size sides must be from 330 to 2030 pixels (got 329x512)."
    )
    assert error("a --size 512x2031", limits) == (
        "--size sides must be from 330 to 2030 pixels (got 512x2031)."
    )
    # The nearest size is clamped to the multiples that lie inside the bounds.
    assert error("a --size 340x2020", limits) == (
        "--size sides must be multiples of 64 (got 340x2020); the nearest is 384x1984."
    )
    assert (one("a --size 384x1984", limits).width, one("a --size 384x1984", limits).height) == (
        384,
        1984,
    )


@given(st.integers(1, 64), st.integers(1, 64))
@settings(max_examples=300, deadline=None)
def test_size_for_aspect_keeps_area_shape_and_multiples(w: int, h: int) -> None:
    if not (w <= 4 * h and h <= 4 * w):
        return
    width, height = size_for_aspect(w, h)
    assert width % 64 == 0 and height % 64 == 0
    assert 256 <= width <= 2048 and 256 <= height <= 2048
    assert abs(math.log(width * height / 1024**2)) < 0.2
    assert abs(math.log((width / height) / (w / h))) < 0.1


def test_size_for_aspect_follows_other_limits() -> None:
    limits = GrammarLimits(base_side=512, size_multiple=8, min_side=64, max_side=1024)
    assert size_for_aspect(1, 1, limits) == (512, 512)
    assert size_for_aspect(16, 9, limits) == (680, 384)


# ------------------------------------------------------------------------------------ weights
@pytest.mark.parametrize(
    ("text", "prompt", "weighted"),
    [
        ("a castle::2 fog::-0.5", "a castle", (("a castle", 2.0), ("fog", -0.5))),
        ("a castle::2 fog", "a castle, fog", (("a castle", 2.0), ("fog", 1.0))),
        ("hot:: dog", "hot, dog", (("hot", 1.0), ("dog", 1.0))),
        ("hot::dog", "hot, dog", (("hot", 1.0), ("dog", 1.0))),
        ("space ship::1.5", "space ship", (("space ship", 1.5),)),
        ("a::.5 b::0", "a", (("a", 0.5), ("b", 0.0))),
        ("castle::2fog", "castle, 2fog", (("castle", 1.0), ("2fog", 1.0))),
        ("a castle ::3", "a castle", (("a castle", 3.0),)),
        ("a (cat:1.2) b", "a (cat:1.2) b", (("a (cat:1.2) b", 1.0),)),
        ("a castle::2 fog::-0.5 --n 1", "a castle", (("a castle", 2.0), ("fog", -0.5))),
        # a stray "::" separates nothing: skipped, and the text after it still counts
        ("a cat :: :: dog", "a cat, dog", (("a cat", 1.0), ("dog", 1.0))),
        (":: a cat", "a cat", (("a cat", 1.0),)),
        ("a cat ::", "a cat", (("a cat", 1.0),)),
        ("a cat ::::", "a cat", (("a cat", 1.0),)),
        (":: a cat::2 :: fog", "a cat, fog", (("a cat", 2.0), ("fog", 1.0))),
    ],
)
def test_weights(text: str, prompt: str, weighted: tuple[tuple[str, float], ...]) -> None:
    req = one(text)
    assert req.prompt == prompt
    assert req.weighted_prompts == tuple(WeightedPrompt(t, w) for t, w in weighted)


# ------------------------------------------------------------------------------- permutations
@pytest.mark.parametrize(
    ("text", "prompts"),
    [
        ("a {red, blue} car", ["a red car", "a blue car"]),
        ("a {red,blue} {car, bike}", ["a red car", "a red bike", "a blue car", "a blue bike"]),
        ("a {red} car", ["a red car"]),
        ("a {, big} car", ["a car", "a big car"]),
        (r"a \{red, blue\} car", ["a {red, blue} car"]),
        (r"a {red\, blue, green} car", ["a red, blue car", "a green car"]),
        ("a {red, blue car", ["a {red, blue car"]),  # unclosed: literal
        ("a red} car", ["a red} car"]),
        ("a {x {red, blue}} car", ["a {x red} car", "a {x blue} car"]),  # no nesting
        ("-- a {red, blue} car --n 2", ["a red car --n 2", "a blue car --n 2"]),
        # an escape as the very last character is a literal backslash, in or out of a group
        ("a car \\", ["a car \\"]),
        ("a {red, blue\\", ["a {red, blue\\"]),
        ("a {red\\", ["a {red\\"]),
        ("{a\\", ["{a\\"]),
        ("a \\{", ["a {"]),
        ("a {red, blue\\}", ["a {red, blue}"]),  # the escaped brace cannot close the group
        # a backslash before anything else is kept; \, is an escape only inside a group
        ("C:\\Xmas\\n, 50\\,", ["C:\\Xmas\\n, 50\\,"]),
        ("a {\\X, \\n} b", ["a \\X b", "a \\n b"]),
    ],
)
def test_permutations(text: str, prompts: list[str]) -> None:
    result = parse(text)
    assert isinstance(result, ParsedImagine)
    assert [r.prompt for r in result.requests] == prompts
    assert result.permutations == len(prompts)


def test_flags_permute_too() -> None:
    result = parse("a car --ar {1:1, 16:9} --n {1, 2}")
    assert isinstance(result, ParsedImagine)
    assert [(r.width, r.height, r.n) for r in result.requests] == [
        (1024, 1024, 1),
        (1024, 1024, 2),
        (1344, 768, 1),
        (1344, 768, 2),
    ]
    assert result.total_images == 6


def test_permutation_cap_is_inclusive() -> None:
    result = parse("a {1,2} {3,4} {5,6} car")
    assert isinstance(result, ParsedImagine)
    assert result.permutations == 8


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "a {b, c} {d, e, f} {g, h}",
            "That expands to 12 jobs × 4 images = 48 images; the limit is 8 jobs per "
            "command. Use fewer {a, b} options.",
        ),
        (
            "a {b, c, d} {e, f, g} --n 2",
            "That expands to 9 jobs × 2 images = 18 images; the limit is 8 jobs per "
            "command. Use fewer {a, b} options.",
        ),
        (
            "a" + " {b, c}" * 40,
            "That expands to more than 10000 jobs × 4 images; the limit is 8 jobs per "
            "command. Use fewer {a, b} options.",
        ),
        (  # exactly 10000 is still counted
            "a" + " {0,1,2,3,4,5,6,7,8,9}" * 4,
            "That expands to 10000 jobs × 4 images = 40000 images; the limit is 8 jobs per "
            "command. Use fewer {a, b} options.",
        ),
        (  # reaching 10000 part way does not stop the count short
            "a" + " {0,1,2,3,4,5,6,7,8,9}" * 4 + " {x, y}",
            "That expands to more than 10000 jobs × 4 images; the limit is 8 jobs per "
            "command. Use fewer {a, b} options.",
        ),
        (  # 73 x 137 = 10001
            "a {" + ",".join(map(str, range(73))) + "} {" + ",".join(map(str, range(137))) + "}",
            "That expands to more than 10000 jobs × 4 images; the limit is 8 jobs per "
            "command. Use fewer {a, b} options.",
        ),
        (  # the images per job come from the first option of every group
            "a {b, c, d} {e, f, g} --n {2, 3}",
            "That expands to 18 jobs × 2 images = 36 images; the limit is 8 jobs per "
            "command. Use fewer {a, b} options.",
        ),
        (  # a first option that is not a valid job counts the default images
            "a {b, c, d} {e, f, g} --n 99",
            "That expands to 9 jobs × 4 images = 36 images; the limit is 8 jobs per "
            "command. Use fewer {a, b} options.",
        ),
        (  # ... and so does one that asks for help
            "a {b, c, d} {e, f, g} --{help, n}",
            "That expands to 18 jobs × 4 images = 72 images; the limit is 8 jobs per "
            "command. Use fewer {a, b} options.",
        ),
    ],
)
def test_permutation_cap_error(text: str, message: str) -> None:
    assert error(text) == message


def test_permutation_cap_comes_from_limits() -> None:
    result = parse("a {b, c}", GrammarLimits(max_permutations=2))
    assert isinstance(result, ParsedImagine) and result.permutations == 2
    assert "the limit is 1 jobs" in error("a {b, c}", GrammarLimits(max_permutations=1))


# ------------------------------------------------------------------------ typography, unicode
@pytest.mark.parametrize(
    ("text", "n"),
    [
        ("a cat —n 2", 2),  # em dash (phone autocorrect of --)
        ("a cat –n 2", 2),  # en dash
        ("a cat －－n 2", 2),  # fullwidth hyphen-minus
        ("a cat −−n 2", 2),  # minus signs
        ("a cat --n ４", 4),  # fullwidth digit: accepted (NFKC)
        ("a cat --n ٤", 4),  # Arabic-Indic digit: accepted (any Unicode decimal digit)
        ("a cat --Ｎ 2", 2),  # fullwidth letter in the flag name
        ("a cat —n＝3", 3),
    ],
)
def test_phone_typography(text: str, n: int) -> None:
    req = one(text)
    assert (req.prompt, req.n) == ("a cat", n)


@pytest.mark.parametrize(
    ("text", "prompt"),
    [
        ("a cat — at night", "a cat — at night"),  # a lone em dash is prose
        ("temperature —5 degrees", "temperature —5 degrees"),
        ("a --5 b", "a --5 b"),
        ("a ---- b", "a ---- b"),
        ("a -n 2", "a -n 2"),  # single hyphen: not a flag
        ("a sign saying “OPEN”", 'a sign saying "OPEN"'),  # curly quotes straightened
        ("it’s a cat’s hat", "it's a cat's hat"),
        ('a sign saying "--n 2"', 'a sign saying "--n 2"'),  # a quoted flag is prompt text
        ("a   cat\n\tin  the\u00a0hat", "a cat in the hat"),  # whitespace collapsed
        ("مرحبا بالعالم --n 2", "مرحبا بالعالم"),  # RTL script kept
        ("שלום עולם", "שלום עולם"),
        ("family 👨\u200d👩\u200d👧 photo", "family 👨\u200d👩\u200d👧 photo"),  # ZWJ kept
        ("می\u200cخواهم", "می\u200cخواهم"),  # ZWNJ kept (Persian spelling)
        ("safe\u202eevil", "safeevil"),  # RLO removed
        ("a\u2066b\u2069c \u202ad\u202c", "abc d"),  # isolates, embeddings removed
        ("zero\u200bwidth\ufeff", "zerowidth"),  # ZWSP and BOM removed
        ("bell\x07 and\x00 nul\x1b[31m", "bell and nul[31m"),  # controls removed
        ("lone \ud800surrogate", "lone surrogate"),
        ("a cat's hat --n 2", "a cat's hat"),
        ('"unclosed --n 2', '"unclosed'),
        ("trailing \\", "trailing \\"),
        ("-- --n 2", "--n 2"),
        ("a cat -- --style anime", "a cat --style anime"),
        ("a cat －－ --n 2", "a cat --n 2"),  # fullwidth end marker too
    ],
)
def test_prompt_text(text: str, prompt: str) -> None:
    assert one(text).prompt == prompt


def test_prompt_with_lone_surrogate_encodes() -> None:
    one("x \udfff y").prompt.encode("utf-8")


def test_clean_text_keeps_zwj_only() -> None:
    assert clean_text("a\u200db\u200bc\u2067d") == "a\u200dbcd"


# --------------------------------------------------------------------------------------- help
@pytest.mark.parametrize(
    "text", ["help", "HELP", "  Help  ", "--help", "—help", "?", "a cat --help", "--HELP"]
)
def test_help(text: str) -> None:
    result = parse(text)
    assert isinstance(result, HelpRequest)
    assert result.text == usage()


@pytest.mark.parametrize("text", ["help me draw a cat", "-- --help", "a cat -- help"])
def test_help_word_in_a_prompt_is_a_prompt(text: str) -> None:
    assert isinstance(parse(text), ParsedImagine)


def test_usage_lists_every_flag_range_and_an_example() -> None:
    text = usage()
    for piece in [
        "--n N",
        "1 to 10",
        "--ar W:H",
        "--aspect",
        "1:4",
        "4:1",
        "--size WxH",
        "256 to 2048",
        "steps of 64",
        "--style NAME",
        "--no TEXT",
        "--negative",
        "--seed N",
        f"0 to {SEED_MAX}",
        "--steps N",
        "10 to 50",
        "--cfg X",
        "0 to 35",
        "--sampler NAME",
        "--model NAME",
        "--strength X",
        "0 to 1",
        "--avatar",
        "::",
        "{red, blue}",
        "at most 8 jobs",
        "\\{",
        "1000 characters",
        EXAMPLE,
        *BUILTIN_STYLES,
    ]:
        assert piece in text, piece


@pytest.mark.parametrize(
    "text", ["help", "a cat --zzz --help", "{a,b,c} {d,e,f} --help", "a {--help, b}"]
)
def test_help_uses_the_limits_it_was_given(text: str) -> None:
    limits = GrammarLimits(max_images=6, default_n=2, styles=frozenset({"house"}))
    result = parse(text, limits)
    assert isinstance(result, HelpRequest)
    assert result.text == usage(limits)


def test_usage_follows_limits() -> None:
    text = usage(GrammarLimits(max_images=6, default_n=2, styles=frozenset({"house"})))
    assert "1 to 6 (default 2)" in text
    assert "one of: house" in text


# ------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("text", "message"),
    [
        # empty
        ("", f"Tell me what to draw, e.g. {EXAMPLE}"),
        ("   \n ", f"Tell me what to draw, e.g. {EXAMPLE}"),
        ("\u200b\u202e", f"Tell me what to draw, e.g. {EXAMPLE}"),
        ("--n 2", f"The prompt is empty. Tell me what to draw, e.g. {EXAMPLE}"),
        ("--", f"The prompt is empty. Tell me what to draw, e.g. {EXAMPLE}"),
        ("{, } --n 2", f"The prompt is empty. Tell me what to draw, e.g. {EXAMPLE}"),
        # unknown flags
        ("a cat --sytle anime", "Unknown flag --sytle. Did you mean --style?"),
        ("a cat --seeds 3", "Unknown flag --seeds. Did you mean --seed?"),
        ("a cat —sytle anime", "Unknown flag --sytle. Did you mean --style?"),
        ("a cat --aspct 1:1", "Unknown flag --aspct. Did you mean --aspect?"),
        (
            "a cat --zzz",
            "Unknown flag --zzz. The flags are --n, --style, --ar, --size, --seed, --steps, "
            "--cfg, --no, --sampler, --model, --strength, --from, --avatar, --remix. Put -- "
            "before text that should not be read as flags; /imagine help explains them.",
        ),
        # duplicates (also through an alias)
        ("a cat --n 2 --n 3", "--n was given twice."),
        ("a cat --ar 1:1 --aspect 2:3", "--ar was given twice."),
        ("a cat --no x --negative y", "--no was given twice."),
        ("a cat --avatar --avatar", "--avatar was given twice."),
        # missing values
        ("a cat --n", "--n needs a value, e.g. --n 4."),
        ("a cat --n --seed 2", "--n needs a value, e.g. --n 4."),
        ("a cat --style -- anime", "--style needs a value, e.g. --style anime."),
        ("a cat --no", '--no needs a value, e.g. --no "blurry, text".'),
        ('a cat --no ""', '--no needs a value, e.g. --no "blurry, text".'),
        ('a cat --sampler ""', "--sampler needs a value, e.g. --sampler euler."),
        ("a cat --model", "--model needs a value, e.g. --model sdxl."),
        ("a cat --ar", "--ar needs a value, e.g. --ar 16:9."),
        ("a cat --size", "--size needs a value, e.g. --size 1024x768."),
        ("a cat --seed", "--seed needs a value, e.g. --seed 42."),
        ("a cat --steps", "--steps needs a value, e.g. --steps 30."),
        ("a cat --cfg", "--cfg needs a value, e.g. --cfg 7.5."),
        ("a cat --strength", "--strength needs a value, e.g. --strength 0.6."),
        ("a cat --avatar=yes", "--avatar takes no value; write just --avatar."),
        # unclosed quotes in a one-word value
        (
            'a cat --style "pixel art',
            'The quote after --style is never closed. Close it, e.g. --style "pixel".',
        ),
        # numbers out of range or not numbers
        ("a cat --n 0", "--n must be a whole number from 1 to 10 (got 0)."),
        ("a cat --n -1", "--n must be a whole number from 1 to 10 (got -1)."),
        ("a cat --n 11", "--n must be a whole number from 1 to 10 (got 11)."),
        ("a cat --n 4.5", "--n must be a whole number from 1 to 10 (got 4.5)."),
        ("a cat --n 1e3", "--n must be a whole number from 1 to 10 (got 1e3)."),
        ("a cat --n NaN", "--n must be a whole number from 1 to 10 (got NaN)."),
        ("a cat --n four", "--n must be a whole number from 1 to 10 (got four)."),
        ("a cat --n 1_0", "--n must be a whole number from 1 to 10 (got 1_0)."),
        ("a cat --steps 70", "--steps must be a whole number from 10 to 50 (got 70)."),
        ("a cat --steps 9", "--steps must be a whole number from 10 to 50 (got 9)."),
        ("a cat --seed -1", "--seed must be a whole number from 0 to 4294967295 (got -1)."),
        (
            "a cat --seed 4294967296",
            "--seed must be a whole number from 0 to 4294967295 (got 4294967296).",
        ),
        (
            "a cat --seed " + "9" * 5000,
            "--seed must be a whole number from 0 to 4294967295 (got 99999999999999999999999…).",
        ),
        ("a cat --cfg 36", "--cfg must be a number from 0 to 35 (got 36)."),
        ("a cat --cfg -0.1", "--cfg must be a number from 0 to 35 (got -0.1)."),
        ("a cat --cfg nan", "--cfg must be a number from 0 to 35 (got nan)."),
        ("a cat --cfg inf", "--cfg must be a number from 0 to 35 (got inf)."),
        ("a cat --cfg 7,5", "--cfg must be a number from 0 to 35 (got 7,5)."),
        ("a cat --strength 1.01", "--strength must be a number from 0 to 1 (got 1.01)."),
        ("a cat --strength -1", "--strength must be a number from 0 to 1 (got -1)."),
        # sizes
        (
            "a cat --ar 5:1",
            "--ar must be W:H with whole numbers from 1 to 64, between 1:4 and 4:1, "
            "e.g. --ar 16:9 (got 5:1).",
        ),
        (
            "a cat --ar 0:1",
            "--ar must be W:H with whole numbers from 1 to 64, between 1:4 and 4:1, "
            "e.g. --ar 16:9 (got 0:1).",
        ),
        (
            "a cat --ar 65:64",
            "--ar must be W:H with whole numbers from 1 to 64, between 1:4 and 4:1, "
            "e.g. --ar 16:9 (got 65:64).",
        ),
        (
            "a cat --ar 16x9",
            "--ar must be W:H with whole numbers from 1 to 64, between 1:4 and 4:1, "
            "e.g. --ar 16:9 (got 16x9).",
        ),
        ("a cat --size big", "--size must be WIDTHxHEIGHT, e.g. --size 1024x768 (got big)."),
        ("a cat --size 128x512", "--size sides must be from 256 to 2048 pixels (got 128x512)."),
        ("a cat --size 4096x512", "--size sides must be from 256 to 2048 pixels (got 4096x512)."),
        (
            "a cat --size 1000x1000",
            "--size sides must be multiples of 64 (got 1000x1000); the nearest is 1024x1024.",
        ),
        ("a cat --ar 1:1 --size 512x512", "Use either --ar or --size, not both."),
        (
            "a cat --avatar --ar 16:9",
            "--avatar makes a square picture, so it cannot be combined with --ar 16:9. "
            "Drop it, or use --ar 1:1.",
        ),
        (
            "a cat --avatar --size 512x768",
            "--avatar makes a square picture, so it cannot be combined with --size 512x768. "
            "Drop it, or use --ar 1:1.",
        ),
        # styles
        (
            "a cat --style pixl-art",
            "Unknown style pixl-art. Did you mean pixel-art?",
        ),
        (
            "a cat --style vaporwave",
            "Unknown style vaporwave. There are 17 styles; /imagine help lists them.",
        ),
        ("a cat --style animee", "Unknown style animee. Did you mean anime?"),
        ("a cat --style 'Pixel Artt'", "Unknown style Pixel Artt. Did you mean pixel-art?"),
        (
            "a cat --style " + "q" * 30,
            "Unknown style qqqqqqqqqqqqqqqqqqqqqqq…. There are 17 styles; /imagine help lists "
            "them.",
        ),
        # names
        ("a cat --sampler " + "s" * 101, "--sampler is 101 characters; the limit is 100."),
        ("a cat --model " + "m" * 101, "--model is 101 characters; the limit is 100."),
        # what an error echoes: up to 24 characters whole, longer cut to 23 and an ellipsis
        ("a cat --n " + "9" * 24, f"--n must be a whole number from 1 to 10 (got {'9' * 24})."),
        (
            'a cat --style "',
            'The quote after --style is never closed. Close it, e.g. --style "value".',
        ),
        # weights
        (
            "a::0",
            "The prompt weights add up to 0; they must add up to more than 0, "
            "e.g. a castle::2 fog::-0.5.",
        ),
        (
            "a::1 b::-2",
            "The prompt weights add up to -1; they must add up to more than 0, "
            "e.g. a castle::2 fog::-0.5.",
        ),
        (
            "::2 fog",
            "The weight ::2 has no text before it. Write weights after their text, "
            "e.g. a castle::2 fog::-0.5.",
        ),
        ("x::" + "9" * 400, "The weight ::99999999999999999999999… must be a finite number."),
        ("::", f"The prompt is empty. Tell me what to draw, e.g. {EXAMPLE}"),
        # lengths
        ("x" * 1001, "Your prompt is 1001 characters; the limit is 1000."),
        ("a " + " " * 7999, "Your command is 8001 characters; prompts may be up to 1000."),
        ("x" * 1234 + " --n 2", "Your prompt is 1234 characters; the limit is 1000."),
        ("a --no " + "y" * 1001, "Your --no text is 1001 characters; the limit is 1000."),
        ("x " * 5000, "Your command is 10000 characters; prompts may be up to 1000."),
    ],
)
def test_errors(text: str, message: str) -> None:
    assert error(text) == message


def test_limits_are_inclusive() -> None:
    assert one("a --no " + "y" * 1000).negative_prompt == "y" * 1000
    assert one("a" + " " * 7999).prompt == "a"  # the whole command may be 8000 characters


def test_the_command_cap_grows_with_the_prompt_limit() -> None:
    limits = GrammarLimits(max_prompt_chars=3000)  # the cap is 4 x 3000 = 12000
    assert one("a" + " " * 11999, limits).prompt == "a"
    assert error("a" + " " * 12000, limits) == (
        "Your command is 12001 characters; prompts may be up to 3000."
    )


def test_prompt_quotes_before_a_quoted_value_do_not_close_it() -> None:
    req = one('a sign saying "hi" there --style "pixel art" --no "text, logo"')
    assert (req.prompt, req.style, req.negative_prompt) == (
        'a sign saying "hi" there',
        "pixel-art",
        "text, logo",
    )


def test_n_explicit_says_whether_n_was_typed() -> None:
    assert one("a cat --n 4").n_explicit is True
    assert one("a cat").n_explicit is False


def test_ar_sizes_follow_the_limits_through_parse() -> None:
    limits = GrammarLimits(base_side=512, size_multiple=8, min_side=64, max_side=1024)
    req = one("a cat --ar 16:9", limits)
    assert (req.width, req.height) == (680, 384)


def test_size_for_aspect_never_leaves_the_bounds_with_a_multiple_of_one() -> None:
    limits = GrammarLimits(size_multiple=1, min_side=1, max_side=100, base_side=100)
    assert size_for_aspect(1, 4, limits) == (25, 100)
    assert size_for_aspect(4, 1, limits) == (100, 25)


def test_prompt_length_counts_prompt_only() -> None:
    text = "x" * 1000 + " --n 2 --style anime --no " + "y" * 900
    req = one(text)
    assert len(req.prompt) == 1000


def test_prompt_length_counts_code_points_after_collapse() -> None:
    assert one("é" * 998 + "      z").prompt == "é" * 998 + " z"  # 1000 after collapsing
    assert error("é" * 999 + "   zz") == "Your prompt is 1002 characters; the limit is 1000."
    # A decomposed é is two code points.
    assert error("e\u0301" * 501) == "Your prompt is 1002 characters; the limit is 1000."
    assert one("👍" * 1000).prompt == "👍" * 1000


def test_prompt_length_is_per_job() -> None:
    # The template is over the limit; each expanded job is not.
    text = "{" + "a" * 600 + ", " + "b" * 600 + "}"
    result = parse(text)
    assert isinstance(result, ParsedImagine)
    assert [len(r.prompt) for r in result.requests] == [600, 600]


def test_limits_drive_ranges() -> None:
    limits = GrammarLimits(max_images=2, default_n=1, max_prompt_chars=10)
    assert one("a cat", limits).n == 1
    assert error("a cat --n 3", limits) == "--n must be a whole number from 1 to 2 (got 3)."
    assert error("a" * 11, limits) == "Your prompt is 11 characters; the limit is 10."


def test_config_styles_are_accepted() -> None:
    limits = GrammarLimits(styles=frozenset({*BUILTIN_STYLES, "house-look"}))
    assert one("a cat --style House-Look", limits).style == "house-look"
    message = error("a cat --style house-lok", limits)
    assert message == "Unknown style house-lok. Did you mean house-look?"


def test_no_styles_configured() -> None:
    assert error("a --style anime", GrammarLimits(styles=frozenset())) == (
        "No styles are set up on this bot, so --style cannot be used."
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_images": 0}, "max_images: must be at least 1"),
        ({"default_n": 11}, "default_n: must be from 1 to max_images (10)"),
        ({"default_n": 0}, "default_n: must be from 1 to max_images (10)"),
        ({"max_prompt_chars": 0}, "max_prompt_chars: must be at least 1"),
        ({"max_permutations": 0}, "max_permutations: must be at least 1"),
        ({"size_multiple": 0}, "size_multiple: must be at least 1"),
        ({"min_side": 3000}, "min_side: must be from 1 to max_side"),
        ({"min_side": 0}, "min_side: must be from 1 to max_side"),
        (
            {"min_side": 300, "max_side": 310},
            "size_multiple: no multiple of it lies between min_side and max_side",
        ),
        ({"base_side": 4096}, "base_side: must be from min_side to max_side"),
        ({"base_side": 255}, "base_side: must be from min_side to max_side"),
    ],
)
def test_limits_are_validated(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        GrammarLimits(**kwargs)
    assert str(info.value) == f"GrammarLimits.{message}"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_images": 1, "default_n": 1},
        {"max_images": 6, "default_n": 6},
        {"max_prompt_chars": 1},
        {"max_permutations": 1},
        {"size_multiple": 1},
        {"min_side": 1, "base_side": 1},
        {"min_side": 1024, "max_side": 1024},  # one side allowed, a multiple of 64
        {"base_side": 256},
        {"base_side": 2048},
    ],
)
def test_limits_accept_their_bounds(kwargs: dict[str, Any]) -> None:
    GrammarLimits(**kwargs)


# ------------------------------------------------------------------------------ properties
_FRAGMENTS = [
    "--n",
    "--N",
    "—n",
    "–n",
    "－－n",
    "--style",
    "--ar",
    "--aspect",
    "--size",
    "--seed",
    "--steps",
    "--cfg",
    "--no",
    "--negative",
    "--sampler",
    "--model",
    "--strength",
    "--avatar",
    "--help",
    "--",
    "—",
    "--n=",
    "--style=",
    "--x",
    "-",
    "4",
    "٤",
    "４",
    "0",
    "-1",
    "10",
    "11",
    "1e3",
    "nan",
    "4294967296",
    "16:9",
    "1:1",
    "5:1",
    "1024x1024",
    "512×768",
    "1000x1000",
    "anime",
    "ANIME",
    "pixel art",
    "{",
    "}",
    "{a, b}",
    "{1:1, 16:9}",
    "\\{",
    "\\",
    ",",
    "::",
    "::2",
    "::-1",
    "::0",
    '"',
    "'",
    "“",
    "”",
    "‘",
    "’",
    "\u202e",
    "\u200b",
    "\u200d",
    "\ud800",
    "\x00",
    "\n",
    "\t",
    "\u00a0",
    "é",
    "مرحبا",
    "👨\u200d👩\u200d👧",
    "=",
    "＝",
    "⩵",
    "help",
]
_commands = st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=12)), max_size=24).map(
    lambda parts: " ".join(parts)
)
_any_text = st.one_of(st.text(max_size=200), _commands, _commands.map(lambda s: s.replace(" ", "")))


def _check_invariants(req: ImagineRequest, limits: GrammarLimits) -> None:
    assert 1 <= req.n <= limits.max_images
    assert req.width % limits.size_multiple == 0 and req.height % limits.size_multiple == 0
    assert limits.min_side <= req.width <= limits.max_side
    assert limits.min_side <= req.height <= limits.max_side
    assert req.seed is None or 0 <= req.seed <= SEED_MAX
    assert req.steps is None or 10 <= req.steps <= 50
    assert req.cfg is None or (math.isfinite(req.cfg) and 0 <= req.cfg <= 35)
    assert req.strength is None or 0 <= req.strength <= 1
    assert req.style is None or req.style in limits.styles
    assert req.prompt.strip() and len(req.prompt) <= limits.max_prompt_chars
    assert req.negative_prompt is None or 0 < len(req.negative_prompt) <= limits.max_prompt_chars
    assert req.weighted_prompts and all(math.isfinite(p.weight) for p in req.weighted_prompts)
    assert sum(p.weight for p in req.weighted_prompts) > 0
    assert req.prompt == ", ".join(p.text for p in req.weighted_prompts if p.weight > 0)
    assert not req.avatar or req.width == req.height
    assert req.size_explicit or (req.width, req.height) == (1024, 1024)
    for text in (req.prompt, req.negative_prompt or "", req.sampler or "", req.model or ""):
        text.encode("utf-8")  # no lone surrogates reach a provider
        assert "\u202e" not in text and "\u200b" not in text


@given(_any_text)
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_parse_returns_or_raises_grammar_error_only(text: str) -> None:
    limits = GrammarLimits()
    try:
        result = parse(text, limits)
    except GrammarError as exc:
        assert exc.message and isinstance(exc.message, str)
        assert "Traceback" not in exc.message
        return
    if isinstance(result, HelpRequest):
        assert result.text == usage(limits)
        return
    assert 1 <= result.permutations == len(result.requests) <= limits.max_permutations
    assert result.total_images == sum(r.n for r in result.requests)
    for req in result.requests:
        _check_invariants(req, limits)


_flag_values = st.fixed_dictionaries(
    {},
    optional={
        "n": st.integers(-5, 15),
        "seed": st.integers(-2, SEED_MAX + 2),
        "steps": st.integers(0, 60),
        "cfg": st.floats(-1, 40, allow_nan=False).map(lambda f: round(f, 2)),
        "strength": st.floats(-0.5, 1.5, allow_nan=False).map(lambda f: round(f, 3)),
        "ar": st.tuples(st.integers(0, 70), st.integers(0, 70)).map(lambda t: f"{t[0]}:{t[1]}"),
        "size": st.tuples(st.integers(0, 3000), st.integers(0, 3000)).map(
            lambda t: f"{t[0]}x{t[1]}"
        ),
        "style": st.sampled_from([*BUILTIN_STYLES, "nope", "Anime"]),
        "no": st.sampled_from(["blurry", '"blurry, text"', "two words"]),
        "avatar": st.just(""),
    },
)


@given(st.text(alphabet="abc xyz", min_size=1, max_size=30).filter(str.strip), _flag_values)
@settings(max_examples=400, deadline=None)
def test_well_formed_flags_either_parse_in_range_or_name_the_flag(
    prompt: str, flags: dict[str, object]
) -> None:
    text = prompt + "".join(f" --{k} {v}".rstrip() for k, v in flags.items())
    try:
        result = parse(text)
    except GrammarError as exc:
        # A rejected value is always explained in terms of a flag the user gave.
        assert any(f"--{k}" in exc.message for k in flags) or exc.message.startswith(
            "Unknown style"
        ), exc.message
        return
    assert isinstance(result, ParsedImagine)
    (req,) = result.requests
    _check_invariants(req, GrammarLimits())
    assert req.prompt == " ".join(prompt.split())
    if "n" in flags:
        assert req.n == flags["n"]
    if "seed" in flags:
        assert req.seed == flags["seed"]
