"""bot.images: the input gate, content-addressed storage and preview grids."""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import struct
import time
import zlib
from pathlib import Path

import pytest
from PIL import ExifTags, Image, ImageCms, ImageStat, PngImagePlugin

from bot.errors import UserError
from bot.images import (
    GRID_LAYOUTS,
    BadProviderImage,
    ImageLimits,
    ImageRejected,
    a1111_parameters,
    encode_png_sync,
    grid_layout,
    make_grid,
    normalize_input,
    read_png_text,
    resize_for_init,
    store_generated,
)
from bot.providers.base import ProviderError

LIMITS = ImageLimits()


# ------------------------------------------------------------------------------------ helpers
def encode(img: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def solid(size: tuple[int, int] = (64, 48), colour: tuple[int, ...] = (200, 30, 30)) -> Image.Image:
    return Image.new("RGB", size, colour)


def noisy(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Incompressible pixels: the worst case for byte limits."""
    rng = random.Random(seed)
    return Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body))
        + kind
        + body
        + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )


def bomb_png(width: int, height: int, *, valid_idat: bool = True) -> bytes:
    """A 1-bit greyscale PNG of ``width`` x ``height`` written by hand (Pillow would need the
    whole canvas in memory). All-zero rows compress ~1000:1, so a 30000x30000 bomb is ~100 KB."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    if valid_idat:
        z = zlib.compressobj(9)
        row = b"\0" * (1 + (width + 7) // 8)
        parts = [z.compress(row) for _ in range(height)]
        idat = b"".join(parts) + z.flush()
    else:
        idat = b"this is not zlib data at all"
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


async def rejected(data: bytes, limits: ImageLimits = LIMITS) -> str:
    with pytest.raises(ImageRejected) as info:
        await normalize_input(data, limits)
    assert isinstance(info.value, UserError)
    return info.value.message


def decoded(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


# --------------------------------------------------------------------------- normalize_input
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
async def test_allowed_formats_come_back_as_png(fmt: str) -> None:
    out = await normalize_input(encode(solid((80, 60)), fmt), LIMITS)
    im = decoded(out)
    assert im.format == "PNG"
    assert im.size == (80, 60)
    assert im.mode == "RGB"


async def test_transparency_is_kept_as_rgba() -> None:
    src = Image.new("RGBA", (32, 32), (10, 20, 30, 0))
    im = decoded(await normalize_input(encode(src), LIMITS))
    assert im.mode == "RGBA"
    assert im.getpixel((0, 0))[3] == 0  # type: ignore[index]


async def test_zero_bytes_refused() -> None:
    assert "empty" in await rejected(b"")


async def test_oversize_bytes_refused_before_decoding() -> None:
    data = encode(noisy((64, 64)))
    msg = await rejected(data, ImageLimits(max_input_bytes=len(data) - 1))
    assert "limit" in msg and "MB" in msg
    # One byte more and the same file passes.
    await normalize_input(data, ImageLimits(max_input_bytes=len(data)))


@pytest.mark.parametrize(
    "data",
    [
        encode(solid(), "GIF"),
        encode(solid(), "BMP"),
        encode(solid(), "TIFF"),
        b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
        b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>",
        b"\x89PNG\r\n\x1a\n",  # a PNG signature and nothing else
    ],
    ids=["gif", "bmp", "tiff", "pdf-renamed", "html-renamed", "bare-signature"],
)
async def test_other_formats_refused(data: bytes) -> None:
    assert await rejected(data) == "That file is not a PNG, JPEG or WEBP image."


async def test_decompression_bomb_refused_cheaply() -> None:
    data = bomb_png(30000, 30000)
    assert len(data) < 1_000_000  # 900 megapixels in well under a megabyte
    msg = await rejected(data)
    assert "too large" in msg and "4096x4096" in msg


async def test_pixel_cap_is_checked_on_the_header_before_decoding() -> None:
    # 25 MP: above our 16.8 MP cap, below Pillow's own bomb threshold. Its pixel data is
    # garbage, so a gate that decoded first would report a damaged file instead.
    msg = await rejected(bomb_png(5000, 5000, valid_idat=False))
    assert msg.startswith("That image is 5000x5000 pixels; the limit is")
    assert "4096x4096" in msg


async def test_pixel_cap_follows_the_limits() -> None:
    data = encode(solid((100, 100)))
    msg = await rejected(data, ImageLimits(max_input_pixels=99 * 100))
    assert "100x100" in msg
    await normalize_input(data, ImageLimits(max_input_pixels=100 * 100))


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
async def test_animated_images_refused(fmt: str) -> None:
    frames = [solid(colour=(255, 0, 0)), solid(colour=(0, 0, 255))]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(io.BytesIO(data)).n_frames == 2  # type: ignore[attr-defined]
    assert "Animated" in await rejected(data)


async def test_truncated_png_refused() -> None:
    data = encode(noisy((128, 128)))
    msg = await rejected(data[: len(data) // 2])
    assert "damaged or incomplete" in msg


def exif_jpeg() -> bytes:
    """200x100 JPEG, red block at its top-left, EXIF orientation 6 (rotate 90° clockwise to
    display) and a GPS position."""
    img = Image.new("RGB", (200, 100), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 40, 40))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "PhoneCo"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (51.0, 30.0, 0.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "W"
    gps[ExifTags.GPS.GPSLongitude] = (0.0, 7.0, 0.0)
    return encode(img, "JPEG", exif=exif, quality=95)


async def test_exif_orientation_applied_and_exif_gps_stripped() -> None:
    src = exif_jpeg()
    # The fixture really carries what we strip.
    src_exif = Image.open(io.BytesIO(src)).getexif()
    assert src_exif[ExifTags.Base.Orientation] == 6
    assert src_exif.get_ifd(ExifTags.IFD.GPSInfo)

    out = await normalize_input(src, LIMITS)
    im = decoded(out)
    assert im.size == (100, 200)
    # Rotated 90° clockwise: the stored top-left corner is now the displayed top-right one.
    r, _, b = im.getpixel((90, 10))  # type: ignore[misc]
    assert r > 200 and b < 60
    r, _, b = im.getpixel((10, 10))  # type: ignore[misc]
    assert b > 200 and r < 60
    assert "exif" not in im.info
    assert not im.getexif()
    assert b"Exif" not in out and b"PhoneCo" not in out and b"eXIf" not in out


async def test_text_chunks_stripped_and_icc_applied_then_dropped() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "home address: 1 Secret Lane")
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src_bytes = encode(solid(), pnginfo=info, icc_profile=icc)
    assert b"Secret Lane" in src_bytes and b"iCCP" in src_bytes
    out = await normalize_input(src_bytes, LIMITS)
    assert b"Secret Lane" not in out and b"iCCP" not in out
    im = decoded(out)
    assert im.text == {}  # type: ignore[attr-defined]
    # sRGB -> sRGB leaves the colour as it was (within rounding).
    assert all(abs(a - b) <= 2 for a, b in zip(im.getpixel((5, 5)), (200, 30, 30), strict=True))  # type: ignore[arg-type]


async def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    src = Image.new("I;16", (8, 8), 30000)
    im = decoded(await normalize_input(encode(src), LIMITS))
    value = im.getpixel((0, 0))[0]  # type: ignore[index]
    assert 110 <= value <= 125  # 30000 / 65535 * 255 ≈ 117, not clipped to 255


# ---------------------------------------------------------------------------- store_generated
async def test_store_generated_content_addressed_with_text_chunks(tmp_path: Path) -> None:
    params = {
        "prompt": "a lighthouse at dusk, 灯台 🌅",
        "seed": "1234",
        "parameters": a1111_parameters(
            "a lighthouse at dusk", seed=1234, steps=30, width=96, height=64, cfg=7
        ),
    }
    data = encode(noisy((96, 64)))
    stored = await store_generated(tmp_path, data, params, LIMITS)

    file_bytes = stored.path.read_bytes()
    assert stored.sha256 == hashlib.sha256(file_bytes).hexdigest()
    assert stored.path == tmp_path / "images" / stored.sha256[:2] / f"{stored.sha256}.png"
    assert (stored.width, stored.height, stored.size_bytes) == (96, 64, len(file_bytes))
    assert await read_png_text(stored.path) == params

    before = stored.path.stat().st_mtime_ns
    again = await store_generated(tmp_path, data, params, LIMITS)
    assert again == stored
    assert stored.path.stat().st_mtime_ns == before  # not rewritten
    files = [p for p in (tmp_path / "images").rglob("*") if p.is_file()]
    assert files == [stored.path]  # no duplicate, no leftover tmp file


async def test_store_generated_other_params_other_address(tmp_path: Path) -> None:
    data = encode(solid())
    a = await store_generated(tmp_path, data, {"seed": "1"}, LIMITS)
    b = await store_generated(tmp_path, data, {"seed": "2"}, LIMITS)
    assert a.path != b.path and a.path.exists() and b.path.exists()


@pytest.mark.parametrize("data", [b"", b"<html>oops</html>", encode(solid(), "GIF")])
async def test_store_generated_garbage_is_a_provider_fault(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(BadProviderImage) as info:
        await store_generated(tmp_path, data, {}, LIMITS)
    assert isinstance(info.value, ProviderError) and isinstance(info.value, ValueError)
    assert not (tmp_path / "images").exists()


def test_a1111_parameters_format() -> None:
    text = a1111_parameters(
        "a cat",
        negative_prompt="blurry",
        steps=30,
        sampler="Euler a",
        cfg=7.5,
        seed=42,
        width=1024,
        height=768,
        model="sdxl",
    )
    assert text == (
        "a cat\nNegative prompt: blurry\n"
        "Steps: 30, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 1024x768, Model: sdxl"
    )


# ------------------------------------------------------------------------------ resize_for_init
async def test_resize_for_init_covers_and_centre_crops() -> None:
    # 300x100 in thirds: red | green | blue. Covering 128x128 keeps only the green middle.
    src = Image.new("RGB", (300, 100), (255, 0, 0))
    src.paste((0, 255, 0), (100, 0, 200, 100))
    src.paste((0, 0, 255), (200, 0, 300, 100))
    im = decoded(await resize_for_init(encode(src), 128, 128))
    assert im.size == (128, 128)
    for xy in [(5, 5), (64, 64), (122, 122)]:
        r, g, b = im.getpixel(xy)  # type: ignore[misc]
        assert g > 200 and r < 40 and b < 40, xy


# ---------------------------------------------------------------------------------------- grid
async def write_images(tmp_path: Path, n: int, size: tuple[int, int], *, noise: bool) -> list[Path]:
    paths = []
    for i in range(n):
        img = noisy(size, i) if noise else solid(size, (255, 255, 255))
        p = tmp_path / f"src{i}.png"
        p.write_bytes(encode_png_sync(img, 1))
        paths.append(p)
    return paths


@pytest.mark.parametrize("n", range(1, 11))
async def test_grid_layout_dimensions(tmp_path: Path, n: int) -> None:
    paths = await write_images(tmp_path, n, (128, 96), noise=False)
    stored = await make_grid(tmp_path, paths, LIMITS)
    cols, rows = GRID_LAYOUTS[n]
    gap = 4 if n > 1 else 0
    expected = (cols * 128 + (cols - 1) * gap, rows * 96 + (rows - 1) * gap)
    assert (stored.width, stored.height) == expected
    im = decoded(stored.path.read_bytes())
    assert im.size == expected and im.format == "JPEG"
    assert stored.path.suffix == ".jpg"
    assert stored.sha256 == hashlib.sha256(stored.path.read_bytes()).hexdigest()


def test_grid_layouts_table() -> None:
    assert [grid_layout(n) for n in range(1, 11)] == [
        (1, 1),
        (2, 1),
        (3, 1),
        (2, 2),
        (3, 2),
        (3, 2),
        (4, 2),
        (4, 2),
        (3, 3),
        (5, 2),
    ]
    for bad in (0, 11):
        with pytest.raises(ValueError):
            grid_layout(bad)


async def test_grid_tiles_carry_number_badges(tmp_path: Path) -> None:
    paths = await write_images(tmp_path, 2, (256, 256), noise=False)  # plain white
    stored = await make_grid(tmp_path, paths, LIMITS)
    im = decoded(stored.path.read_bytes()).convert("L")
    # The badge is a dark box in each tile's top-left corner; the rest stays white.
    for x0 in (0, 256 + 4):
        corner = im.crop((x0 + 6, 6, x0 + 20, 20))
        assert ImageStat.Stat(corner).mean[0] < 160
        assert im.getpixel((x0 + 128, 128)) > 245  # type: ignore[operator]


async def test_big_grid_scaled_to_max_side(tmp_path: Path) -> None:
    paths = await write_images(tmp_path, 4, (1024, 1024), noise=False)
    stored = await make_grid(tmp_path, paths, LIMITS)
    assert max(stored.width, stored.height) <= LIMITS.preview_max_side
    assert abs(stored.width - stored.height) <= 2


async def test_grid_of_ten_noisy_images_fits_the_byte_limit(tmp_path: Path) -> None:
    paths = await write_images(tmp_path, 10, (1024, 1024), noise=True)
    stored = await make_grid(tmp_path, paths, LIMITS)
    assert stored.size_bytes == stored.path.stat().st_size <= LIMITS.preview_max_bytes
    assert max(stored.width, stored.height) <= LIMITS.preview_max_side
    # A much tighter budget forces quality steps, WEBP and then a smaller picture.
    tight = ImageLimits(preview_max_bytes=60_000)
    small = await make_grid(tmp_path, paths, tight)
    assert small.size_bytes == small.path.stat().st_size <= 60_000
    assert small.width < stored.width
    assert decoded(small.path.read_bytes()).size == (small.width, small.height)


async def test_grid_same_inputs_same_file(tmp_path: Path) -> None:
    paths = await write_images(tmp_path, 3, (64, 64), noise=True)
    a = await make_grid(tmp_path, paths, LIMITS)
    b = await make_grid(tmp_path, paths, LIMITS)
    assert a == b
    assert len(list((tmp_path / "images").rglob("*.jpg"))) == 1


async def test_heavy_work_does_not_block_the_loop(tmp_path: Path) -> None:
    paths = await write_images(tmp_path, 10, (1024, 1024), noise=True)
    big_input = encode(noisy((2048, 2048)), "PNG", compress_level=1)
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    started = time.perf_counter()
    await make_grid(tmp_path, paths, LIMITS)
    await normalize_input(big_input, LIMITS)
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    # The loop kept ticking throughout (the work ran in a thread) and never stalled.
    # (Run inline, make_grid alone stalls the loop for well over half a second; the bound
    # leaves room for GIL contention on a busy two-core CI machine.)
    assert len(gaps) >= elapsed / 0.25
    assert max(gaps) < 0.25, f"event loop stalled for {max(gaps) * 1000:.0f} ms"
