"""The /imagine command language: one pure function from the text after ``/imagine`` to jobs.

``parse(text)`` returns a :class:`ParsedImagine` (one :class:`ImagineRequest` per job), a
:class:`HelpRequest`, or raises :class:`bot.errors.GrammarError` whose ``message`` is written
for the user. Nothing else escapes, for any input (a Hypothesis test holds us to it).

Decisions the tests pin down:

* **Clean first.** Curly quotes become straight ones. Invisible format characters (Unicode
  ``Cf``: bidi overrides, zero-width space, BOM, tag characters), lone surrogates and control
  characters other than whitespace are removed everywhere, so an echoed prompt cannot be
  reordered or hide text. ZWJ (U+200D, emoji sequences) and ZWNJ (U+200C, needed to spell
  Persian and Indic words) are kept.
* **Flags** are words that start with ``--`` followed by a letter. Phone typography counts:
  an em or en dash (``—n``), or any two hyphen-like characters (``－－n``), start a flag too.
  Flag names are NFKC-normalised and case-insensitive (``--N`` is ``--n``), and may carry
  ``=value``. A bare em dash, or ``--5``, is prose and stays in the prompt. Flags may go
  anywhere, before or after the prompt; a word that is exactly ``--`` ends flag parsing.
* **Numbers** are NFKC-normalised and any Unicode decimal digit reads as its value, so
  ``--n ４`` and ``--n ٤`` are 4. Only plain decimals are numbers: no ``1e3``, ``nan``,
  ``inf`` or ``1_000``.
* **Quotes** group a flag value: ``--no "blurry, text"``, ``--style 'pixel art'``. A quote
  closes at the next same quote followed by whitespace or the end. An unclosed quote in a
  one-word flag value is an error; in ``--no`` text and in the prompt it is an ordinary
  character (``a cat's hat``). Quotes in the prompt are kept: some models draw quoted text.
* **Duplicates** (``--n 2 --n 3``) are an error, not last-wins.
* **Permutations** ``a {red, blue} car`` are expanded over the whole command before flags are
  read, so flag values permute too (``--ar {1:1, 16:9}``). Groups do not nest; ``\\{``, ``\\}``
  and (inside a group) ``\\,`` are literal.
* **Weights** ``a castle::2 fog::-0.5``: the number right after ``::`` weighs the text before
  it; text without one weighs 1. The weights must add up to more than 0. ``prompt`` joins the
  positive parts with ``", "`` for providers without weighted prompts.
* **Length** is counted in code points on the prompt text that remains after flags are
  removed and whitespace is collapsed, per job.
"""

from __future__ import annotations

import difflib
import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from bot.errors import ConfigError, GrammarError
from bot.providers.base import WeightedPrompt
from bot.styles import BUILTIN_STYLES
from bot.types import FlagHelp

__all__ = [
    "AR_MAX_RATIO",
    "AR_SIDE_MAX",
    "CFG_RANGE",
    "EXAMPLE",
    "HELP_LINE_MAX",
    "SEED_MAX",
    "STEPS_RANGE",
    "STRENGTH_RANGE",
    "GrammarError",
    "GrammarLimits",
    "HelpRequest",
    "ImagineRequest",
    "ParsedImagine",
    "clean_text",
    "flag_help",
    "is_flag",
    "parse",
    "size_for_aspect",
    "usage",
]

SEED_MAX = 4294967295
STEPS_RANGE = (10, 50)
CFG_RANGE = (0.0, 35.0)
STRENGTH_RANGE = (0.0, 1.0)
AR_SIDE_MAX = 64  # --ar W:H, each side 1..64: room for 32:9 and 64:27, none for nonsense
AR_MAX_RATIO = 4  # --ar between 1:4 and 4:1; beyond that SDXL-class models fall apart
MAX_NAME_CHARS = 100  # --sampler / --model
EXAMPLE = "/imagine a lighthouse at dusk --ar 3:2"

_SHOWN_CHARS = 24  # how much of a bad value an error message echoes


# ------------------------------------------------------------------------------- value types
@dataclass(frozen=True)
class GrammarLimits:
    max_images: int = 10  # --n upper bound
    default_n: int = 4
    max_prompt_chars: int = 1000
    max_permutations: int = 8  # cap on {a, b} expansion (total jobs)
    styles: frozenset[str] = frozenset(BUILTIN_STYLES)  # builtin + config-defined names
    base_side: int = 1024  # --ar keeps the area near base_side**2; no size -> base_side square
    size_multiple: int = 64
    min_side: int = 256
    max_side: int = 2048

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"GrammarLimits.{name}: {why}")

        if self.max_images < 1:
            raise bad("max_images", "must be at least 1")
        if not 1 <= self.default_n <= self.max_images:
            raise bad("default_n", f"must be from 1 to max_images ({self.max_images})")
        if self.max_prompt_chars < 1:
            raise bad("max_prompt_chars", "must be at least 1")
        if self.max_permutations < 1:
            raise bad("max_permutations", "must be at least 1")
        if self.size_multiple < 1:
            raise bad("size_multiple", "must be at least 1")
        if not 1 <= self.min_side <= self.max_side:
            raise bad("min_side", "must be from 1 to max_side")
        if self._lowest_side() > self._highest_side():
            raise bad("size_multiple", "no multiple of it lies between min_side and max_side")
        if not self.min_side <= self.base_side <= self.max_side:
            raise bad("base_side", "must be from min_side to max_side")

    def _lowest_side(self) -> int:
        return -(-self.min_side // self.size_multiple) * self.size_multiple

    def _highest_side(self) -> int:
        return self.max_side // self.size_multiple * self.size_multiple

    def _base_square(self) -> int:
        m = self.size_multiple
        side = round(self.base_side / m) * m
        return min(self._highest_side(), max(self._lowest_side(), side))


@dataclass(frozen=True)
class ImagineRequest:
    """One job's worth, every value already range-checked."""

    prompt: str  # positive text as written: weights removed, parts joined with ", "
    weighted_prompts: tuple[WeightedPrompt, ...]  # all parts, negative weights included
    negative_prompt: str | None  # --no TEXT
    n: int
    width: int
    height: int
    size_explicit: bool  # the user gave --size, --ar or --avatar
    seed: int | None
    steps: int | None
    cfg: float | None
    sampler: str | None
    model: str | None
    style: str | None  # canonical lower-case name
    strength: float | None
    avatar: bool
    n_explicit: bool = False  # the user gave --n (a refine keeps the parent's n)
    remix: bool = False  # --remix: Vary and Reroll of the result open the prompt first
    from_job: str | None = None  # --from JOB: make that job again (nothing else is read)


@dataclass(frozen=True)
class ParsedImagine:
    requests: tuple[ImagineRequest, ...]  # more than one when {a, b} expanded
    permutations: int  # len(requests)

    @property
    def total_images(self) -> int:
        """The cost in quota units."""
        return sum(r.n for r in self.requests)


@dataclass(frozen=True)
class HelpRequest:
    text: str


# ---------------------------------------------------------------------------------- flag table
_Kind = Literal["int", "float", "text", "words", "ar", "size", "style", "bool"]
_Help = Callable[[GrammarLimits], str]

HELP_LINE_MAX = 99  # a FlagHelp.help is under 100 characters (Discord's option descriptions)


@dataclass(frozen=True)
class _Flag:
    """One flag: how its value is read and how ``/imagine help`` and :func:`flag_help`
    describe it. Help is a function of the limits, so the ranges shown are the ones enforced."""

    name: str
    kind: _Kind
    value: str  # the placeholder shown after the name; "" for a switch
    example: str
    help: _Help
    aliases: tuple[str, ...] = ()
    # A one-line form for flag_help when ``help`` grows with the config (the style list).
    brief: _Help | None = None


def _styles_help(limits: GrammarLimits) -> str:
    return "one of: " + (", ".join(sorted(limits.styles)) or "(none set up)")


def _styles_brief(limits: GrammarLimits) -> str:
    full = _styles_help(limits)
    if len(full) <= HELP_LINE_MAX:
        return full
    names = sorted(limits.styles)
    tail = f"{len(names)} in all; /imagine help lists them"
    shown: list[str] = []
    for name in names:
        if len(f"one of: {', '.join([*shown, name])}, … ({tail})") > HELP_LINE_MAX:
            break
        shown.append(name)
    return f"one of: {', '.join(shown)}, … ({tail})" if shown else f"a style name ({tail})"


def _square(limits: GrammarLimits) -> str:
    side = limits._base_square()
    return f"{side}x{side}"


_FLAGS: dict[str, _Flag] = {
    f.name: f
    for f in (
        _Flag(
            "n",
            "int",
            "N",
            "--n 4",
            lambda lim: f"images per job, 1 to {lim.max_images} (default {lim.default_n})",
        ),
        _Flag("style", "style", "NAME", "--style anime", _styles_help, brief=_styles_brief),
        _Flag(
            "ar",
            "ar",
            "W:H",
            "--ar 16:9",
            lambda lim: (
                f"aspect ratio from 1:{AR_MAX_RATIO} to {AR_MAX_RATIO}:1, sides 1 to "
                f"{AR_SIDE_MAX}; about {lim.base_side}² pixels"
            ),
            aliases=("aspect",),
        ),
        _Flag(
            "size",
            "size",
            "WxH",
            "--size 1024x768",
            lambda lim: (
                f"exact size, sides {lim._lowest_side()} to {lim._highest_side()} in "
                f"steps of {lim.size_multiple} (not with --ar; default {_square(lim)})"
            ),
        ),
        _Flag(
            "seed",
            "int",
            "N",
            "--seed 42",
            lambda lim: f"0 to {SEED_MAX}; the same seed and settings repeat a picture",
        ),
        _Flag(
            "steps",
            "int",
            "N",
            "--steps 30",
            lambda lim: f"{STEPS_RANGE[0]} to {STEPS_RANGE[1]} denoising steps",
        ),
        _Flag(
            "cfg",
            "float",
            "X",
            "--cfg 7.5",
            lambda lim: f"{CFG_RANGE[0]:g} to {CFG_RANGE[1]:g}, how closely to follow the prompt",
        ),
        _Flag(
            "no",
            "words",
            "TEXT",
            '--no "blurry, text"',
            lambda lim: "what to leave out; runs until the next flag",
            aliases=("negative",),
        ),
        _Flag(
            "sampler",
            "text",
            "NAME",
            "--sampler euler",
            lambda lim: "a sampler the image service knows, e.g. euler",
        ),
        _Flag(
            "model", "text", "NAME", "--model sdxl", lambda lim: "a model the image service offers"
        ),
        _Flag(
            "strength",
            "float",
            "X",
            "--strength 0.6",
            lambda lim: (
                f"{STRENGTH_RANGE[0]:g} to {STRENGTH_RANGE[1]:g}, how much a refine "
                "may change the image (0 keeps it)"
            ),
        ),
        _Flag(
            "from",
            "text",
            "JOB",
            "--from a1b2c3d4e5f6",
            lambda lim: "make that job again: the same parameters, seeds and provider",
        ),
        _Flag(
            "avatar",
            "bool",
            "",
            "--avatar",
            lambda lim: f"a square head-and-shoulders profile picture ({_square(lim)})",
        ),
        _Flag(
            "remix",
            "bool",
            "",
            "--remix",
            lambda lim: "Vary and Reroll of the result let you edit the prompt first",
        ),
    )
}


def _aliases() -> dict[str, str]:
    # Read from the table on each call, so a flag added to it needs nothing else.
    return {alias: f.name for f in _FLAGS.values() for alias in f.aliases}


def _flag_help_text(flag: _Flag, limits: GrammarLimits, *, brief: bool) -> str:
    text = (flag.brief if brief and flag.brief is not None else flag.help)(limits)
    if flag.aliases:
        text += " (alias " + ", ".join("--" + a for a in flag.aliases) + ")"
    return text


_HELP = "help"

_QUOTES = "\"'"
_QUOTE_MAP = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\uff07": "'",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\uff02": '"',
    }
)  # fmt: skip
_LONG_DASHES = "\u2013\u2014\u2015\u2e3a\u2e3b"  # en, em, horizontal bar, two- and three-em
_DASHES = "-\u2010\u2011\u2012\u2212\ufe63\uff0d" + _LONG_DASHES
_KEPT_FORMAT_CHARS = frozenset("\u200d\u200c")  # ZWJ, ZWNJ
_INT = re.compile(r"[+-]?[0-9]{1,30}")
_FLOAT = re.compile(r"[+-]?(?:[0-9]{1,30}(?:\.[0-9]{0,30})?|\.[0-9]{1,30})")
_AR = re.compile(r"([0-9]{1,6}):([0-9]{1,6})")
_SIZE = re.compile(r"([0-9]{1,6})\s*[x×*]\s*([0-9]{1,6})", re.IGNORECASE)
# The number must end the word (``::2fog`` is a separator and the text "2fog").
_WEIGHT = re.compile(r"::(?:([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?![\w.]))?")


# ------------------------------------------------------------------------------- normalising
def _keep_char(c: str) -> bool:
    category = unicodedata.category(c)
    if category == "Cf":
        return c in _KEPT_FORMAT_CHARS
    if category == "Cs":  # lone surrogates cannot be encoded to UTF-8 for the provider
        return False
    if category == "Cc":
        return c.isspace()
    return True


def clean_text(text: str) -> str:
    """Straighten curly quotes and drop invisible/control characters (see module doc)."""
    if text.isascii() and text.isprintable():
        return text  # the usual line: no quote to straighten, every character kept
    return "".join(c for c in text.translate(_QUOTE_MAP) if _keep_char(c))


def _nfkc(value: str) -> str:
    return unicodedata.normalize("NFKC", value)


def _ascii_digits(value: str) -> str:
    # Python's int() already accepts every Nd digit; doing it here keeps our own regexes
    # (and therefore what counts as a number) in one place.
    out = []
    for c in _nfkc(value):
        d = unicodedata.decimal(c, None)
        out.append(str(d) if d is not None and not c.isascii() else c)
    return "".join(out)


def _shown(value: str) -> str:
    return value if len(value) <= _SHOWN_CHARS else value[: _SHOWN_CHARS - 1] + "…"


def _is_end_marker(word: str) -> bool:
    return _nfkc(word) == "--"


def is_flag(word: str) -> bool:
    """``word`` would be read as a flag (or ends the flags, ``--``)."""
    return _flag_token(word) is not None or _is_end_marker(word)


def _flag_token(word: str) -> tuple[str, int | None] | None:
    """``(name, offset of the value after '=' in word, or None)`` if ``word`` is a flag."""
    if not word or _nfkc(word[0])[:1] not in _DASHES:
        return None  # the common case, a prompt word, without normalising all of it
    # Find '=' in the word as typed (it may be a fullwidth one), so the offset is exact.
    eq = next((i for i, c in enumerate(word) if "=" in _nfkc(c)), None)
    norm = _nfkc(word if eq is None else word[:eq])
    rest = norm.lstrip(_DASHES)
    run = len(norm) - len(rest)
    if run == 0 or (run == 1 and norm[0] not in _LONG_DASHES):
        return None
    if not rest or not rest[0].isalpha():
        return None
    return rest.casefold(), (None if eq is None else eq + 1)


# -------------------------------------------------------------------------------- permutations
def _split_groups(text: str) -> list[str | list[str]]:
    """Literal runs and ``{a, b}`` option lists; unmatched braces stay literal."""
    parts: list[str | list[str]] = []
    literal: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in "{}":
            literal.append(text[i + 1])
            i += 2
            continue
        if c == "{":
            options = _read_group(text, i + 1)
            if options is not None:
                group, i = options
                parts.append("".join(literal))
                literal = []
                parts.append(group)
                continue
        literal.append(c)
        i += 1
    parts.append("".join(literal))
    return parts


def _read_group(text: str, i: int) -> tuple[list[str], int] | None:
    """Options of the group whose ``{`` precedes ``i`` and the index after its ``}``."""
    options: list[str] = []
    current: list[str] = []
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in "{},":
            current.append(text[i + 1])
            i += 2
            continue
        if c == "{":
            return None  # nested or stray: this brace is literal; the inner one may match
        if c == "}":
            options.append("".join(current).strip())
            return options, i + 1
        if c == ",":
            options.append("".join(current).strip())
            current = []
        else:
            current.append(c)
        i += 1
    return None


def _count(parts: Sequence[str | list[str]], stop: int) -> int:
    total = 1
    for p in parts:
        if isinstance(p, list):
            total *= len(p)
            if total > stop:
                return total
    return total


def _variants(parts: Sequence[str | list[str]]) -> list[str]:
    texts = [""]
    for p in parts:
        options = p if isinstance(p, list) else [p]
        texts = [t + o for t in texts for o in options]
    return texts


def _first_variant(parts: Sequence[str | list[str]]) -> str:
    return "".join(p[0] if isinstance(p, list) else p for p in parts)


# --------------------------------------------------------------------------------- the parser
@dataclass(frozen=True)
class _Word:
    text: str
    start: int
    end: int


def _words(text: str) -> list[_Word]:
    return [_Word(m.group(), m.start(), m.end()) for m in re.finditer(r"\S+", text)]


def _read_value(
    text: str, words: list[_Word], i: int, start: int, *, strict: bool, flag: str
) -> tuple[str, int]:
    """Read one value that begins at ``text[start]`` inside ``words[i]``.

    Returns the value (quotes removed) and the index of the first word after it.
    """
    if text[start] in _QUOTES:
        quote = text[start]
        closing = re.compile(re.escape(quote) + r"(?=\s|\Z)").search(text, start + 1)
        if closing is not None:
            end = closing.start()
            j = i
            while j < len(words) and words[j].start <= end:
                j += 1
            return text[start + 1 : end], j
        if strict:
            raise GrammarError(
                f"The quote after --{flag} is never closed. Close it, e.g. --{flag} "
                f"{quote}{_shown(text[start + 1 : words[i].end]) or 'value'}{quote}."
            )
    return text[start : words[i].end], i + 1


def _unknown_flag(name: str) -> GrammarError:
    known = [*_FLAGS, *_aliases(), _HELP]
    close = difflib.get_close_matches(name[:40], known, n=1, cutoff=0.6)
    shown = "--" + _shown(name)
    if close:
        return GrammarError(f"Unknown flag {shown}. Did you mean --{close[0]}?")
    listed = ", ".join("--" + f for f in _FLAGS)
    return GrammarError(
        f"Unknown flag {shown}. The flags are {listed}. Put -- before text that should not "
        "be read as flags; /imagine help explains them."
    )


def _parse_int(flag: str, raw: str, lo: int, hi: int) -> int:
    value = _ascii_digits(raw).strip()
    if _INT.fullmatch(value) is not None:
        number = int(value)
        if lo <= number <= hi:
            return number
    raise GrammarError(f"--{flag} must be a whole number from {lo} to {hi} (got {_shown(raw)}).")


def _parse_float(flag: str, raw: str, lo: float, hi: float) -> float:
    value = _ascii_digits(raw).strip()
    if _FLOAT.fullmatch(value) is not None:
        number = float(value)
        if lo <= number <= hi:
            return number
    raise GrammarError(f"--{flag} must be a number from {lo:g} to {hi:g} (got {_shown(raw)}).")


def _parse_ar(raw: str) -> tuple[int, int]:
    value = _ascii_digits(raw).strip()
    match = _AR.fullmatch(value)
    if match is not None:
        w, h = int(match.group(1)), int(match.group(2))
        if (
            1 <= w <= AR_SIDE_MAX
            and 1 <= h <= AR_SIDE_MAX
            and w <= AR_MAX_RATIO * h
            and (h <= AR_MAX_RATIO * w)
        ):
            return w, h
    raise GrammarError(
        f"--ar must be W:H with whole numbers from 1 to {AR_SIDE_MAX}, between "
        f"1:{AR_MAX_RATIO} and {AR_MAX_RATIO}:1, e.g. --ar 16:9 (got {_shown(raw)})."
    )


def _parse_size(raw: str, limits: GrammarLimits) -> tuple[int, int]:
    value = _ascii_digits(raw).strip()
    match = _SIZE.fullmatch(value)
    lo, hi, m = limits.min_side, limits.max_side, limits.size_multiple
    if match is None:
        raise GrammarError(
            f"--size must be WIDTHxHEIGHT, e.g. --size 1024x768 (got {_shown(raw)})."
        )
    w, h = int(match.group(1)), int(match.group(2))
    if not (lo <= w <= hi and lo <= h <= hi):
        raise GrammarError(f"--size sides must be from {lo} to {hi} pixels (got {w}x{h}).")
    if w % m or h % m:
        near_w = min(limits._highest_side(), max(limits._lowest_side(), round(w / m) * m))
        near_h = min(limits._highest_side(), max(limits._lowest_side(), round(h / m) * m))
        raise GrammarError(
            f"--size sides must be multiples of {m} (got {w}x{h}); the nearest "
            f"is {near_w}x{near_h}."
        )
    return w, h


def _parse_style(raw: str, limits: GrammarLimits) -> str:
    name = re.sub(r"[\s_]+", "-", _nfkc(raw).strip().casefold())
    known = {s.lower() for s in limits.styles}
    if name in known:
        return name
    if not known:
        raise GrammarError("No styles are set up on this bot, so --style cannot be used.")
    # Like an unknown flag: name the one closest style, else say where the list is.
    close = difflib.get_close_matches(name[:40], sorted(known), n=1, cutoff=0.6)
    if close:
        raise GrammarError(f"Unknown style {_shown(raw)}. Did you mean {close[0]}?")
    raise GrammarError(
        f"Unknown style {_shown(raw)}. There are {len(known)} styles; /imagine help lists them."
    )


def _parse_name(flag: str, raw: str) -> str:
    value = " ".join(_nfkc(raw).split())
    if not value:
        raise GrammarError(f"--{flag} needs a value, e.g. {_FLAGS[flag].example}.")
    if len(value) > MAX_NAME_CHARS:
        raise GrammarError(f"--{flag} is {len(value)} characters; the limit is {MAX_NAME_CHARS}.")
    return value


def size_for_aspect(w: int, h: int, limits: GrammarLimits | None = None) -> tuple[int, int]:
    """The pixel size for aspect ``w:h``: area near ``base_side**2``, sides multiples of
    ``size_multiple`` within ``[min_side, max_side]``; 16:9 -> 1344x768 at the defaults.

    Among the candidate sizes it minimises ``|log(ratio error)| + |log(area error)|`` so
    neither the shape nor the cost drifts far; ties go to the smaller area.
    """
    limits = limits or GrammarLimits()
    m = limits.size_multiple
    lo, hi = limits._lowest_side(), limits._highest_side()
    ratio = w / h
    area = float(limits.base_side) ** 2
    best: tuple[float, int, int, int] | None = None
    for height in range(lo, hi + 1, m):
        ideal = height * ratio
        for width in {math.floor(ideal / m) * m, math.ceil(ideal / m) * m}:
            width = min(hi, max(lo, width))
            score = abs(math.log(width / height / ratio)) + abs(math.log(width * height / area))
            key = (round(score, 9), width * height, -width, height)
            if best is None or key < best:
                best = key
    assert best is not None  # GrammarLimits guarantees lo <= hi
    return -best[2], best[3]


@dataclass(frozen=True)
class _Values:
    prompt_words: list[str]
    values: dict[str, str]


def _scan(text: str) -> _Values | None:
    """Split one variant's text into prompt words and raw flag values; None for --help."""
    words = _words(text)
    prompt: list[str] = []
    values: dict[str, str] = {}
    flags_done = False
    i = 0
    while i < len(words):
        word = words[i]
        token = None if flags_done else _flag_token(word.text)
        if token is None:
            if not flags_done and _is_end_marker(word.text):
                flags_done = True
            else:
                prompt.append(word.text)
            i += 1
            continue
        typed, inline = token
        if typed == _HELP:
            return None
        name = _aliases().get(typed, typed)
        flag = _FLAGS.get(name)
        if flag is None:
            raise _unknown_flag(typed)
        if name in values:
            raise GrammarError(f"--{name} was given twice.")
        missing = GrammarError(f"--{name} needs a value, e.g. {flag.example}.")
        if flag.kind == "bool":
            if inline is not None:
                raise GrammarError(f"--{name} takes no value; write just --{name}.")
            values[name] = ""
            i += 1
            continue
        # Where the value starts: after '=' in this word, or at the next word.
        if inline is not None and inline < len(word.text):
            start, j = word.start + inline, i
        else:
            i += 1
            if i >= len(words) or _flag_token(words[i].text) or _is_end_marker(words[i].text):
                raise missing
            start, j = words[i].start, i
        if flag.kind == "words":
            items: list[str] = []
            while True:
                item, j = _read_value(text, words, j, start, strict=False, flag=name)
                items.append(item)
                if j >= len(words) or _flag_token(words[j].text) or _is_end_marker(words[j].text):
                    break
                start = words[j].start
            value = " ".join(" ".join(items).split())
        else:
            value, j = _read_value(text, words, j, start, strict=True, flag=name)
            value = value.strip()
        if not value:
            raise missing
        values[name] = value
        i = j
    return _Values(prompt, values)


def _weighted(prompt: str) -> tuple[str, tuple[WeightedPrompt, ...]]:
    if "::" not in prompt:
        return prompt, (WeightedPrompt(prompt, 1.0),)
    parts: list[WeightedPrompt] = []
    pos = 0
    for match in _WEIGHT.finditer(prompt):
        text = prompt[pos : match.start()].strip()
        pos = match.end()
        raw = match.group(1)
        weight = 1.0 if raw is None else float(raw)
        if not math.isfinite(weight):
            raise GrammarError(f"The weight ::{_shown(raw or '')} must be a finite number.")
        if not text:
            if raw is None:
                continue  # a stray "::" separates nothing; MJ ignores it too
            raise GrammarError(
                f"The weight ::{_shown(raw)} has no text before it. Write "
                "weights after their text, e.g. a castle::2 fog::-0.5."
            )
        parts.append(WeightedPrompt(text, weight))
    tail = prompt[pos:].strip()
    if tail:
        parts.append(WeightedPrompt(tail, 1.0))
    if not parts:
        raise GrammarError(f"The prompt is empty. Tell me what to draw, e.g. {EXAMPLE}")
    total = sum(p.weight for p in parts)
    if not total > 0:
        raise GrammarError(
            f"The prompt weights add up to {total:g}; they must add up to more "
            "than 0, e.g. a castle::2 fog::-0.5."
        )
    positive = ", ".join(p.text for p in parts if p.weight > 0)
    return positive, tuple(parts)


def _repeat(scan: _Values) -> ImagineRequest:
    if scan.prompt_words or len(scan.values) > 1:
        raise GrammarError(
            "--from makes a job again exactly as it was, so it takes nothing else: write "
            "just /imagine --from JOB."
        )
    job = _parse_name("from", scan.values["from"])
    return ImagineRequest(
        prompt="",
        weighted_prompts=(),
        negative_prompt=None,
        n=1,
        width=0,
        height=0,
        size_explicit=True,
        seed=None,
        steps=None,
        cfg=None,
        sampler=None,
        model=None,
        style=None,
        strength=None,
        avatar=False,
        from_job=job,
    )


def _build(scan: _Values, limits: GrammarLimits) -> ImagineRequest:
    v = scan.values
    if "from" in v:
        return _repeat(scan)
    prompt_text = " ".join(scan.prompt_words)
    if not prompt_text:
        raise GrammarError(f"The prompt is empty. Tell me what to draw, e.g. {EXAMPLE}")
    if len(prompt_text) > limits.max_prompt_chars:
        raise GrammarError(
            f"Your prompt is {len(prompt_text)} characters; the limit is {limits.max_prompt_chars}."
        )
    prompt, weighted = _weighted(prompt_text)

    negative = v.get("no")
    if negative is not None and len(negative) > limits.max_prompt_chars:
        raise GrammarError(
            f"Your --no text is {len(negative)} characters; the limit is {limits.max_prompt_chars}."
        )

    avatar = "avatar" in v
    if "ar" in v and "size" in v:
        raise GrammarError("Use either --ar or --size, not both.")
    if "size" in v:
        width, height = _parse_size(v["size"], limits)
        shape = f"--size {width}x{height}"
    elif "ar" in v:
        aw, ah = _parse_ar(v["ar"])
        width, height = size_for_aspect(aw, ah, limits)
        shape = f"--ar {aw}:{ah}"
    else:
        width = height = limits._base_square()
        shape = ""
    if avatar and (width != height):
        raise GrammarError(
            f"--avatar makes a square picture, so it cannot be combined with "
            f"{shape}. Drop it, or use --ar 1:1."
        )

    return ImagineRequest(
        prompt=prompt,
        weighted_prompts=weighted,
        negative_prompt=negative,
        n=_parse_int("n", v["n"], 1, limits.max_images) if "n" in v else limits.default_n,
        width=width,
        height=height,
        size_explicit=bool(shape) or avatar,
        seed=_parse_int("seed", v["seed"], 0, SEED_MAX) if "seed" in v else None,
        steps=_parse_int("steps", v["steps"], *STEPS_RANGE) if "steps" in v else None,
        cfg=_parse_float("cfg", v["cfg"], *CFG_RANGE) if "cfg" in v else None,
        sampler=_parse_name("sampler", v["sampler"]) if "sampler" in v else None,
        model=_parse_name("model", v["model"]) if "model" in v else None,
        style=_parse_style(v["style"], limits) if "style" in v else None,
        strength=(
            _parse_float("strength", v["strength"], *STRENGTH_RANGE) if "strength" in v else None
        ),
        avatar=avatar,
        n_explicit="n" in v,
        remix="remix" in v,
    )


def _parse_variant(text: str, limits: GrammarLimits) -> ImagineRequest | HelpRequest:
    scan = _scan(text)
    if scan is None:
        return HelpRequest(usage(limits))
    return _build(scan, limits)


def _wants_help(text: str) -> bool:
    words = text.split()
    if len(words) == 1 and words[0].casefold() in (_HELP, "?"):
        return True
    for word in words:
        if _is_end_marker(word):
            return False
        token = _flag_token(word)
        if token is not None and token[0] == _HELP:
            return True
    return False


def parse(text: str, limits: GrammarLimits | None = None) -> ParsedImagine | HelpRequest:
    """Parse the text after ``/imagine``. Raises :class:`GrammarError` for bad input."""
    limits = limits or GrammarLimits()
    text = clean_text(text)
    if not text.strip():
        raise GrammarError(f"Tell me what to draw, e.g. {EXAMPLE}")
    # Bounds the work done on hostile input; no real prompt plus flags comes near it.
    max_command = max(8000, 4 * limits.max_prompt_chars)
    if len(text) > max_command:
        raise GrammarError(
            f"Your command is {len(text)} characters; prompts may be up to "
            f"{limits.max_prompt_chars}."
        )
    if _wants_help(text):
        return HelpRequest(usage(limits))

    parts = _split_groups(text)
    cap = limits.max_permutations
    count = _count(parts, stop=max(cap, 10_000))
    if count > cap:
        try:
            first = _parse_variant(_first_variant(parts), limits)
            n = first.n if isinstance(first, ImagineRequest) else limits.default_n
        except GrammarError:
            n = limits.default_n
        cost = (
            f"{count} jobs × {n} images = {count * n} images"
            if count <= 10_000
            else f"more than 10000 jobs × {n} images"
        )
        raise GrammarError(
            f"That expands to {cost}; the limit is {cap} jobs per command. "
            "Use fewer {a, b} options."
        )

    requests: list[ImagineRequest] = []
    for variant in _variants(parts):
        result = _parse_variant(variant, limits)
        if isinstance(result, HelpRequest):  # "--{help, n}" and the like
            return result
        requests.append(result)
    return ParsedImagine(requests=tuple(requests), permutations=len(requests))


def flag_help(limits: GrammarLimits | None = None) -> tuple[FlagHelp, ...]:
    """Every flag in table order, each ``help`` one line under 100 characters with the ranges
    these limits enforce: Discord's option descriptions, the web playground's hints."""
    limits = limits or GrammarLimits()
    out = []
    for flag in _FLAGS.values():
        text = _flag_help_text(flag, limits, brief=True)
        if len(text) > HELP_LINE_MAX:  # only a config could do this (a very long style name)
            text = text[: HELP_LINE_MAX - 1].rstrip() + "…"
        out.append(
            FlagHelp(name="--" + flag.name, value=flag.value, help=text, example=flag.example)
        )
    return tuple(out)


def usage(limits: GrammarLimits | None = None) -> str:
    """The help text: every flag with its range, the prompt tricks, an example."""
    limits = limits or GrammarLimits()
    flags = []
    for flag in _FLAGS.values():
        head = f"--{flag.name} {flag.value}".rstrip()
        flags.append(f"  {head:<15} {_flag_help_text(flag, limits, brief=False)}")
    return "\n".join(
        [
            "/imagine <prompt> [--flag value]...",
            "Flags may go anywhere; a lone -- ends them (the rest is prompt text).",
            *flags,
            "Prompt tricks:",
            "  a castle::2 fog::-0.5   weights: the number after :: weighs the text before it",
            f"  a {{red, blue}} car       one job per option (at most {limits.max_permutations} "
            "jobs); write \\{ for a literal brace",
            '  --no "blurry, text"     quotes keep a value together',
            f"Prompts may be up to {limits.max_prompt_chars} characters.",
            f"Example: {EXAMPLE} --style cinematic --n 2",
        ]
    )
