"""The Stability fake's image-verb routes: v2beta upscale (fast, conservative, creative with
its ``/v2beta/results/{id}`` poll) and ``edit/outpaint``, as Stability documents them today.

- ``upscale/fast``: ``image`` and ``output_format`` only; the input 32..1536 px a side and
  1024..1,048,576 pixels; the answer 4x the input.
- ``upscale/conservative``: ``prompt`` required, ``creativity`` 0.2..0.5; synchronous.
- ``upscale/creative``: ``prompt`` required, ``creativity`` 0.1..0.5, the input at most
  1,048,576 pixels; answers ``{"id"}``, then ``GET /v2beta/results/{id}`` is 202
  ``{id, status: "in-progress"}`` until ready, 200 with the image, 404 for an unknown id or
  another key. (The older ``upscale/creative/result/{id}`` route is not served.)
- ``edit/outpaint``: ``left``/``right``/``up``/``down`` 0..2000 each, at least one non-zero,
  ``prompt`` optional, ``creativity`` 0..1, ``seed``, ``output_format``, ``style_preset``.
"""

from __future__ import annotations

import base64
import io
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web
from PIL import Image

from tests.fakes import RecordedRequest, make_png, require

if TYPE_CHECKING:
    from tests.fakes.stability import StabilityFake

UPSCALE_FIELDS = {
    "fast": {"image", "output_format"},
    "conservative": {
        "image",
        "prompt",
        "negative_prompt",
        "seed",
        "creativity",
        "output_format",
        "style_preset",
    },
}
UPSCALE_FIELDS["creative"] = UPSCALE_FIELDS["conservative"]
OUTPAINT_FIELDS = {
    "image",
    "left",
    "right",
    "up",
    "down",
    "prompt",
    "creativity",
    "seed",
    "output_format",
    "style_preset",
}


def _size(data: bytes) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:
        require(False, "image: could not be decoded")
        raise


class EditRoutes:
    """Mixed into :class:`tests.fakes.stability.StabilityFake`."""

    def _edit_checks(self: StabilityFake, rec: RecordedRequest, allowed: set[str]) -> Any:
        require(
            rec.content_type == "multipart/form-data", "content-type: must be multipart/form-data"
        )
        for key in rec.form_keys:
            require(key in allowed, f"{key}: unknown field")
        require("image" in rec.files, "image: is required")
        f = rec.form
        if "seed" in f:
            require(0 <= int(f["seed"]) <= 4294967294, "seed: must be in range 0..4294967294")
        require(f.get("output_format", "png") in {"png", "jpeg", "webp"}, "output_format")
        return _size(rec.files["image"][1])

    def _image_answer(self: StabilityFake, rec: RecordedRequest, png: bytes, seed: int) -> Any:
        finish = "CONTENT_FILTERED" if 0 in self.filtered else "SUCCESS"
        accept = rec.headers.get("Accept", "image/*")
        rid = {"x-request-id": uuid.uuid4().hex}
        if accept == "application/json":
            return web.json_response(
                {"image": base64.b64encode(png).decode(), "finish_reason": finish, "seed": seed},
                headers=rid,
            )
        require(accept == "image/*", "accept: must be image/* or application/json")
        headers = {"finish-reason": finish, "seed": str(seed), **rid}
        return web.Response(body=png, content_type="image/png", headers=headers)

    async def v2_upscale(self: StabilityFake, request: web.Request, rec: RecordedRequest) -> Any:
        from tests.fakes.stability import v2_error

        kind = request.match_info["kind"]
        if kind not in UPSCALE_FIELDS:
            return v2_error(404, "not_found", [f"unknown route upscale/{kind}"])
        if not self._auth(rec):
            return v2_error(401, "unauthorized", ["authorization: invalid or missing key"])
        w, h = self._edit_checks(rec, UPSCALE_FIELDS[kind])
        f = rec.form
        if kind == "fast":
            require(min(w, h) >= 32 and max(w, h) <= 1536, "image: sides must be 32..1536 px")
            require(1024 <= w * h <= 1_048_576, "image: must be 1024..1048576 pixels")
            out = (w * 4, h * 4)
        else:
            require(0 < len(f.get("prompt", "")) <= 10000, "prompt: is required")
            lo = 0.2 if kind == "conservative" else 0.1
            if "creativity" in f:
                require(lo <= float(f["creativity"]) <= 0.5, f"creativity: must be {lo}..0.5")
            require(min(w, h) >= 64, "image: sides must be at least 64 px")
            if kind == "creative":
                require(w * h <= 1_048_576, "image: must be at most 1048576 pixels")
            out = (w * 4, h * 4)
        seed = int(f.get("seed", 0)) or next(self._random_seeds)
        png = make_png(f"upscale:{kind}:{seed}", *out)
        if kind != "creative":
            return self._image_answer(rec, png, seed)
        job = uuid.uuid4().hex + uuid.uuid4().hex  # a 64-character id, as Stability's
        key = rec.headers.get("Authorization", "")
        self.pending[job] = (key, self.polls_before_ready, png, seed)
        return web.json_response({"id": job})

    async def v2_result(self: StabilityFake, request: web.Request, rec: RecordedRequest) -> Any:
        from tests.fakes.stability import v2_error

        job = request.match_info["id"]
        found = self.pending.get(job)
        if found is None or found[0] != rec.headers.get("Authorization", ""):
            return v2_error(404, "not_found", [f"id: {job} was not found"])
        key, left, png, seed = found
        if left > 0:
            self.pending[job] = (key, left - 1, png, seed)
            return web.json_response({"id": job, "status": "in-progress"}, status=202)
        return self._image_answer(rec, png, seed)

    async def v2_outpaint(self: StabilityFake, request: web.Request, rec: RecordedRequest) -> Any:
        from tests.fakes.stability import STYLES, v2_error

        if not self._auth(rec):
            return v2_error(401, "unauthorized", ["authorization: invalid or missing key"])
        w, h = self._edit_checks(rec, OUTPAINT_FIELDS)
        f = rec.form
        pads = {side: int(f.get(side, 0)) for side in ("left", "right", "up", "down")}
        require(all(0 <= v <= 2000 for v in pads.values()), "left/right/up/down: 0..2000")
        require(any(pads.values()), "left/right/up/down: at least one must be greater than 0")
        require(len(f.get("prompt", "")) <= 10000, "prompt: too long")
        if "creativity" in f:
            require(0 <= float(f["creativity"]) <= 1, "creativity: must be in range 0..1")
        if "style_preset" in f:
            require(f["style_preset"] in STYLES, "style_preset: invalid value")
        seed = int(f.get("seed", 0)) or next(self._random_seeds)
        out = (w + pads["left"] + pads["right"], h + pads["up"] + pads["down"])
        return self._image_answer(rec, make_png(f"outpaint:{seed}", *out), seed)
