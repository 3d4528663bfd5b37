"""PNG text chunks: the metadata a stored image carries (prompt, seed, the A1111 "parameters").

``_spliced_png`` swaps a provider PNG's ancillary chunks for ours without re-encoding the
pixels (encoding is the expensive part of storing an image); ``_png_info`` is the same text for
images Pillow encodes. Keys are ours, so a bad key is a bug (``ValueError``).
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path

from PIL import Image, PngImagePlugin


def _check_text_key(key: str) -> None:
    # PNG keywords: 1-79 Latin-1 characters. Keys are ours, so a bad one is a bug.
    if not 1 <= len(key) <= 79 or not all(32 <= ord(c) <= 255 for c in key):
        raise ValueError(f"invalid PNG text key {key!r}")


def _png_info(params: Mapping[str, str]) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    for key, value in params.items():
        _check_text_key(key)
        # add_text falls back to iTXt (UTF-8) when the value is not Latin-1 (emoji, CJK).
        info.add_text(key, str(value))
    return info


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# What a stored provider PNG keeps: the pixels and their transparency; every other ancillary
# chunk (text, EXIF, times) is dropped and our own text chunks are added.
_PNG_KEEP = frozenset({b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"})


def _png_chunk(ctype: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body))
        + ctype
        + body
        + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)
    )


def _png_text_chunk(key: str, value: str) -> bytes:
    k = key.encode("latin-1")
    try:
        return _png_chunk(b"tEXt", k + b"\0" + value.encode("latin-1"))
    except UnicodeEncodeError:  # emoji, CJK...: international text, UTF-8, uncompressed
        return _png_chunk(b"iTXt", k + b"\0\0\0\0\0" + value.encode("utf-8"))


def _spliced_png(data: bytes, params: Mapping[str, str]) -> bytes | None:
    """The provider's own PNG with its metadata swapped for ours, without re-encoding the
    pixels (encoding is the expensive part of storing an image). ``None`` when the file is not
    a plain PNG we can keep as it is (bad CRC, an ICC profile that needs converting...)."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    pos, kept = 8, []
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        crc = data[pos + 8 + length : pos + 12 + length]
        if (
            len(body) != length
            or len(crc) != 4
            or (zlib.crc32(ctype + body) & 0xFFFFFFFF) != struct.unpack(">I", crc)[0]
        ):
            return None
        if ctype in (b"iCCP", b"acTL"):
            return None  # colour conversion or animation: take the re-encoding path
        if ctype in _PNG_KEEP:
            kept.append(data[pos : pos + 12 + length])
        pos += 12 + length
        if ctype == b"IEND":
            break
    else:
        return None
    if not kept or kept[0][4:8] != b"IHDR" or kept[-1][4:8] != b"IEND":
        return None
    for key in params:
        _check_text_key(key)
    text = b"".join(_png_text_chunk(k, str(v)) for k, v in params.items())
    return _PNG_SIGNATURE + kept[0] + text + b"".join(kept[1:])


def a1111_parameters(
    prompt: str,
    *,
    negative_prompt: str | None = None,
    steps: int | None = None,
    sampler: str | None = None,
    cfg: float | None = None,
    seed: int | None = None,
    width: int | None = None,
    height: int | None = None,
    model: str | None = None,
) -> str:
    """The ``parameters`` text that AUTOMATIC1111-compatible tools read back from a PNG."""
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    fields: list[str] = []
    if steps is not None:
        fields.append(f"Steps: {steps}")
    if sampler:
        fields.append(f"Sampler: {sampler}")
    if cfg is not None:
        fields.append(f"CFG scale: {cfg:g}")
    if seed is not None:
        fields.append(f"Seed: {seed}")
    if width and height:
        fields.append(f"Size: {width}x{height}")
    if model:
        fields.append(f"Model: {model}")
    if fields:
        lines.append(", ".join(fields))
    return "\n".join(lines)


def _read_png_text_sync(path: Path) -> dict[str, str]:
    with Image.open(path, formats=["PNG"]) as im:
        assert isinstance(im, PngImagePlugin.PngImageFile)
        # .text also reads chunks after IDAT (it loads the image once if needed).
        return {str(k): str(v) for k, v in im.text.items()}


async def read_png_text(path: Path) -> dict[str, str]:
    """The tEXt/zTXt/iTXt chunks of a stored PNG."""
    return await asyncio.to_thread(_read_png_text_sync, path)
