"""A fake OpenAI Images API (generations, edits, models) with OpenAI's error shape.

Model list as of 2026-12-01 (developers.openai.com model pages and deprecations page): the GPT
Image 2 family is current; ``dall-e-2``/``dall-e-3`` were shut down on 2026-05-12,
``gpt-image-1`` on 2026-10-23, ``gpt-image-1-mini``/``gpt-image-1.5``/``chatgpt-image-latest``
on 2026-12-01. A retired model answers ``model_not_found`` "has been deprecated", as the API
does after a shutdown. Sizes follow the ``size`` rules of the spec (openai-openapi f85dbe22):
``WIDTHxHEIGHT`` with both sides divisible by 16 and the ratio within 1:3..3:1, inside the
model's pixel and edge limits (655,360..8,294,400 pixels, longest edge 3840), or ``auto``.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from aiohttp import web

from tests.fakes import ContractViolation, FakeServer, Handler, RecordedRequest, make_png, require

_GPT2_QUALITY = frozenset({"low", "medium", "high", "auto"})
# GPT Image 2.5 (2026-09-08) and 2.6 (2026-11-04) added two quality tiers.
_GPT25_QUALITY = _GPT2_QUALITY | {"xhigh", "max"}
CURRENT_MODELS: dict[str, dict[str, Any]] = {
    "gpt-image-2.6-flare": {"quality": _GPT25_QUALITY, "created": 1793750400},
    "gpt-image-2.6-sunburst": {"quality": _GPT25_QUALITY, "created": 1793750400},
    "gpt-image-2.5-flare": {"quality": _GPT25_QUALITY, "created": 1788825600},
    "gpt-image-2.5-sunburst": {"quality": _GPT25_QUALITY, "created": 1788825600},
    "gpt-image-2": {"quality": _GPT2_QUALITY, "created": 1776729600},
}
RETIRED_MODELS: dict[str, str] = {
    "dall-e-2": "2026-05-12",
    "dall-e-3": "2026-05-12",
    "gpt-image-1": "2026-10-23",
    "gpt-image-1-mini": "2026-12-01",
    "gpt-image-1.5": "2026-12-01",
    "gpt-image-1.5-2025-12-16": "2026-12-01",
    "chatgpt-image-latest": "2026-12-01",
}
MIN_PIXELS, MAX_PIXELS, MAX_EDGE = 655_360, 8_294_400, 3840
GENERATION_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "n",
        "size",
        "quality",
        "user",
        "background",
        "moderation",
        "output_format",
        "output_compression",
        "stream",
        "partial_images",
    }
)
EDIT_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "n",
        "size",
        "quality",
        "user",
        "background",
        "input_fidelity",
        "output_format",
        "output_compression",
        "stream",
        "partial_images",
    }
)


def openai_error(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": param, "code": code}}, status=status
    )


def size_problem(size: str) -> str | None:
    """Why OpenAI would refuse ``size`` for a GPT Image 2 model, or None."""
    if size == "auto":
        return None
    w_s, sep, h_s = size.partition("x")
    if not sep or not w_s.isdigit() or not h_s.isdigit():
        return f"Invalid size '{size}'. Use WIDTHxHEIGHT or auto."
    w, h = int(w_s), int(h_s)
    if w % 16 or h % 16:
        return f"Invalid size '{size}': width and height must be divisible by 16."
    if not 1 / 3 <= w / h <= 3:
        return f"Invalid size '{size}': the aspect ratio must be between 1:3 and 3:1."
    if not MIN_PIXELS <= w * h <= MAX_PIXELS or max(w, h) > MAX_EDGE:
        return (
            f"Invalid size '{size}': the image must have {MIN_PIXELS}..{MAX_PIXELS} "
            f"pixels and edges of at most {MAX_EDGE}."
        )
    return None


class OpenAIFake(FakeServer):
    """Routes live under ``/v1``; point ``OPENAI_API_BASE_URL`` at ``base_url + "/v1"``."""

    def __init__(self, api_key: str = "sk-test-openai") -> None:
        super().__init__()
        self.api_key = api_key
        self.models = {k: dict(v) for k, v in CURRENT_MODELS.items()}
        self.retired = dict(RETIRED_MODELS)
        # Announced shutdowns of current models: GET /v1/models carries them.
        self.shutdown_dates: dict[str, str] = {}

    @property
    def api_url(self) -> str:
        return self.base_url + "/v1"

    def retire(self, model: str, on: str = "2026-12-01") -> None:
        """From now on, ``model`` answers as a model past its shutdown date."""
        self.models.pop(model, None)
        self.retired[model] = on

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/v1/images/generations", self.generations),
            ("POST", "/v1/images/edits", self.edits),
            ("GET", "/v1/models", self.list_models),
            ("GET", "/v1/models/{model}", self.model),
        ]

    def violation_response(
        self, request: web.Request, exc: ContractViolation
    ) -> web.StreamResponse:
        return openai_error(exc.status, exc.message)

    def _auth(self, rec: RecordedRequest) -> web.Response | None:
        if rec.headers.get("Authorization") != f"Bearer {self.api_key}":
            return openai_error(
                401, "Incorrect API key provided: sk-te***.", code="invalid_api_key"
            )
        return None

    def _model_object(self, model: str) -> dict[str, Any]:
        return {
            "id": model,
            "object": "model",
            "created": self.models[model]["created"],
            "owned_by": "system",
            "shutdown_date": self.shutdown_dates.get(model),
        }

    async def list_models(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        fail = self._auth(rec)
        if fail:
            return fail
        return web.json_response(
            {"object": "list", "data": [self._model_object(m) for m in self.models]}
        )

    async def model(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        fail = self._auth(rec)
        if fail:
            return fail
        model = request.match_info["model"]
        if model not in self.models:
            return openai_error(
                404, f"The model '{model}' does not exist", code="model_not_found", param="model"
            )
        return web.json_response(self._model_object(model))

    def _unknown_model(self, model: str) -> web.Response | None:
        if model in self.retired:
            return openai_error(
                404,
                f"The model `{model}` has been deprecated. Learn more: "
                "https://platform.openai.com/docs/deprecations",
                code="model_not_found",
                param="model",
            )
        if model not in self.models:
            return openai_error(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                code="model_not_found",
                param="model",
            )
        return None

    def _check(self, model: str, n: int, size: str, quality: str | None) -> None:
        require(1 <= n <= 10, "Invalid 'n': must be between 1 and 10.")
        problem = size_problem(size)
        require(problem is None, problem or "")
        if quality is not None:
            require(
                quality in self.models[model]["quality"],
                f"Invalid quality '{quality}' for {model}.",
            )

    def _answer(self, n: int, size: str, quality: str | None) -> web.Response:
        data = [{"b64_json": base64.b64encode(make_png(f"openai:{i}")).decode()} for i in range(n)]
        body: dict[str, Any] = {
            "created": int(time.time()),
            "data": data,
            "output_format": "png",
            "usage": {
                "total_tokens": 100,
                "input_tokens": 50,
                "output_tokens": 50,
                "input_tokens_details": {"text_tokens": 10, "image_tokens": 40},
            },
        }
        return web.json_response(body, headers={"x-request-id": "req_123"})

    async def generations(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        fail = self._auth(rec)
        if fail:
            return fail
        require(rec.content_type == "application/json", "Content-Type must be JSON")
        p = rec.json
        require(
            isinstance(p, dict) and isinstance(p.get("prompt"), str) and p["prompt"],
            "Missing required parameter: 'prompt'.",
        )
        assert isinstance(p, dict)
        for k in p:
            require(k in GENERATION_FIELDS, f"Unknown parameter: '{k}'.")
        model = str(p.get("model", "dall-e-2"))
        gone = self._unknown_model(model)
        if gone:
            return gone
        n = p.get("n", 1)
        require(isinstance(n, int) and not isinstance(n, bool), "Invalid type for 'n'.")
        self._check(model, n, str(p.get("size", "auto")), p.get("quality"))
        return self._answer(n, str(p.get("size", "auto")), p.get("quality"))

    async def edits(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        fail = self._auth(rec)
        if fail:
            return fail
        require(rec.content_type == "multipart/form-data", "edits need multipart/form-data")
        require(
            "image" in rec.files or "image[]" in rec.files, "Missing required parameter: 'image'."
        )
        require(bool(rec.form.get("prompt")), "Missing required parameter: 'prompt'.")
        for k in rec.form:
            require(k in EDIT_FIELDS, f"Unknown parameter: '{k}'.")
        model = rec.form.get("model", "gpt-image-1.5")
        gone = self._unknown_model(model)
        if gone:
            return gone
        n_text = rec.form.get("n", "1")
        require(n_text.isdigit(), "Invalid type for 'n'.")
        n = int(n_text)
        self._check(model, n, rec.form.get("size", "1024x1024"), rec.form.get("quality"))
        return self._answer(n, rec.form.get("size", "1024x1024"), rec.form.get("quality"))
