"""The webui's image verbs: Upscale through ``/sdapi/v1/extra-single-image`` with the configured
upscaler, Zoom out and Pan as img2img on a padded canvas with a mask.

- Upscale: ``{image, resize_mode: 0, upscaling_resize, upscaler_1}`` -> ``{html_info, image}``.
  ``upscaler_1`` is a name from ``GET /sdapi/v1/upscalers`` (``R-ESRGAN 4x+``, ``ESRGAN_4x``,
  ``Lanczos``, ...), set as ``[providers.automatic1111] upscaler``; empty: no upscaler (the
  core then offers a labelled resize, or nothing).
- Outpaint: the picked image on the grown canvas, the new area prefilled from its own edges,
  and a mask that is white where the model may paint (``inpainting_fill: 1``, "original": it
  starts from the prefilled colours), at the canvas' size.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from bot.providers import edits
from bot.providers.base import (
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    ProviderUnavailable,
)
from bot.providers.http import HttpClient, b64decode_many

SETTING_KEYS = frozenset({"upscaler", "outpaint_strength"})
OUTPAINT_STRENGTH = 0.85
MASK_BLUR = 8


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _strip(s: str) -> str:
    return s.split(",", 1)[1] if s.startswith("data:") and "," in s else s


async def upscale(http: HttpClient, req: GenerationRequest, upscaler: str) -> GenerationResult:
    edit, image = req.edit, req.init_image
    assert edit is not None and image is not None
    body = {
        "image": _b64(image),
        "resize_mode": 0,  # scale by upscaling_resize
        "upscaling_resize": edit.scale,
        "upscaler_1": upscaler,
        "show_extras_results": True,
    }
    resp = await http.request("POST", "/sdapi/v1/extra-single-image", json_body=body)
    data = await resp.json()
    if not isinstance(data, dict) or not isinstance(data.get("image"), str) or not data["image"]:
        raise ProviderUnavailable("webui extras answer has no image")
    [blob] = await b64decode_many([_strip(data["image"])])
    return GenerationResult((GeneratedImage(blob, seed=None),), model=upscaler)


async def outpaint(
    http: HttpClient,
    req: GenerationRequest,
    extra: dict[str, Any],
    strength: float = OUTPAINT_STRENGTH,
) -> GenerationResult:
    """``extra``: what the provider adds to every call (sampler, scheduler, checkpoint)."""
    edit, image = req.edit, req.init_image
    assert edit is not None and image is not None
    canvas, mask = await edits.padded(image, edit)
    width, height = edit.out_size(req.width, req.height)
    body: dict[str, Any] = {
        "prompt": req.prompt,
        "negative_prompt": req.negative_prompt or "",
        "seed": req.seed,
        "batch_size": 1,
        "n_iter": 1,
        "width": width,
        "height": height,
        "init_images": [_b64(canvas)],
        "mask": _b64(mask),
        "mask_blur": MASK_BLUR,
        "inpainting_fill": 1,
        "inpaint_full_res": False,
        "inpainting_mask_invert": 0,
        "denoising_strength": strength,
        "send_images": True,
        "save_images": False,
        **extra,
    }
    if req.steps is not None:
        body["steps"] = req.steps
    if req.cfg is not None:
        body["cfg_scale"] = req.cfg
    resp = await http.request("POST", "/sdapi/v1/img2img", json_body=body, idempotent=False)
    data = await resp.json()
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not images or not isinstance(images[0], str):
        raise ProviderUnavailable("webui answer has no images")
    info: Any = data.get("info")
    if isinstance(info, str):
        try:
            info = json.loads(info)
        except ValueError:
            info = {}
    first = info.get("index_of_first_image", 0) if isinstance(info, dict) else 0
    first = first if isinstance(first, int) and 0 <= first < len(images) else 0
    [blob] = await b64decode_many([_strip(images[first])])
    seeds = info.get("all_seeds") if isinstance(info, dict) else None
    seed = seeds[0] if isinstance(seeds, list) and seeds and isinstance(seeds[0], int) else req.seed
    model = info.get("sd_model_name") if isinstance(info, dict) else None
    return GenerationResult((GeneratedImage(blob, seed=seed),), model=str(model) if model else None)


__all__ = ["OUTPAINT_STRENGTH", "SETTING_KEYS", "outpaint", "upscale"]
