"""Running an :class:`~bot.providers.edit_types.Edit`: the provider's own upscaler or outpainter
where it declares one (``Capabilities.upscale == "model"``, ``Capabilities.outpaint``), else a
Pillow resize for an upscale, honestly labelled as such by the verb that asked for it.

A provider that offers an edit implements :class:`Editor` (``upscale`` and/or ``outpaint``,
taking the same request ``generate`` takes, with ``req.edit`` set and ``req.init_image`` the
picked image). The canvas helpers here (a padded picture and its mask) are shared by the
providers that outpaint by img2img (the webui) and by the offline renderer. Pillow runs in a
thread: never on the event loop.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import replace
from typing import Protocol, runtime_checkable

from PIL import Image, ImageFilter

from bot.providers.base import (
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    NotSupported,
    ProgressCallback,
    Provider,
)
from bot.providers.edit_types import Edit

RESIZED_NOTE = "Resized, not generated: {label} has no upscaler, so this is a plain resize."
RESIZE_MODEL = "pillow-lanczos"
MAX_RESIZE_SIDE = 4096


@runtime_checkable
class Upscaler(Protocol):
    async def upscale(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult: ...


@runtime_checkable
class Outpainter(Protocol):
    async def outpaint(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult: ...


async def perform(
    provider: Provider, req: GenerationRequest, progress: ProgressCallback | None = None
) -> GenerationResult:
    """Run ``req.edit`` at ``provider`` (its own method), or resize for an upscale it lacks."""
    edit = req.edit
    assert edit is not None and req.init_image is not None
    caps = provider.capabilities
    if edit.op == "upscale":
        if caps.upscale == "model" and isinstance(provider, Upscaler):
            result = await provider.upscale(req, progress)
            # An upscaler with a fixed factor (Stability's fast one is 4x) is brought to the
            # configured one: a 4096 px PNG would not fit a chat upload.
            target = edit.out_size(req.width, req.height)
            return replace(
                result,
                images=tuple(
                    [replace(img, data=await fit_within(img.data, target)) for img in result.images]
                ),
            )
        data = await resize(req.init_image, edit.scale)
        return GenerationResult((GeneratedImage(data, seed=None),), model=RESIZE_MODEL)
    if caps.outpaint and isinstance(provider, Outpainter):
        return await provider.outpaint(req, progress)
    raise NotSupported(f"{provider.label} cannot extend an image (no outpainting).")


def _open(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return img.convert("RGB")


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=1)  # quick: the core re-encodes for storage
    return out.getvalue()


def resize_sync(data: bytes, scale: float) -> bytes:
    img = _open(data)
    w, h = round(img.width * scale), round(img.height * scale)
    if max(w, h) > MAX_RESIZE_SIDE:
        shrink = MAX_RESIZE_SIDE / max(w, h)
        w, h = round(w * shrink), round(h * shrink)
    return _png(img.resize((max(1, w), max(1, h)), Image.Resampling.LANCZOS))


async def resize(data: bytes, scale: float) -> bytes:
    return await asyncio.to_thread(resize_sync, data, scale)


def fit_within_sync(data: bytes, size: tuple[int, int]) -> bytes:
    """``data`` unchanged when it is no larger than ``size``, else shrunk to fit it."""
    with Image.open(io.BytesIO(data)) as probe:
        if probe.width <= size[0] and probe.height <= size[1]:
            return data
    img = _open(data)
    img.thumbnail(size, Image.Resampling.LANCZOS)
    return _png(img)


async def fit_within(data: bytes, size: tuple[int, int]) -> bytes:
    return await asyncio.to_thread(fit_within_sync, data, size)


def padded_sync(data: bytes, edit: Edit) -> tuple[bytes, bytes]:
    """(canvas, mask) for outpainting by img2img: the image on a canvas grown by the edit's
    padding, the new area prefilled with a blurred stretch of the image's own edges (so the
    model starts from the right colours), and a mask that is white where it may paint, with a
    few pixels of overlap into the image so the seam is repainted too."""
    img = _open(data)
    w, h = edit.out_size(img.width, img.height)
    canvas = img.resize((w, h), Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(24))
    canvas.paste(img, (edit.left, edit.top))
    mask = Image.new("L", (w, h), 255)
    overlap = 8
    keep = (
        edit.left + (overlap if edit.left else 0),
        edit.top + (overlap if edit.top else 0),
        edit.left + img.width - (overlap if edit.right else 0),
        edit.top + img.height - (overlap if edit.bottom else 0),
    )
    mask.paste(0, keep)
    return _png(canvas), _png(mask)


async def padded(data: bytes, edit: Edit) -> tuple[bytes, bytes]:
    return await asyncio.to_thread(padded_sync, data, edit)


def paste_sync(background: bytes, original: bytes, edit: Edit) -> bytes:
    """``original`` laid over ``background`` (already the grown size) at the edit's offset,
    feathered into it over the seam."""
    bg = _open(background)
    img = _open(original)
    w, h = edit.out_size(img.width, img.height)
    if bg.size != (w, h):
        bg = bg.resize((w, h), Image.Resampling.LANCZOS)
    feather = max(2, min(img.width, img.height) // 32)
    alpha = Image.new("L", img.size, 0)
    # Feathered only on the sides that grew: the others are the canvas' own edge.
    alpha.paste(
        255,
        (
            feather if edit.left else 0,
            feather if edit.top else 0,
            img.width - (feather if edit.right else 0),
            img.height - (feather if edit.bottom else 0),
        ),
    )
    alpha = alpha.filter(ImageFilter.GaussianBlur(feather / 2))
    bg.paste(img, (edit.left, edit.top), alpha)
    return _png(bg)


__all__ = [
    "RESIZED_NOTE",
    "RESIZE_MODEL",
    "Outpainter",
    "Upscaler",
    "padded",
    "padded_sync",
    "paste_sync",
    "perform",
    "resize",
    "resize_sync",
]
