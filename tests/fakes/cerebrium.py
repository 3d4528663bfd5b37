"""A fake Cerebrium deployment of the stable-diffusion and sd-img-2-img prebuilts.

Success ``{"run_id", "run_time_ms", "message", "result": [<b64 png>, ...]}``; errors are 500
``{"run_id", "message", "result": null}`` (Cerebrium documents no structured error schema).
"""

from __future__ import annotations

import base64
import binascii
import uuid

from aiohttp import web

from tests.fakes import ContractViolation, FakeServer, Handler, RecordedRequest, make_png, require

TXT2IMG_PATH = "/v4/p-1234abcd/stable-diffusion/predict"
IMG2IMG_PATH = "/v4/p-1234abcd/sd-img-2-img/predict"
FIELDS = {
    "prompt",
    "negative_prompt",
    "height",
    "width",
    "num_inference_steps",
    "guidance_scale",
    "num_images_per_prompt",
    "seed",
    "image",
    "file_url",
    "webhook_endpoint",
    "hf_model_path",
}


class CerebriumFake(FakeServer):
    def __init__(
        self, api_key: str = "test-cerebrium-key", bearer: bool = True, single_string: bool = False
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.bearer = bearer
        self.single_string = single_string

    @property
    def url(self) -> str:
        return self.base_url + TXT2IMG_PATH

    @property
    def img2img_url(self) -> str:
        return self.base_url + IMG2IMG_PATH

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("POST", TXT2IMG_PATH, self.predict), ("POST", IMG2IMG_PATH, self.predict)]

    def violation_response(
        self, request: web.Request, exc: ContractViolation
    ) -> web.StreamResponse:
        status = 422 if exc.status == 400 else exc.status
        return web.json_response(
            {"run_id": str(uuid.uuid4()), "message": exc.message, "result": None}, status=status
        )

    async def predict(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        want = f"Bearer {self.api_key}" if self.bearer else self.api_key
        if rec.headers.get("Authorization") != want:
            return web.json_response({"message": "Unauthorized"}, status=401)
        require(rec.content_type == "application/json", "Content-Type must be JSON")
        p = rec.json
        require(isinstance(p, dict), "body must be an object")
        assert isinstance(p, dict)
        for k in p:
            require(k in FIELDS, f"unexpected field {k}")
        require(isinstance(p.get("prompt"), str) and bool(p["prompt"]), "prompt is required")
        for k in ("height", "width", "num_inference_steps", "num_images_per_prompt", "seed"):
            if k in p:
                require(isinstance(p[k], int) and not isinstance(p[k], bool), f"{k}: int")
        require(1 <= p.get("num_images_per_prompt", 1) <= 8, "num_images_per_prompt 1..8")
        require(
            p.get("width", 512) % 8 == 0 and p.get("height", 512) % 8 == 0,
            "width/height must be divisible by 8",
        )
        img2img = request.path == IMG2IMG_PATH
        if img2img:
            require(isinstance(p.get("image"), str), "image (base64) is required", 500)
            try:
                base64.b64decode(p["image"], validate=True)
            except (binascii.Error, ValueError):
                require(False, "image is not valid base64", 500)
        else:
            require("image" not in p, "stable-diffusion takes no image")
        seed = p.get("seed", 0)
        n = p.get("num_images_per_prompt", 1)
        images = [base64.b64encode(make_png(f"cerebrium:{seed + i}")).decode() for i in range(n)]
        result: object = images[0] if self.single_string else images
        return web.json_response(
            {
                "run_id": str(uuid.uuid4()),
                "run_time_ms": 1234.5,
                "message": "Successfully generated images",
                "result": result,
            }
        )
