"""Style presets: the 17 Stability presets plus whatever the config adds or overrides.

A provider with native presets (``Capabilities.native_styles``) gets the style name itself;
every other provider gets the prompt rewritten through the style's template, so ``--style``
means roughly the same thing everywhere.

Templates are filled with ``str.replace``, never ``str.format``: a user's prompt or an admin's
template may hold braces of its own (``a {red} car``, ``{{ json }}``), and ``format`` would
raise on them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.errors import ConfigError, Unsupported

PLACEHOLDER = "{prompt}"

# Stability's ``style_preset`` enum, in the order the issue lists them.
BUILTIN_STYLES: tuple[str, ...] = (
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
)

# Wording follows the prompt suffixes the SDXL community uses for these presets: short, and
# positive only (negatives stay the user's business via --no).
BUILTIN_TEMPLATES: Mapping[str, str] = {
    "3d-model": "professional 3d model of {prompt}, octane render, highly detailed, volumetric, "
    "dramatic lighting",
    "analog-film": "analog film photo of {prompt}, faded film, desaturated, 35mm photo, grainy, "
    "vignette, vintage, Kodachrome",
    "anime": "{prompt}, anime artwork, anime style, vibrant, studio anime",
    "cinematic": "cinematic film still of {prompt}, shallow depth of field, vignette, highly "
    "detailed, bokeh, moody, epic, film grain",
    "comic-book": "comic book panel of {prompt}, graphic illustration, comic art, graphic novel "
    "art, vibrant, highly detailed",
    "digital-art": "concept art of {prompt}, digital artwork, illustrative, painterly, matte "
    "painting, highly detailed",
    "enhance": "{prompt}, highly detailed, sharp focus",
    "fantasy-art": "ethereal fantasy concept art of {prompt}, magnificent, celestial, ethereal, "
    "painterly, epic, majestic, magical, fantasy art",
    "isometric": "isometric style {prompt}, vibrant, beautiful, crisp, detailed, ultra detailed, "
    "intricate",
    "line-art": "line art drawing of {prompt}, professional, sleek, modern, minimalist, "
    "graphic, line art, vector graphics",
    "low-poly": "low-poly style {prompt}, low-poly game art, polygon mesh, jagged, blocky, "
    "wireframe edges, centered composition",
    "modeling-compound": "play-doh style {prompt}, sculpture, clay art, centered composition, "
    "claymation",
    "neon-punk": "neonpunk style {prompt}, cyberpunk, vaporwave, neon, vibes, vibrant, "
    "stunningly beautiful, crisp, detailed, sleek, ultramodern, magenta highlights, dark purple "
    "shadows, high contrast, cinematic",
    "origami": "origami style {prompt}, paper art, pleated paper, folded, origami art, pleats, "
    "cut and fold, centered composition",
    "photographic": "cinematic photo of {prompt}, 35mm photograph, film, bokeh, professional, "
    "4k, highly detailed",
    "pixel-art": "pixel-art {prompt}, low-res, blocky, pixel art style, 8-bit graphics",
    "tile-texture": "{prompt}, seamless tileable texture, repeating pattern, flat lighting, "
    "top-down view",
}

AVATAR_TEMPLATE = (
    "{prompt}, head and shoulders portrait, centered, plain background, profile picture"
)

STYLE_NAME = re.compile(r"[a-z0-9-]{1,32}")
MAX_TEMPLATE_CHARS = 1000


def fill(template: str, prompt: str) -> str:
    """Put ``prompt`` into every ``{prompt}`` of ``template`` (nothing else is interpreted)."""
    return template.replace(PLACEHOLDER, prompt)


def apply_avatar(prompt: str) -> str:
    """Frame ``prompt`` as a square head-and-shoulders profile picture (``--avatar``)."""
    return fill(AVATAR_TEMPLATE, prompt)


def _check_entry(name: object, template: object) -> tuple[str, str]:
    # The key is shown as written (bounded) so the admin can find it in the TOML file.
    key = f"styles.{str(name)[:40]}"
    if not isinstance(name, str) or STYLE_NAME.fullmatch(name) is None:
        raise ConfigError(
            f"{key}: a style name must be 1 to 32 characters of a-z, 0-9 and '-' (lower case)."
        )
    if not isinstance(template, str):
        raise ConfigError(f"{key}: the template must be a string containing {PLACEHOLDER}.")
    if PLACEHOLDER not in template:
        raise ConfigError(
            f"{key}: the template must contain {PLACEHOLDER}, e.g. "
            f'"{PLACEHOLDER}, watercolor painting".'
        )
    if len(template) > MAX_TEMPLATE_CHARS:
        raise ConfigError(
            f"{key}: the template is {len(template)} characters; the limit is {MAX_TEMPLATE_CHARS}."
        )
    return name, template


@dataclass(frozen=True)
class StyleBook:
    """Every style the bot knows: name -> template, builtin first, then config additions.

    Build it with :meth:`from_config`; ``names()`` feeds ``GrammarLimits.styles`` so the
    command parser accepts exactly the styles this book can apply.
    """

    entries: tuple[tuple[str, str], ...] = tuple(
        (name, BUILTIN_TEMPLATES[name]) for name in BUILTIN_STYLES
    )
    _index: Mapping[str, str] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        index: dict[str, str] = {}
        for name, template in self.entries:
            checked_name, checked_template = _check_entry(name, template)
            index[checked_name] = checked_template
        # A frozen dataclass cannot assign normally; the index is derived, not state.
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_config(cls, styles: Mapping[str, object] | None = None) -> StyleBook:
        """Builtin styles, with ``styles`` (the config's ``[styles]`` table) overriding or adding.

        Raises :class:`ConfigError` naming ``styles.<name>`` for a bad name or template.
        """
        merged: dict[str, str] = dict(BUILTIN_TEMPLATES)
        order = list(BUILTIN_STYLES)
        for name, template in (styles or {}).items():
            checked_name, checked_template = _check_entry(name, template)
            if checked_name not in merged:
                order.append(checked_name)
            merged[checked_name] = checked_template
        return cls(entries=tuple((name, merged[name]) for name in order))

    def names(self) -> frozenset[str]:
        return frozenset(self._index)

    def ordered_names(self) -> tuple[str, ...]:
        """Names in display order (builtin order, then config additions)."""
        return tuple(name for name, _ in self.entries if name in self._index)

    def template(self, style: str) -> str:
        """The template for ``style`` (any case). Raises :class:`Unsupported` if unknown."""
        try:
            return self._index[style.lower()]
        except KeyError:
            # Reachable when a queued job outlives a config change that removed its style:
            # the user gets a message and a refund instead of an unexpected error.
            raise Unsupported(f"The style '{style[:40]}' is not available any more.") from None

    def apply(self, style: str | None, prompt: str, *, avatar: bool = False) -> str:
        """The prompt to send to a provider without native presets.

        ``avatar`` adds the portrait framing first, so a style wraps the framed prompt.
        """
        text = apply_avatar(prompt) if avatar else prompt
        if style is None:
            return text
        return fill(self.template(style), text)
