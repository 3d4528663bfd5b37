"""Pillow work: the input gate, content-addressed storage, preview grids.

Every image that enters the bot, from a user (``normalize_input``) or from a provider
(``store_generated``), goes through one decode gate: PNG/JPEG/WEBP only, a byte cap before
decoding, a pixel cap checked on the header before any pixel is decoded, single frame, EXIF
orientation applied, metadata stripped. Pillow is CPU-bound and mostly releases the GIL, so the
async functions run the ``_..._sync`` twins in ``asyncio.to_thread``; the sync twins exist so a
benchmark can measure the floor without the event loop.

Errors::

    ImageRejected (UserError)                 the user's file is refused; message fit to show
    BadProviderImage (ProviderUnavailable,    a provider returned bytes that fail the gate; the
                      ValueError)             core treats it as a provider fault and refunds

Files live under ``data_dir/images/<sha[:2]>/<sha>.<ext>``, where ``sha`` is the SHA-256 of the
file's bytes, so the same output stored twice is one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import re
import struct
import tempfile
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageCms, ImageDraw, ImageFont, ImageOps

from bot.errors import UserError
from bot.png_text import _png_info, _spliced_png, a1111_parameters, read_png_text
from bot.providers.base import ProviderUnavailable

ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP")

# n images -> (columns, rows) of the preview grid.
GRID_LAYOUTS: Mapping[int, tuple[int, int]] = {
    1: (1, 1),
    2: (2, 1),
    3: (3, 1),
    4: (2, 2),
    5: (3, 2),
    6: (3, 2),
    7: (4, 2),
    8: (4, 2),
    9: (3, 3),
    10: (5, 2),
}

_GRID_GAP = 4  # px between tiles, in the final (scaled) grid
_GRID_BACKGROUND = (24, 24, 27)
_JPEG_QUALITIES = (90, 85, 80, 72, 64, 56, 48, 40)
_WEBP_QUALITIES = (70, 55, 40, 30)
_STORE_PNG_LEVEL = 4  # stored outputs: a fair size for chat uploads at a modest CPU cost
_INPUT_PNG_LEVEL = 3


# --------------------------------------------------------------------------------------- errors
class ImageRejected(UserError):
    """A user's image was refused; ``message`` says why in words fit for the user."""


class BadProviderImage(ProviderUnavailable, ValueError):
    """A provider returned bytes that are not an acceptable image.

    It is a :class:`ProviderUnavailable` (a malformed answer: the core refunds and may retry like
    any provider fault) and a ``ValueError`` for callers that only care that the data was bad.
    """

    user_message = "The image service returned a damaged image. Your quota was refunded; try again."


# ---------------------------------------------------------------------------------------- types
@dataclass(frozen=True)
class StoredImage:
    sha256: str  # hex of the final file bytes (the content address)
    path: Path  # data_dir/images/<sha[:2]>/<sha>.<ext>
    width: int
    height: int
    size_bytes: int


@dataclass(frozen=True)
class ImageLimits:
    max_input_bytes: int = 20 * 1024 * 1024
    # Decompression bombs are refused well below Pillow's own 89 MP warning threshold.
    max_input_pixels: int = 4096 * 4096
    preview_max_bytes: int = 8 * 1024 * 1024  # the grid must fit chat uploads (Discord: 10 MiB)
    preview_max_side: int = 1536


# ------------------------------------------------------------------------------------ the gate
def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def _mp(n: int) -> str:
    return f"{n / 1_000_000:.1f} megapixels"


def _pixel_limit_text(limits: ImageLimits) -> str:
    side = int(limits.max_input_pixels**0.5)
    return f"{_mp(limits.max_input_pixels)} (for example {side}x{side})"


def decode_checked_sync(data: bytes, limits: ImageLimits) -> Image.Image:
    """Decode ``data`` through the gate; return a loaded, upright, metadata-free RGB/RGBA image
    (sRGB). For code already running in a worker thread (providers, the grid).

    Raises :class:`ImageRejected` with a message per refusal.
    """
    if not data:
        raise ImageRejected("That file is empty.")
    if len(data) > limits.max_input_bytes:
        raise ImageRejected(
            f"That file is {_mb(len(data))}; the limit is {_mb(limits.max_input_bytes)}."
        )
    try:
        # formats= keeps Pillow from trying its other ~40 decoders on hostile input.
        im = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow refuses > 2x MAX_IMAGE_PIXELS in open(), before we see the size. (A warning
        # only arrives here as an exception when the process runs with -W error; otherwise
        # our own cap below, far lower than Pillow's, refuses the image.)
        m = re.search(r"\((\d+) pixels\)", str(exc))
        size = f" ({_mp(int(m.group(1)))})" if m else ""
        raise ImageRejected(
            f"That image is far too large{size}; the limit is {_pixel_limit_text(limits)}."
        ) from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError):
        # UnidentifiedImageError is an OSError.
        raise ImageRejected("That file is not a PNG, JPEG or WEBP image.") from None

    with im:
        width, height = im.size
        # Checked on the header, before a single pixel is decoded.
        if width <= 0 or height <= 0:
            raise ImageRejected("That image has no pixels.")
        if width * height > limits.max_input_pixels:
            raise ImageRejected(
                f"That image is {width}x{height} pixels; the limit is {_pixel_limit_text(limits)}."
            )
        # MPO (a JPEG with a second, stereo or depth picture, common from phone cameras) is
        # not an animation: its first frame is the photo.
        if im.format != "MPO" and getattr(im, "n_frames", 1) > 1:
            raise ImageRejected("Animated images are not supported; send a single still picture.")
        try:
            im.load()
            upright = ImageOps.exif_transpose(im) or im
            out = _to_srgb(upright)
        except (OSError, SyntaxError, ValueError, struct.error, EOFError, zlib.error):
            raise ImageRejected(
                "That image file is damaged or incomplete; try exporting it again."
            ) from None
    out.info = {}  # strips EXIF (incl. GPS), XMP, text chunks and the (now applied) ICC profile
    return out


def _to_srgb(im: Image.Image) -> Image.Image:
    """RGB or RGBA, converted from an embedded ICC profile to sRGB when there is one (phone
    photos are often Display P3; dropping the profile without converting dulls them)."""
    mode = "RGBA" if im.has_transparency_data else "RGB"
    if im.mode.startswith("I"):
        # 16-bit greyscale PNG: scale to 8 bits instead of letting convert() clip to white.
        im = im.convert("I").point(lambda v: v / 256).convert("L")
    icc = im.info.get("icc_profile")
    if icc and im.mode in ("RGB", "RGBA", "CMYK", "L"):
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            base = im if im.mode in ("RGB", "RGBA") else im.convert(mode)
            converted = ImageCms.profileToProfile(base, src, dst, outputMode=mode)
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile is ignored, not fatal: the pixels are still fine
    return im.convert(mode) if im.mode != mode else im.copy()


def encode_png_sync(img: Image.Image, compress_level: int = _STORE_PNG_LEVEL) -> bytes:
    """Encode ``img`` as PNG with no metadata. The floor that a benchmark measures against."""
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=compress_level)
    return buf.getvalue()


# --------------------------------------------------------------------------------- storage
def _content_path(data_dir: Path, sha: str, ext: str) -> Path:
    return data_dir / "images" / sha[:2] / f"{sha}.{ext}"


def _write_content_addressed(data_dir: Path, data: bytes, ext: str) -> tuple[str, Path]:
    sha = hashlib.sha256(data).hexdigest()
    path = _content_path(data_dir, sha, ext)
    if path.exists():
        return sha, path  # same bytes, same name: nothing to write
    path.parent.mkdir(parents=True, exist_ok=True)
    # tmp file in the same directory + os.replace: a crash never leaves a half-written image
    # under a content address that later readers would trust.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=f".{ext}")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return sha, path


# What tempfile.mkstemp names our temporary files (_write_content_addressed): ".tmp-", eight
# characters of its alphabet, the extension. Anything else in the store is not ours to remove.
_TEMP_NAME = re.compile(r"\.tmp-[a-z0-9_]{8}\.(?:png|jpg|webp)")
_SHARD_NAME = re.compile(r"[0-9a-f]{2}")


def remove_stale_temp_files(data_dir: Path, older_than: float) -> int:
    """Remove the image store's temporary files last written before ``older_than`` (a Unix
    time): what a process killed in the middle of a write left behind. Only files named the
    way the store names them, only in its ``images/<xx>/`` folders, never through a link.
    Returns how many were removed."""
    removed = 0
    try:
        shards = [
            e
            for e in os.scandir(data_dir / "images")
            if _SHARD_NAME.fullmatch(e.name) and e.is_dir(follow_symlinks=False)
        ]
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for shard in shards:
        with os.scandir(shard.path) as entries:
            for entry in entries:
                if not _TEMP_NAME.fullmatch(entry.name):
                    continue
                try:
                    if (
                        not entry.is_file(follow_symlinks=False)
                        or entry.stat(follow_symlinks=False).st_mtime >= older_than
                    ):
                        continue  # a write that may be going on right now
                    os.unlink(entry.path)
                    removed += 1
                except FileNotFoundError:
                    continue
    return removed


def process_start_time() -> float:
    """When this process started (Unix time, to the kernel's 10 ms tick, rounded down), from
    ``/proc``; where that cannot be read, now (callers clean up before this process writes)."""
    try:
        with open("/proc/self/stat", "rb") as fh:
            # The command name (field 2) may hold spaces and parentheses: count from the end.
            started = int(fh.read().rsplit(b")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        # Both counted from boot: the age of the process, then back from now.
        return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return time.time()


def _store_one_sync(
    data_dir: Path, data: bytes, params: Mapping[str, str], limits: ImageLimits
) -> tuple[StoredImage, Image.Image]:
    try:
        # Full decode even when the bytes are kept: it is the check that they are an image.
        img = decode_checked_sync(data, limits)
    except ImageRejected as exc:
        raise BadProviderImage(f"provider image refused: {exc.message}") from None
    png = _spliced_png(data, params)
    if png is None:
        buf = io.BytesIO()
        img.save(buf, "PNG", compress_level=_STORE_PNG_LEVEL, pnginfo=_png_info(params))
        png = buf.getvalue()
    sha, path = _write_content_addressed(data_dir, png, "png")
    return StoredImage(sha, path, img.width, img.height, len(png)), img


def _store_generated_sync(
    data_dir: Path, data: bytes, params: Mapping[str, str], limits: ImageLimits
) -> StoredImage:
    return _store_one_sync(data_dir, data, params, limits)[0]


async def store_job_images(
    data_dir: Path,
    outputs: Sequence[tuple[bytes, Mapping[str, str]]],
    limits: ImageLimits,
) -> tuple[list[StoredImage], StoredImage | None]:
    """Store one job's images and its preview grid. Images are checked and stored in parallel
    worker threads (Pillow releases the GIL), and the grid is drawn from the pictures already
    decoded, so each image is decoded once."""
    results = await asyncio.gather(
        *(
            asyncio.to_thread(_store_one_sync, data_dir, data, params, limits)
            for data, params in outputs
        )
    )
    if not results:
        return [], None
    tiles = [tile for _, tile in results]
    grid = await asyncio.to_thread(_grid_from_tiles_sync, data_dir, tiles, limits)
    return [stored for stored, _ in results], grid


async def store_generated(
    data_dir: Path, data: bytes, params: Mapping[str, str], limits: ImageLimits
) -> StoredImage:
    """Validate a provider's output, re-encode it as PNG with ``params`` as text chunks (e.g.
    ``prompt``, ``seed``, an A1111-style ``parameters`` line) and store it content-addressed.

    Raises :class:`BadProviderImage` when ``data`` fails the gate.
    """
    return await asyncio.to_thread(_store_generated_sync, data_dir, data, params, limits)


# ------------------------------------------------------------------------------------ input
def _normalize_input_sync(data: bytes, limits: ImageLimits) -> bytes:
    return encode_png_sync(decode_checked_sync(data, limits), _INPUT_PNG_LEVEL)


async def normalize_input(data: bytes, limits: ImageLimits) -> bytes:
    """Gate an incoming image (refine / img2img) and return clean PNG bytes: upright, sRGB,
    RGB or RGBA, without EXIF, GPS or text chunks. Raises :class:`ImageRejected`."""
    return await asyncio.to_thread(_normalize_input_sync, data, limits)


def fit_cover_sync(img: Image.Image, width: int, height: int) -> Image.Image:
    """Scale to cover ``width`` x ``height`` and centre-crop: the provider needs exactly this
    size and the subject is usually central; letterboxing would teach the model black bars."""
    if img.size == (width, height):
        return img
    return ImageOps.fit(img, (width, height), Image.Resampling.LANCZOS)


def _resize_for_init_sync(png: bytes, width: int, height: int) -> bytes:
    img = decode_checked_sync(png, ImageLimits())
    return encode_png_sync(fit_cover_sync(img, width, height), 1)


async def resize_for_init(png: bytes, width: int, height: int) -> bytes:
    """Resize and centre-crop an init image to exactly ``width`` x ``height`` (PNG out)."""
    return await asyncio.to_thread(_resize_for_init_sync, png, width, height)


# ------------------------------------------------------------------------------------- grid
def grid_layout(n: int) -> tuple[int, int]:
    """(columns, rows) for a preview of ``n`` images."""
    try:
        return GRID_LAYOUTS[n]
    except KeyError:
        raise ValueError(f"a preview grid holds 1..10 images, not {n}") from None


def _badge(draw: ImageDraw.ImageDraw, x: int, y: int, label: str, tile_short: int) -> None:
    size = max(11, min(40, tile_short // 11))
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    pad = max(3, size // 3)
    margin = max(4, size // 3)
    bw = right - left + 2 * pad
    bh = bottom - top + 2 * pad
    box = (x + margin, y + margin, x + margin + max(bw, bh), y + margin + bh)
    draw.rounded_rectangle(box, radius=bh // 3, fill=(0, 0, 0, 170))
    tx = box[0] + (box[2] - box[0] - (right - left)) // 2 - left
    ty = box[1] + pad - top
    draw.text((tx, ty), label, font=font, fill=(255, 255, 255, 255))


def _render_grid(tiles: Sequence[Image.Image], cols: int, rows: int, max_side: int) -> Image.Image:
    cell_w = max(t.width for t in tiles)
    cell_h = max(t.height for t in tiles)
    gap = _GRID_GAP if len(tiles) > 1 else 0
    # Gaps stay fixed in pixels, so only the tiles are scaled to fit max_side.
    scale = min(
        1.0,
        (max_side - (cols - 1) * gap) / (cols * cell_w),
        (max_side - (rows - 1) * gap) / (rows * cell_h),
    )
    tw = max(1, int(cell_w * scale))
    th = max(1, int(cell_h * scale))
    canvas = Image.new(
        "RGBA",
        (cols * tw + (cols - 1) * gap, rows * th + (rows - 1) * gap),
        (*_GRID_BACKGROUND, 255),
    )
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for i, tile in enumerate(tiles):
        col, row = i % cols, i // cols
        x, y = col * (tw + gap), row * (th + gap)
        # Fit inside the cell keeping the aspect ratio (mixed sizes get letterboxed).
        f = min(tw / tile.width, th / tile.height)
        size = (max(1, round(tile.width * f)), max(1, round(tile.height * f)))
        small = (
            tile
            if tile.size == size
            else tile.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
        )
        px, py = x + (tw - size[0]) // 2, y + (th - size[1]) // 2
        canvas.alpha_composite(small.convert("RGBA"), (px, py))
        if len(tiles) > 1:
            _badge(draw, px, py, str(i + 1), min(size))
    canvas.alpha_composite(overlay)
    return canvas.convert("RGB")


def _encode_preview(img: Image.Image, limit: int) -> tuple[bytes, str, Image.Image]:
    """JPEG with quality stepping down, then WEBP, then a smaller picture, until it fits."""
    while True:
        for q in _JPEG_QUALITIES:
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=q, optimize=True)
            if buf.tell() <= limit:
                return buf.getvalue(), "jpg", img
        for q in _WEBP_QUALITIES:
            buf = io.BytesIO()
            img.save(buf, "WEBP", quality=q, method=4)
            if buf.tell() <= limit:
                return buf.getvalue(), "webp", img
        if max(img.size) <= 64:
            raise ValueError(f"cannot fit a preview into {limit} bytes")
        img = img.resize(
            (max(1, img.width * 3 // 4), max(1, img.height * 3 // 4)), Image.Resampling.LANCZOS
        )


def _open_tile(path: Path, limits: ImageLimits) -> Image.Image:
    try:
        return decode_checked_sync(path.read_bytes(), limits)
    except ImageRejected as exc:
        raise ValueError(f"cannot use {path.name} in a grid: {exc.message}") from None


def _make_grid_sync(data_dir: Path, images: Sequence[Path], limits: ImageLimits) -> StoredImage:
    return _grid_from_tiles_sync(data_dir, [_open_tile(p, limits) for p in images], limits)


def _grid_from_tiles_sync(
    data_dir: Path, tiles: Sequence[Image.Image], limits: ImageLimits
) -> StoredImage:
    cols, rows = grid_layout(len(tiles))
    grid = _render_grid(tiles, cols, rows, limits.preview_max_side)
    data, ext, final = _encode_preview(grid, limits.preview_max_bytes)
    sha, path = _write_content_addressed(data_dir, data, ext)
    return StoredImage(sha, path, final.width, final.height, len(data))


async def make_grid(data_dir: Path, images: Sequence[Path], limits: ImageLimits) -> StoredImage:
    """A numbered preview grid of 1..10 stored images (JPEG, or WEBP when JPEG will not fit
    ``preview_max_bytes``), longest side at most ``preview_max_side``, stored content-addressed.
    """
    return await asyncio.to_thread(_make_grid_sync, data_dir, list(images), limits)


__all__ = [
    "ALLOWED_FORMATS",
    "GRID_LAYOUTS",
    "BadProviderImage",
    "ImageLimits",
    "ImageRejected",
    "StoredImage",
    "a1111_parameters",
    "decode_checked_sync",
    "encode_png_sync",
    "fit_cover_sync",
    "grid_layout",
    "make_grid",
    "normalize_input",
    "process_start_time",
    "read_png_text",
    "remove_stale_temp_files",
    "resize_for_init",
    "store_generated",
    "store_job_images",
]
