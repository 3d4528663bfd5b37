"""A fake AUTOMATIC1111 / Forge webui API (``/sdapi/v1``), optionally behind --api-auth.

Errors use the webui's handler shape ``{error, detail, body, errors}``; body validation
failures FastAPI's ``{detail: [{loc, msg, type}]}`` with 422.

``webui="1.10"`` (the default) behaves like webui 1.9 and later: samplers and schedulers are
separate lists (``/sdapi/v1/schedulers``), and an unknown ``sampler_name`` or ``scheduler`` is
*not* refused: ``get_sampler_and_scheduler`` silently falls back to the first sampler and the
automatic schedule (``modules/sd_samplers.py``), after splitting a combined legacy name such
as "DPM++ 2M Karras". Each such fallback is recorded in ``fallbacks`` (and the answer's info
names what really ran). ``webui="1.8"`` is the older API: combined sampler names, no
schedulers route, and a 404 "Sampler not found" for an unknown name.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import Any

from aiohttp import web

from tests.fakes import ContractViolation, FakeServer, Handler, RecordedRequest, make_png, require

SAMPLERS = [  # webui >= 1.9: no scheduler in the names; options name the default schedule
    {"name": "DPM++ 2M", "aliases": ["k_dpmpp_2m"], "options": {"scheduler": "karras"}},
    {"name": "DPM++ SDE", "aliases": ["k_dpmpp_sde"], "options": {"scheduler": "karras"}},
    {"name": "Euler a", "aliases": ["k_euler_a", "k_euler_ancestral"], "options": {}},
    {"name": "Euler", "aliases": ["k_euler"], "options": {}},
    {"name": "DDIM", "aliases": ["ddim"], "options": {}},
]
SCHEDULERS = [
    {
        "name": "automatic",
        "label": "Automatic",
        "aliases": None,
        "default_rho": -1,
        "need_inner_model": False,
    },
    {
        "name": "uniform",
        "label": "Uniform",
        "aliases": None,
        "default_rho": -1,
        "need_inner_model": True,
    },
    {
        "name": "karras",
        "label": "Karras",
        "aliases": None,
        "default_rho": 7.0,
        "need_inner_model": False,
    },
    {
        "name": "exponential",
        "label": "Exponential",
        "aliases": None,
        "default_rho": -1,
        "need_inner_model": False,
    },
    {
        "name": "sgm_uniform",
        "label": "SGM Uniform",
        "aliases": ["SGMUniform"],
        "default_rho": -1,
        "need_inner_model": True,
    },
    {
        "name": "align_your_steps",
        "label": "Align Your Steps",
        "aliases": None,
        "default_rho": -1,
        "need_inner_model": False,
    },
]
LEGACY_SAMPLERS = [  # webui <= 1.8: the schedule is part of the name
    {"name": "Euler a", "aliases": ["k_euler_a", "k_euler_ancestral"], "options": {}},
    {"name": "Euler", "aliases": ["k_euler"], "options": {}},
    {"name": "DPM++ 2M", "aliases": ["k_dpmpp_2m"], "options": {}},
    {"name": "DPM++ 2M Karras", "aliases": ["k_dpmpp_2m_ka"], "options": {"scheduler": "karras"}},
]
MODELS = [
    {
        "title": "sd_xl_base_1.0.safetensors [31e35c80fc]",
        "model_name": "sd_xl_base_1.0",
        "hash": "31e35c80fc",
        "sha256": "31e35c80fc" * 6,
        "filename": "/models/sd_xl_base_1.0.safetensors",
        "config": None,
    },
    {
        "title": "v1-5-pruned-emaonly.safetensors [6ce0161689]",
        "model_name": "v1-5-pruned-emaonly",
        "hash": "6ce0161689",
        "sha256": "6ce0161689" * 6,
        "filename": "/models/v1-5.safetensors",
        "config": None,
    },
]
KNOWN = {
    "prompt",
    "negative_prompt",
    "styles",
    "seed",
    "subseed",
    "subseed_strength",
    "sampler_name",
    "scheduler",
    "batch_size",
    "n_iter",
    "steps",
    "cfg_scale",
    "width",
    "height",
    "denoising_strength",
    "override_settings",
    "override_settings_restore_afterwards",
    "restore_faces",
    "tiling",
    "send_images",
    "save_images",
    "sampler_index",
    "init_images",
    "mask",
    "resize_mode",
    "include_init_images",
    "alwayson_scripts",
    "script_name",
    "script_args",
}
# img2img's own fields (StableDiffusionImg2ImgProcessingAPI): txt2img refuses them.
IMG2IMG_ONLY = {
    "init_images",
    "mask",
    "resize_mode",
    "include_init_images",
    "mask_blur",
    "mask_blur_x",
    "mask_blur_y",
    "inpainting_fill",
    "inpaint_full_res",
    "inpaint_full_res_padding",
    "inpainting_mask_invert",
    "initial_noise_multiplier",
    "image_cfg_scale",
}
KNOWN |= IMG2IMG_ONLY
# GET /sdapi/v1/upscalers (a stock install with the Real-ESRGAN models downloaded)
UPSCALERS = [
    {"name": n, "model_name": m, "model_path": None, "model_url": None, "scale": sc}
    for n, m, sc in (
        ("None", None, 4),
        ("Lanczos", None, 4),
        ("Nearest", None, 4),
        ("ESRGAN_4x", "ESRGAN_4x", 4),
        ("R-ESRGAN 4x+", "RealESRGAN_x4plus", 4),
        ("R-ESRGAN 4x+ Anime6B", "RealESRGAN_x4plus_anime_6B", 4),
        ("SwinIR 4x", "SwinIR 4x", 4),
    )
]
# ExtrasSingleImageRequest (modules/api/models.py)
EXTRAS_KNOWN = {
    "image",
    "resize_mode",
    "show_extras_results",
    "gfpgan_visibility",
    "codeformer_visibility",
    "codeformer_weight",
    "upscaling_resize",
    "upscaling_resize_w",
    "upscaling_resize_h",
    "upscaling_crop",
    "upscaler_1",
    "upscaler_2",
    "extras_upscaler_2_visibility",
    "upscale_first",
}


def webui_error(status: int, kind: str, detail: str) -> web.Response:
    return web.json_response(
        {"error": kind, "detail": detail, "body": "", "errors": f"{status}: {detail}"},
        status=status,
    )


class Automatic1111Fake(FakeServer):
    def __init__(
        self, auth: tuple[str, str] | None = None, return_grid: bool = False, webui: str = "1.10"
    ) -> None:
        super().__init__()
        self.auth = auth
        self.return_grid = return_grid
        self.legacy = tuple(int(x) for x in webui.split(".")) < (1, 9)
        self.sampler_list = LEGACY_SAMPLERS if self.legacy else SAMPLERS
        self.fallbacks: list[str] = []  # names the webui silently replaced
        self.next_random_seed = 3_000_000_000
        self.work_s = 0.0
        self.current_progress = 0.0
        self.masks: list[tuple[tuple[int, int], dict[str, Any]]] = []  # img2img masks seen
        # The webui runs one generation at a time: text2imgapi and img2imgapi run under
        # ``with self.queue_lock:`` (modules/api/api.py), so a second request waits there.
        self.queue_lock = asyncio.Lock()
        self.waiting = 0  # generation requests waiting behind the lock
        self.most_waiting = 0  # the most that ever waited at once
        self.generated = 0  # generations done

    def routes(self) -> list[tuple[str, str, Handler]]:
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/sdapi/v1/samplers", self.samplers),
            ("GET", "/sdapi/v1/sd-models", self.models),
            ("POST", "/sdapi/v1/txt2img", self.txt2img),
            ("POST", "/sdapi/v1/img2img", self.img2img),
            ("GET", "/sdapi/v1/progress", self.progress),
            ("GET", "/sdapi/v1/upscalers", self.upscalers),
            ("POST", "/sdapi/v1/extra-single-image", self.extra_single_image),
        ]
        if not self.legacy:
            routes.append(("GET", "/sdapi/v1/schedulers", self.schedulers))
        return routes

    def violation_response(
        self, request: web.Request, exc: ContractViolation
    ) -> web.StreamResponse:
        if exc.status == 422:
            return web.json_response(
                {"detail": [{"loc": ["body"], "msg": exc.message, "type": "value_error"}]},
                status=422,
            )
        return webui_error(exc.status, "HTTPException", exc.message)

    def _auth_failure(self, rec: RecordedRequest) -> web.Response | None:
        if self.auth is None:
            return None
        header = rec.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return webui_error(401, "HTTPException", "Not authenticated")
        try:
            user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return webui_error(401, "HTTPException", "Not authenticated")
        if (user, pw) != self.auth:
            return webui_error(401, "HTTPException", "Incorrect username or password")
        return None

    async def samplers(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        return self._auth_failure(rec) or web.json_response(self.sampler_list)

    async def schedulers(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        return self._auth_failure(rec) or web.json_response(SCHEDULERS)

    def _sampler_and_scheduler(self, p: dict[str, Any]) -> tuple[str, str]:
        """What webui >= 1.9 really runs for the requested names (its silent fallbacks)."""
        name = p.get("sampler_name") or p.get("sampler_index") or SAMPLERS[0]["name"]
        wanted = p.get("scheduler")
        by_name = {str(x["name"]): x for x in SCHEDULERS}
        by_name.update({str(x["label"]): x for x in SCHEDULERS})
        found = by_name.get(str(wanted)) if wanted is not None else SCHEDULERS[0]
        if found is None:
            self.fallbacks.append(f"scheduler {wanted}")
            found = SCHEDULERS[0]
        for sch in SCHEDULERS:
            for option in (sch["label"], sch["name"], *(sch["aliases"] or [])):
                if str(name).endswith(" " + str(option)):
                    found, name = sch, str(name)[: -(len(str(option)) + 1)]
                    break
        if name not in {x["name"] for x in SAMPLERS}:
            self.fallbacks.append(f"sampler {name}")
            name = SAMPLERS[0]["name"]
        return str(name), str(found["label"])

    async def models(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        return self._auth_failure(rec) or web.json_response(MODELS)

    def _validate(self, rec: RecordedRequest) -> dict[str, Any]:
        require(rec.content_type == "application/json", "content type must be JSON", 422)
        p = rec.json
        require(isinstance(p, dict), "body must be an object", 422)
        assert isinstance(p, dict)
        for key in p:
            require(key in KNOWN, f"extra field {key}", 422)
        require(isinstance(p.get("prompt", ""), str), "prompt: str type expected", 422)
        for k in ("seed", "batch_size", "n_iter", "steps", "width", "height"):
            if k in p:
                require(
                    isinstance(p[k], int) and not isinstance(p[k], bool),
                    f"{k}: value is not a valid integer",
                    422,
                )
        require(1 <= p.get("batch_size", 1) <= 16, "batch_size out of range")
        require(
            p.get("width", 512) % 8 == 0 and p.get("height", 512) % 8 == 0,
            "width and height must be multiples of 8",
        )
        if "sampler_name" in p and self.legacy:
            require(
                p["sampler_name"] in {s["name"] for s in self.sampler_list},
                "Sampler not found",
                404,
            )
        if "scheduler" in p:
            require(not self.legacy, "extra field scheduler", 422)
            require(isinstance(p["scheduler"], str), "scheduler: str type expected", 422)
        ckpt = (p.get("override_settings") or {}).get("sd_model_checkpoint")
        if ckpt is not None:
            require(
                ckpt in {m["title"] for m in MODELS} | {m["model_name"] for m in MODELS},
                f"model '{ckpt}' not found",
            )
        return p

    def _answer(self, p: dict[str, Any]) -> web.Response:
        n = p.get("batch_size", 1) * p.get("n_iter", 1)
        seed = p.get("seed", -1)
        if seed == -1:
            seed = self.next_random_seed
        seeds = [seed + i for i in range(n)]
        images = [base64.b64encode(make_png(f"a1111:{s}")).decode() for s in seeds]
        first = 0
        if self.return_grid and n > 1:
            images.insert(0, base64.b64encode(make_png("grid")).decode())
            first = 1
        info = {
            "prompt": p.get("prompt", ""),
            "all_prompts": [p.get("prompt", "")] * n,
            "seed": seeds[0],
            "all_seeds": seeds,
            "subseed": 1,
            "all_subseeds": [1] * n,
            "width": p.get("width", 512),
            "height": p.get("height", 512),
            **self._ran_with(p),
            "sd_model_name": "sd_xl_base_1.0",
            "index_of_first_image": first,
            "infotexts": ["..."] * n,
        }
        return web.json_response({"images": images, "parameters": p, "info": json.dumps(info)})

    def _ran_with(self, p: dict[str, Any]) -> dict[str, str]:
        if self.legacy:
            return {"sampler_name": p.get("sampler_name", "Euler")}
        sampler, scheduler = self._sampler_and_scheduler(p)
        return {"sampler_name": sampler, "scheduler": scheduler}

    async def progress(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        fail = self._auth_failure(rec)
        if fail:
            return fail
        return web.json_response(
            {
                "progress": self.current_progress,
                "eta_relative": 1.0,
                "state": {"job_count": 1 if self.current_progress else 0},
                "current_image": None,
                "textinfo": None,
            }
        )

    async def _work(self) -> None:
        """Like the webui, answer only when done, one generation at a time; ``work_s`` > 0
        makes each take that long, reporting its progress on /sdapi/v1/progress meanwhile."""
        self.waiting += 1
        self.most_waiting = max(self.most_waiting, self.waiting - 1 + self.queue_lock.locked())
        async with self.queue_lock:
            self.waiting -= 1
            steps = 10
            for i in range(steps):
                if self.work_s <= 0:
                    break
                self.current_progress = i / steps
                await asyncio.sleep(self.work_s / steps)
            self.current_progress = 0.0
            self.generated += 1

    async def txt2img(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        fail = self._auth_failure(rec)
        if fail:
            return fail
        payload = self._validate(rec)
        for key in payload:
            require(key not in IMG2IMG_ONLY, f"extra field {key}", 422)
        await self._work()
        return self._answer(payload)

    async def img2img(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        fail = self._auth_failure(rec)
        if fail:
            return fail
        p = self._validate(rec)
        inits = p.get("init_images")
        if not inits:
            return webui_error(404, "HTTPException", "Init image not found")
        for s in inits:
            try:
                base64.b64decode(s.split(",", 1)[-1], validate=True)
            except (binascii.Error, ValueError):
                return webui_error(500, "HTTPException", "Invalid encoded image")
        require(0 <= float(p.get("denoising_strength", 0.75)) <= 1, "denoising_strength")
        if "mask" in p:
            size = _png_size(p["mask"])
            require(size is not None, "mask: invalid encoded image", 500)
            self.masks.append((size or (0, 0), p))
        if "inpainting_fill" in p:
            require(p["inpainting_fill"] in (0, 1, 2, 3), "inpainting_fill: 0..3", 422)
        await self._work()
        return self._answer(p)

    async def upscalers(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        return self._auth_failure(rec) or web.json_response(UPSCALERS)

    async def extra_single_image(
        self, request: web.Request, rec: RecordedRequest
    ) -> web.StreamResponse:
        fail = self._auth_failure(rec)
        if fail:
            return fail
        require(rec.content_type == "application/json", "content type must be JSON", 422)
        p = rec.json
        require(isinstance(p, dict), "body must be an object", 422)
        for key in p:
            require(key in EXTRAS_KNOWN, f"extra field {key}", 422)
        size = _png_size(p.get("image", ""))
        if size is None:
            return webui_error(500, "HTTPException", "Invalid encoded image")
        name = p.get("upscaler_1", "None")
        if name not in {u["name"] for u in UPSCALERS}:
            # postprocessing_upscale: assert upscaler1 ..., f"could not find upscaler named"
            return webui_error(500, "AssertionError", f"could not find upscaler named {name}")
        factor = float(p.get("upscaling_resize", 2))
        require(1 <= factor <= 8, "upscaling_resize: 1..8", 422)
        if p.get("resize_mode", 0) == 0:
            out = (round(size[0] * factor), round(size[1] * factor))
        else:
            out = (int(p.get("upscaling_resize_w", 512)), int(p.get("upscaling_resize_h", 512)))
        png = make_png(f"extras:{name}", *out)
        return web.json_response({"html_info": "<p></p>", "image": base64.b64encode(png).decode()})


def _png_size(b64: object) -> tuple[int, int] | None:
    """The size of a base64 PNG (its IHDR), or None when it is not one."""
    if not isinstance(b64, str):
        return None
    try:
        data = base64.b64decode(b64.split(",", 1)[-1], validate=True)
    except (binascii.Error, ValueError):
        return None
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
