"""A fake Stability AI REST API: v1 generation/engines/balance and v2beta stable-image.

Bodies follow Stability's OpenAPI: v1 success ``{"artifacts": [{base64, seed, finishReason}]}``,
v1 errors ``{id, name, message}``; v2beta success raw image bytes with ``finish-reason`` and
``seed`` headers (``Accept: image/*``) or ``{image, finish_reason, seed}`` (JSON), v2beta errors
``{id, name, errors: [...]}``.

Models as Stability serves them today: sd3.5-large, sd3.5-large-turbo, sd3.5-medium and
sd3.5-flash on ``generate/sd3`` (the SD 3.0 models were removed: Stability-AI/stability-sdk
f4ce04c), ``style_preset`` on every generate route, no negative prompt on sd3.5-flash.
"""

from __future__ import annotations

import base64
import itertools
import uuid
from typing import Any

from aiohttp import web

from tests.fakes import ContractViolation, FakeServer, Handler, RecordedRequest, make_png, require
from tests.fakes.stability_edits import EditRoutes

SDXL_SIZES = {
    (1024, 1024),
    (1152, 896),
    (896, 1152),
    (1216, 832),
    (832, 1216),
    (1344, 768),
    (768, 1344),
    (1536, 640),
    (640, 1536),
}
SAMPLERS = {
    "DDIM",
    "DDPM",
    "K_DPMPP_2M",
    "K_DPMPP_2S_ANCESTRAL",
    "K_DPM_2",
    "K_DPM_2_ANCESTRAL",
    "K_EULER",
    "K_EULER_ANCESTRAL",
    "K_HEUN",
    "K_LMS",
}
STYLES = {
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
}
CLIP = {"FAST_BLUE", "FAST_GREEN", "NONE", "SIMPLE", "SLOW", "SLOWER", "SLOWEST"}
ASPECTS = {"21:9", "16:9", "3:2", "5:4", "1:1", "4:5", "2:3", "9:16", "9:21"}
SD3_MODELS = {"sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium", "sd3.5-flash"}
ENGINES = [
    {
        "id": "stable-diffusion-xl-1024-v1-0",
        "name": "SDXL 1.0",
        "description": "SDXL",
        "type": "PICTURE",
    },
    {"id": "stable-diffusion-v1-6", "name": "SD 1.6", "description": "SD 1.6", "type": "PICTURE"},
    {"id": "esrgan-v1-x2plus", "name": "ESRGAN", "description": "upscaler", "type": "PICTURE"},
]


def v1_error(status: int, name: str, message: str) -> web.Response:
    # The v1 spec's Error lists status among the required fields.
    return web.json_response(
        {"id": uuid.uuid4().hex, "name": name, "message": message, "status": status}, status=status
    )


def v2_error(status: int, name: str, errors: list[str]) -> web.Response:
    return web.json_response(
        {"id": uuid.uuid4().hex, "name": name, "errors": errors}, status=status
    )


class StabilityFake(EditRoutes, FakeServer):
    def __init__(self, api_key: str = "sk-test-stability-key") -> None:
        super().__init__()
        self.api_key = api_key
        self.filtered: set[int] = set()  # artifact indexes answered CONTENT_FILTERED
        self.credits = 42.5
        self._random_seeds = itertools.count(900_000_001)
        self.sd3_models = set(SD3_MODELS)
        self.engine_list = [dict(e) for e in ENGINES]
        self.engines_list_gone = False  # True: /v1/engines/list answers 404
        # Creative upscales: id -> (the key that started it, polls still answered 202, image)
        self.pending: dict[str, tuple[str, int, bytes, int]] = {}
        self.polls_before_ready = 2

    def retire_engine(self, engine_id: str) -> None:
        self.engine_list = [e for e in self.engine_list if e["id"] != engine_id]

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("GET", "/v1/engines/list", self.engines),
            ("GET", "/v1/user/balance", self.balance),
            ("POST", "/v1/generation/{engine}/text-to-image", self.v1_text_to_image),
            ("POST", "/v1/generation/{engine}/image-to-image", self.v1_image_to_image),
            ("POST", "/v2beta/stable-image/generate/{kind}", self.v2_generate),
            ("POST", "/v2beta/stable-image/upscale/{kind}", self.v2_upscale),
            ("POST", "/v2beta/stable-image/edit/outpaint", self.v2_outpaint),
            ("GET", "/v2beta/results/{id}", self.v2_result),
        ]

    def violation_response(
        self, request: web.Request, exc: ContractViolation
    ) -> web.StreamResponse:
        if request.path.startswith("/v2beta"):
            return v2_error(exc.status, exc.name, [exc.message])
        return v1_error(exc.status, exc.name, exc.message)

    def _auth(self, rec: RecordedRequest) -> bool:
        got = rec.headers.get("Authorization", "")
        return got in (f"Bearer {self.api_key}", self.api_key)

    # ---------------------------------------------------------------------------- v1
    async def engines(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        if self.engines_list_gone:
            return v1_error(404, "not_found", "The requested resource was not found.")
        if not self._auth(rec):
            return v1_error(401, "unauthorized", "missing authorization header")
        return web.json_response(self.engine_list)

    async def balance(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        if not self._auth(rec):
            return v1_error(401, "unauthorized", "missing authorization header")
        return web.json_response({"credits": self.credits})

    def _engine(self, request: web.Request) -> str | None:
        engine = request.match_info["engine"]
        return engine if engine in {e["id"] for e in self.engine_list} else None

    def _check_common(self, p: dict[str, Any]) -> None:
        samples = int(p.get("samples", 1))
        require(1 <= samples <= 10, "samples: must be in range 1..10", name="invalid_samples")
        if "steps" in p:
            require(10 <= int(p["steps"]) <= 50, "steps: must be in range 10..50")
        if "cfg_scale" in p:
            require(0 <= float(p["cfg_scale"]) <= 35, "cfg_scale: must be in range 0..35")
        if "seed" in p:
            require(0 <= int(p["seed"]) <= 4294967295, "seed: must be in range 0..4294967295")
        if "sampler" in p:
            require(p["sampler"] in SAMPLERS, f"sampler: unknown value {p['sampler']}")
        if "style_preset" in p:
            require(p["style_preset"] in STYLES, "style_preset: unknown value")
        if "clip_guidance_preset" in p:
            require(p["clip_guidance_preset"] in CLIP, "clip_guidance_preset: unknown value")

    def _artifacts(self, p: dict[str, Any]) -> web.Response:
        samples = int(p.get("samples", 1))
        seed = int(p.get("seed", 0)) or next(self._random_seeds)
        arts = []
        for i in range(samples):
            s = (seed + i) % 4294967296
            arts.append(
                {
                    "base64": base64.b64encode(make_png(f"v1:{s}")).decode(),
                    "seed": s,
                    "finishReason": "CONTENT_FILTERED" if i in self.filtered else "SUCCESS",
                }
            )
        return web.json_response({"artifacts": arts})

    async def v1_text_to_image(
        self, request: web.Request, rec: RecordedRequest
    ) -> web.StreamResponse:
        if not self._auth(rec):
            return v1_error(401, "unauthorized", "missing authorization header")
        engine = self._engine(request)
        if engine is None:
            return v1_error(
                404,
                "not_found",
                f"The specified engine (ID {request.match_info['engine']}) was not found.",
            )
        require(rec.content_type == "application/json", "content-type must be application/json")
        require(
            rec.headers.get("Accept", "application/json") == "application/json"
            or int((rec.json or {}).get("samples", 1)) == 1,
            "samples > 1 needs Accept: application/json",
            name="invalid_samples",
        )
        p = rec.json
        require(isinstance(p, dict), "body must be a JSON object")
        assert isinstance(p, dict)
        tps = p.get("text_prompts")
        require(isinstance(tps, list) and len(tps) >= 1, "text_prompts: is required")
        for tp in tps:
            require(
                isinstance(tp, dict)
                and isinstance(tp.get("text"), str)
                and 0 < len(tp["text"]) <= 2000,
                "text_prompts: text is required",
            )
            require(isinstance(tp.get("weight", 1), int | float), "text_prompts: weight")
        w, h = int(p.get("width", 1024)), int(p.get("height", 1024))
        if "xl-1024" in engine:
            require(
                (w, h) in SDXL_SIZES,
                "for SDXL v1.0 width and height must be one of the allowed dimensions",
                name="invalid_sdxl_v1_dimensions",
            )
        else:
            require(
                w % 64 == 0 and h % 64 == 0 and 320 <= w <= 1536 and 320 <= h <= 1536,
                "height and width must be multiples of 64 in 320..1536",
                name="invalid_height_or_width",
            )
        self._check_common(p)
        return self._artifacts(p)

    async def v1_image_to_image(
        self, request: web.Request, rec: RecordedRequest
    ) -> web.StreamResponse:
        if not self._auth(rec):
            return v1_error(401, "unauthorized", "missing authorization header")
        if self._engine(request) is None:
            return v1_error(404, "not_found", "The specified engine was not found.")
        require(rec.content_type == "multipart/form-data", "content-type must be multipart")
        require("init_image" in rec.files, "init_image: is required")
        require(
            rec.files["init_image"][1][:8] == b"\x89PNG\r\n\x1a\n",
            "init_image: invalid mime type",
            name="invalid_mime_type",
        )
        require("text_prompts[0][text]" in rec.form, "text_prompts: is required")
        for key in rec.form:
            require(
                key
                in {
                    "init_image_mode",
                    "image_strength",
                    "step_schedule_start",
                    "step_schedule_end",
                    "cfg_scale",
                    "clip_guidance_preset",
                    "sampler",
                    "samples",
                    "seed",
                    "steps",
                    "style_preset",
                }
                or key.startswith("text_prompts["),
                f"{key}: unknown field",
            )
        mode = rec.form.get("init_image_mode", "IMAGE_STRENGTH")
        require(mode in {"IMAGE_STRENGTH", "STEP_SCHEDULE"}, "init_image_mode: invalid")
        if "image_strength" in rec.form:
            require(0 <= float(rec.form["image_strength"]) <= 1, "image_strength: 0..1")
        p: dict[str, Any] = {k: v for k, v in rec.form.items() if not k.startswith("text_")}
        self._check_common(p)
        return self._artifacts(p)

    # ------------------------------------------------------------------------ v2beta
    async def v2_generate(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        kind = request.match_info["kind"]
        if kind not in {"core", "ultra", "sd3"}:
            return v2_error(404, "not_found", [f"unknown route {kind}"])
        if not self._auth(rec):
            return v2_error(401, "unauthorized", ["authorization: invalid or missing key"])
        require(
            rec.content_type == "multipart/form-data", "content-type: must be multipart/form-data"
        )
        f = rec.form
        require(0 < len(f.get("prompt", "")) <= 10000, "prompt: is required")
        require(len(f.get("negative_prompt", "")) <= 10000, "negative_prompt: too long")
        allowed = {
            "prompt",
            "negative_prompt",
            "aspect_ratio",
            "seed",
            "output_format",
            "image",
            "strength",
            "style_preset",
        }
        if kind == "sd3":
            allowed |= {"mode", "model", "cfg_scale"}
        for key in rec.form_keys:
            require(key in allowed, f"{key}: unknown field for {kind}")
        if "seed" in f:
            require(0 <= int(f["seed"]) <= 4294967294, "seed: must be in range 0..4294967294")
        if "aspect_ratio" in f:
            require(f["aspect_ratio"] in ASPECTS, "aspect_ratio: invalid value")
        if "style_preset" in f:
            require(f["style_preset"] in STYLES, "style_preset: invalid value")
        require(f.get("output_format", "png") in {"png", "jpeg", "webp"}, "output_format")
        img2img = "image" in rec.files
        if kind == "core":
            require(not img2img, "image: not accepted by core")
        if kind == "sd3":
            model = f.get("model", "sd3.5-large")
            require(
                model in self.sd3_models,
                f"model: must be one of {', '.join(sorted(self.sd3_models))}",
            )
            require(
                not (model == "sd3.5-flash" and "negative_prompt" in f),
                "negative_prompt: not supported by sd3.5-flash",
            )
            mode = f.get("mode", "text-to-image")
            require(mode in {"text-to-image", "image-to-image"}, "mode: invalid value")
            require(
                (mode == "image-to-image") == img2img,
                "image: required exactly when mode is image-to-image",
            )
            if "cfg_scale" in f:
                require(1 <= float(f["cfg_scale"]) <= 10, "cfg_scale: must be in range 1..10")
        if img2img:
            require("strength" in f, "strength: is required when image is given")
            require(0 <= float(f["strength"]) <= 1, "strength: must be in range 0..1")
            require("aspect_ratio" not in f, "aspect_ratio: not allowed with an image")
        seed = int(f.get("seed", 0)) or next(self._random_seeds)
        finish = "CONTENT_FILTERED" if 0 in self.filtered else "SUCCESS"
        png = make_png(f"v2:{kind}:{seed}")
        accept = rec.headers.get("Accept", "image/*")
        if accept == "application/json":
            return web.json_response(
                {"image": base64.b64encode(png).decode(), "finish_reason": finish, "seed": seed},
                content_type="application/json",
                headers={"x-request-id": uuid.uuid4().hex},
            )
        require(accept == "image/*", "accept: must be image/* or application/json")
        return web.Response(
            body=png,
            content_type="image/png",
            headers={"finish-reason": finish, "seed": str(seed), "x-request-id": uuid.uuid4().hex},
        )
