"""Storing a job's provider output: pixels kept as sent, our metadata in, theirs out."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from bot.images import BadProviderImage, ImageLimits, store_job_images

LIMITS = ImageLimits()


def png(color: tuple[int, int, int], *, text: dict[str, str] | None = None,
        icc: bytes | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    for k, v in (text or {}).items():
        info.add_text(k, v)
    buf = io.BytesIO()
    kwargs = {"icc_profile": icc} if icc else {}
    Image.new("RGB", (96, 64), color).save(buf, "PNG", pnginfo=info, **kwargs)
    return buf.getvalue()


def idat(png_bytes: bytes) -> bytes:
    """Every IDAT chunk (length, type, data, CRC), in order."""
    out, pos = b"", 8
    while pos < len(png_bytes):
        (length,) = struct.unpack(">I", png_bytes[pos:pos + 4])
        if png_bytes[pos + 4:pos + 8] == b"IDAT":
            out += png_bytes[pos:pos + 12 + length]
        pos += 12 + length
    return out


async def test_provider_png_is_kept_with_our_text_and_without_theirs(tmp_path: Path) -> None:
    source = png((10, 120, 200), text={"parameters": "secret workflow of the provider"})
    files, grid = await store_job_images(
        tmp_path, [(source, {"prompt": "a café ☕ at night", "seed": "7"})], LIMITS)
    [stored] = files
    with Image.open(stored.path) as im:
        assert im.text == {"prompt": "a café ☕ at night", "seed": "7"}  # type: ignore[attr-defined]
        assert im.getpixel((5, 5)) == (10, 120, 200)
    # the compressed pixel data is byte-for-byte the provider's (no re-encode)
    assert idat(stored.path.read_bytes()) == idat(source)
    assert grid is not None and grid.path.suffix in (".jpg", ".webp")


async def test_png_with_icc_profile_is_converted_not_kept(tmp_path: Path) -> None:
    from PIL import ImageCms
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    files, _ = await store_job_images(tmp_path, [(png((1, 2, 3), icc=icc), {"seed": "1"})],
                                      LIMITS)
    with Image.open(files[0].path) as im:
        assert "icc_profile" not in im.info and im.text == {"seed": "1"}  # type: ignore[attr-defined]


async def test_damaged_provider_png_is_a_provider_fault(tmp_path: Path) -> None:
    good = png((0, 0, 0))
    with pytest.raises(BadProviderImage):
        await store_job_images(tmp_path, [(good[: len(good) // 2], {})], LIMITS)
    corrupt = bytearray(good)
    corrupt[-20] ^= 0xFF
    with pytest.raises(BadProviderImage):
        await store_job_images(tmp_path, [(bytes(corrupt), {})], LIMITS)


async def test_jpeg_output_is_stored_as_png(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (80, 80), (200, 10, 10)).save(buf, "JPEG")
    files, grid = await store_job_images(tmp_path, [(buf.getvalue(), {"seed": "3"}),
                                                    (png((9, 9, 9)), {"seed": "4"})], LIMITS)
    assert [f.path.suffix for f in files] == [".png", ".png"]
    assert grid is not None
