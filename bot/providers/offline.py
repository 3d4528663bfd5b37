"""The built-in offline renderer: a procedural picture, not a diffusion model.

It lets the bot run end to end with no key and no network (the web playground's default, demos,
tests, benchmarks). The picture is a deterministic function of (prompt, negative prompt, style,
seed, width, height): a gradient sky, a glowing sun or moon, layered hills and a few soft
shapes, with a palette taken from colour words in the prompt ("red", "dusk", "snow", ...) or
from a hash of it. A small "offline preview" caption keeps anyone from mistaking it for a real
generation.
"""

from __future__ import annotations

import asyncio
import colorsys
import hashlib
import io
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from bot.errors import ConfigError
from bot.images import ImageLimits, ImageRejected, decode_checked_sync, fit_cover_sync
from bot.providers import edits
from bot.providers.base import (
    Capabilities,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    InvalidRequest,
    ProgressCallback,
)

MODEL = "offline-procedural-v1"
_SEED_MOD = 4294967296
_INTERNAL_MAX_SIDE = 512  # render small, upscale: smooth shapes survive it and it is ~4x faster
_DEFAULT_STRENGTH = 0.6

# Colour words -> (hue in degrees, saturation, lightness bias). Lightness bias moves the whole
# scene darker (night) or paler (snow).
_COLOUR_WORDS: Mapping[str, tuple[float, float, float]] = {
    "red": (0, 0.75, 0.0),
    "crimson": (350, 0.8, -0.1),
    "scarlet": (5, 0.85, 0.0),
    "fire": (12, 0.9, 0.05),
    "orange": (28, 0.85, 0.05),
    "sunset": (18, 0.8, 0.0),
    "autumn": (25, 0.7, -0.05),
    "rust": (18, 0.6, -0.15),
    "dawn": (32, 0.6, 0.12),
    "gold": (45, 0.8, 0.08),
    "golden": (45, 0.8, 0.08),
    "amber": (40, 0.85, 0.0),
    "desert": (36, 0.55, 0.08),
    "sand": (40, 0.45, 0.15),
    "yellow": (55, 0.85, 0.12),
    "lemon": (58, 0.8, 0.15),
    "spring": (95, 0.55, 0.1),
    "green": (120, 0.6, 0.0),
    "forest": (135, 0.55, -0.15),
    "jungle": (130, 0.7, -0.1),
    "emerald": (145, 0.7, -0.05),
    "mint": (155, 0.45, 0.15),
    "teal": (175, 0.6, -0.05),
    "cyan": (185, 0.7, 0.05),
    "ice": (195, 0.35, 0.2),
    "sea": (200, 0.6, 0.0),
    "ocean": (205, 0.65, -0.05),
    "sky": (205, 0.55, 0.12),
    "blue": (220, 0.7, 0.0),
    "azure": (210, 0.7, 0.08),
    "navy": (230, 0.6, -0.25),
    "indigo": (250, 0.6, -0.15),
    "dusk": (275, 0.45, -0.12),
    "twilight": (265, 0.5, -0.15),
    "purple": (275, 0.6, -0.05),
    "violet": (280, 0.6, 0.0),
    "lavender": (270, 0.4, 0.18),
    "magenta": (305, 0.75, 0.0),
    "neon": (300, 0.95, 0.0),
    "pink": (330, 0.6, 0.15),
    "rose": (340, 0.55, 0.08),
    "night": (232, 0.5, -0.35),
    "midnight": (238, 0.55, -0.4),
    "dark": (240, 0.3, -0.3),
    "storm": (215, 0.2, -0.2),
    "fog": (210, 0.1, 0.15),
    "mist": (200, 0.12, 0.15),
    "snow": (205, 0.12, 0.3),
    "winter": (200, 0.2, 0.2),
    "white": (210, 0.05, 0.3),
    "silver": (215, 0.08, 0.12),
    "grey": (220, 0.05, 0.0),
    "gray": (220, 0.05, 0.0),
    "black": (240, 0.1, -0.4),
    "noir": (240, 0.0, -0.25),
}
_WORD_RE = re.compile(r"[a-z]+")

RGB = tuple[int, int, int]


# ------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class OfflineSettings:
    latency_ms: int = 0  # simulated per-call latency (demos, benchmarks, crash tests)
    concurrency: int = 4
    max_n_per_call: int = 10

    @classmethod
    def from_mapping(cls, section: Mapping[str, object]) -> OfflineSettings:
        """Build from the ``[providers.offline]`` table; unknown keys are refused so that a
        typo does not silently keep a default."""
        bounds = {"latency_ms": (0, 600_000), "concurrency": (1, 64), "max_n_per_call": (1, 10)}
        values: dict[str, int] = {}
        for key, raw in section.items():
            if key not in bounds:
                raise ConfigError(
                    f"providers.offline.{key}: unknown setting (known: {', '.join(sorted(bounds))})"
                )
            # bool is an int in Python; `latency_ms = true` is a mistake, not 1.
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise ConfigError(f"providers.offline.{key}: must be a whole number")
            lo, hi = bounds[key]
            if not lo <= raw <= hi:
                raise ConfigError(f"providers.offline.{key}: must be between {lo} and {hi}")
            values[key] = raw
        return cls(**values)


# ------------------------------------------------------------------------------------ palette
@dataclass(frozen=True)
class _Palette:
    sky_top: RGB
    sky_horizon: RGB
    glow: RGB
    layers: tuple[RGB, ...]  # far to near
    accent: RGB
    night: bool


def _hls(h: float, light: float, sat: float) -> RGB:
    r, g, b = colorsys.hls_to_rgb(
        (h % 360) / 360, min(0.97, max(0.02, light)), min(1.0, max(0.0, sat))
    )
    return (round(r * 255), round(g * 255), round(b * 255))


def _palette(prompt: str, negative: str, style: str, rng: random.Random) -> _Palette:
    banned = set(_WORD_RE.findall(negative.lower()))
    hits = [
        _COLOUR_WORDS[w]
        for w in _WORD_RE.findall(prompt.lower())
        if w in _COLOUR_WORDS and w not in banned
    ]
    digest = hashlib.sha256(f"{prompt.lower()}|{style.lower()}".encode()).digest()
    if hits:
        hue, sat, bias = hits[0]
        accent_hue = hits[1][0] if len(hits) > 1 else hue + 150 + digest[0] % 60
        bias = sum(h[2] for h in hits) / len(hits)
    else:
        hue = digest[0] * 360 / 256
        sat = 0.45 + digest[1] / 255 * 0.35
        bias = (digest[2] / 255 - 0.5) * 0.2
        accent_hue = hue + 120 + digest[3] % 120
    # Style names shift the mood a little so the same prompt reads differently per style.
    if style:
        hue += (digest[4] % 31) - 15
        sat *= 0.8 + digest[5] / 255 * 0.4
    hue += rng.uniform(-12, 12)  # each seed gets its own take on the palette
    night = bias < -0.2
    base = 0.5 + bias
    sky_top = _hls(hue + 15, base - 0.22, sat * 0.9)
    sky_horizon = _hls(hue - 20 if not night else hue + 10, base + 0.18, sat * 0.8)
    glow = _hls(accent_hue if not night else 55, 0.88 if not night else 0.92, 0.8)
    layers = tuple(
        _hls(hue + (i * 9) - 25, base - 0.08 - i * 0.11, min(1.0, sat * (0.55 + i * 0.12)))
        for i in range(4)
    )
    return _Palette(sky_top, sky_horizon, glow, layers, _hls(accent_hue, base, sat), night)


# ------------------------------------------------------------------------------------ drawing
def _gradient(size: tuple[int, int], top: RGB, bottom: RGB) -> Image.Image:
    mask = Image.linear_gradient("L").resize(size, Image.Resampling.BILINEAR)
    return Image.composite(Image.new("RGB", size, bottom), Image.new("RGB", size, top), mask)


def _ridge(rng: random.Random, w: int, h: int, base: float, rough: float) -> list[tuple[int, int]]:
    """A hill line: a few random sines summed, closed along the bottom edge."""
    waves = [
        (rng.uniform(0.5, 3.5), rng.uniform(0, math.tau), rng.uniform(0.3, 1.0)) for _ in range(4)
    ]
    total = sum(a for _, _, a in waves)
    pts = [(0, h)]
    steps = 48
    for i in range(steps + 1):
        x = i / steps
        y = sum(a * math.sin(f * math.tau * x + p) for f, p, a in waves) / total
        pts.append((round(x * w), round(h * (base - y * rough))))
    pts.append((w, h))
    return pts


def _render_scene(
    prompt: str, negative: str, style: str, seed: int, width: int, height: int
) -> Image.Image:
    """The picture without its caption, at ``width`` x ``height``."""
    rng = random.Random(f"{prompt}\x1f{negative}\x1f{style}\x1f{seed}\x1f{width}x{height}")
    pal = _palette(prompt, negative, style, rng)
    f = min(1.0, _INTERNAL_MAX_SIDE / max(width, height))
    w, h = max(16, round(width * f)), max(16, round(height * f))
    short = min(w, h)

    img = _gradient((w, h), pal.sky_top, pal.sky_horizon)

    # Sun or moon: a radial glow plus a disc.
    cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.15, 0.45) * h
    glow_r = short * rng.uniform(0.35, 0.6)
    box = (round(cx - glow_r), round(cy - glow_r), round(cx + glow_r), round(cy + glow_r))
    glow_mask = Image.radial_gradient("L").point(lambda v: max(0, 190 - v) * 255 // 190)
    glow_mask = glow_mask.resize((box[2] - box[0], box[3] - box[1]), Image.Resampling.BILINEAR)
    img.paste(
        Image.new("RGB", glow_mask.size, pal.glow),
        box[:2],
        glow_mask.point(lambda v: v * (120 if pal.night else 170) // 255),
    )
    disc_r = short * rng.uniform(0.05, 0.1)
    ImageDraw.Draw(img).ellipse((cx - disc_r, cy - disc_r, cx + disc_r, cy + disc_r), fill=pal.glow)

    # Soft clouds / bokeh: blurred translucent ellipses.
    light = (255, 255, 255) if not pal.night else pal.accent
    # Transparent *light* (not transparent black), so the blur does not leave dark halos.
    clouds = Image.new("RGBA", (w, h), (*light, 0))
    cd = ImageDraw.Draw(clouds)
    for _ in range(rng.randint(3, 7)):
        x, y = rng.uniform(-0.1, 1.1) * w, rng.uniform(0.05, 0.55) * h
        rx, ry = short * rng.uniform(0.08, 0.3), short * rng.uniform(0.03, 0.09)
        cd.ellipse((x - rx, y - ry, x + rx, y + ry), fill=(*light, rng.randint(40, 110)))
    if pal.night:  # stars
        for _ in range(rng.randint(30, 80)):
            x, y, r = rng.uniform(0, w), rng.uniform(0, 0.6 * h), rng.uniform(0.4, 1.3)
            cd.ellipse((x - r, y - r, x + r, y + r), fill=(255, 255, 240, rng.randint(120, 230)))
    clouds = clouds.filter(ImageFilter.GaussianBlur(short / 60))
    img.paste(clouds, (0, 0), clouds)

    # Hills, far to near; far ones are blurred for a little atmospheric depth.
    for i, colour in enumerate(pal.layers):
        mask = Image.new("L", (w, h), 0)
        base = 0.55 + i * 0.1 + rng.uniform(-0.04, 0.04)
        ImageDraw.Draw(mask).polygon(_ridge(rng, w, h, base, 0.14 - i * 0.025), fill=255)
        blur = (len(pal.layers) - i) * short / 400
        if blur >= 0.5:
            mask = mask.filter(ImageFilter.GaussianBlur(blur))
        img.paste(colour, (0, 0, w, h), mask)

    # Grain: seeded bytes, not Image.effect_noise (C rand(), not reproducible between runs).
    noise = Image.frombytes("L", (w, h), rng.randbytes(w * h)).convert("RGB")
    img = Image.blend(img, noise, 0.035)

    if (w, h) != (width, height):
        img = img.resize((width, height), Image.Resampling.BICUBIC)
    return img


def _caption(img: Image.Image) -> Image.Image:
    """A small, quiet 'offline preview' strip in the bottom-right corner."""
    out = img.convert("RGBA")
    overlay = Image.new("RGBA", out.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(overlay)
    size = max(9, min(out.width, out.height) // 48)
    font = ImageFont.load_default(size=size)
    text = "offline preview"
    left, top, right, bottom = d.textbbox((0, 0), text, font=font)
    pad = max(2, size // 3)
    bw, bh = right - left + 2 * pad, bottom - top + 2 * pad
    x0, y0 = out.width - bw - pad, out.height - bh - pad
    d.rounded_rectangle((x0, y0, x0 + bw, y0 + bh), radius=pad, fill=(0, 0, 0, 110))
    d.text((x0 + pad - left, y0 + pad - top), text, font=font, fill=(255, 255, 255, 200))
    out.alpha_composite(overlay)
    return out.convert("RGB")


def render_sync(
    prompt: str,
    *,
    seed: int,
    width: int,
    height: int,
    style: str = "",
    negative: str = "",
    init: Image.Image | None = None,
    strength: float = _DEFAULT_STRENGTH,
) -> bytes:
    """Render one picture and return PNG bytes. ``init`` (already ``width`` x ``height``) is
    blended in: strength 0 keeps it, 1 ignores it."""
    img = _render_scene(prompt, negative, style, seed, width, height)
    if init is not None:
        img = Image.blend(init.convert("RGB"), img, min(1.0, max(0.0, strength)))
    img = _caption(img)
    buf = io.BytesIO()
    # Level 1: the core re-encodes for storage anyway; this only has to be quick.
    img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _prepare_init(data: bytes, width: int, height: int) -> Image.Image:
    img = decode_checked_sync(data, ImageLimits())
    return fit_cover_sync(img, width, height).convert("RGB")


# ------------------------------------------------------------------------------------ provider
class OfflineProvider:
    name = "offline"
    label = "offline preview renderer (procedural picture, not a diffusion model)"

    def __init__(self, settings: OfflineSettings = OfflineSettings()) -> None:
        self._settings = settings
        self._caps = Capabilities(
            txt2img=True,
            img2img=True,
            max_n_per_call=settings.max_n_per_call,
            size_mode="exact",
            size_multiple=8,
            min_side=64,
            max_side=2048,
            steps_range=(10, 50),
            cfg_range=(0.0, 35.0),
            seed_max=_SEED_MOD - 1,
            samplers=None,
            native_styles=(),  # styles arrive as prompt templates
            max_concurrency=settings.concurrency,
            outpaint=True,  # Zoom out and Pan: the scene is drawn larger around the image
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    async def generate(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        """``req.n`` pictures; picture ``i`` uses seed ``req.seed + i``."""
        caps = self._caps
        if not 1 <= req.n <= caps.max_n_per_call:
            raise InvalidRequest(f"n={req.n} outside 1..{caps.max_n_per_call}")
        for side in (req.width, req.height):
            if not caps.min_side <= side <= caps.max_side:
                raise InvalidRequest(
                    f"size {req.width}x{req.height} outside {caps.min_side}..{caps.max_side}"
                )
        if self._settings.latency_ms:
            await asyncio.sleep(self._settings.latency_ms / 1000)
        init: Image.Image | None = None
        if req.init_image is not None:
            try:
                init = await asyncio.to_thread(_prepare_init, req.init_image, req.width, req.height)
            except ImageRejected as exc:
                raise InvalidRequest(f"init image refused: {exc.message}") from None
        strength = _DEFAULT_STRENGTH if req.strength is None else req.strength
        prompt = req.prompt
        if req.weighted_prompts:
            prompt = " ".join([prompt, *(w.text for w in req.weighted_prompts if w.weight > 0)])
        seeds = [(req.seed + i) % _SEED_MOD for i in range(req.n)]
        done = 0

        async def one(seed: int) -> bytes:
            nonlocal done
            data = await asyncio.to_thread(
                render_sync,
                prompt,
                seed=seed,
                width=req.width,
                height=req.height,
                style=req.style or "",
                negative=req.negative_prompt or "",
                init=init,
                strength=strength,
            )
            done += 1
            if progress is not None:
                progress(done / req.n)
            return data

        # Pillow releases the GIL while it draws and encodes, so the pictures render in
        # parallel threads.
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(one(s)) for s in seeds]
        images = tuple(
            GeneratedImage(data=t.result(), seed=s) for t, s in zip(tasks, seeds, strict=True)
        )
        return GenerationResult(images=images, model=MODEL)

    async def outpaint(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        """Zoom out and Pan: the same procedural scene drawn at the grown size, with the
        picked image laid over it where it was (feathered at the seam)."""
        edit, source = req.edit, req.init_image
        if edit is None or source is None:
            raise InvalidRequest("outpaint needs an image and an edit")
        width, height = edit.out_size(req.width, req.height)
        if max(width, height) > 2 * self._caps.max_side:
            raise InvalidRequest(f"outpainted size {width}x{height} is too large")
        background = await asyncio.to_thread(
            render_sync,
            req.prompt,
            seed=req.seed % _SEED_MOD,
            width=width,
            height=height,
            style=req.style or "",
            negative=req.negative_prompt or "",
        )
        data = await asyncio.to_thread(edits.paste_sync, background, source, edit)
        if progress is not None:
            progress(1.0)
        return GenerationResult((GeneratedImage(data, seed=req.seed),), model=MODEL)

    async def check(self) -> dict[str, str]:
        return {"status": "ok", "kind": "offline"}

    async def aclose(self) -> None:
        return None
