"""A fake OpenAI Images API (generations, edits, models) with OpenAI's error shape."""

from __future__ import annotations

import base64
import time

from aiohttp import web

from tests.fakes import ContractViolation, FakeServer, Handler, RecordedRequest, make_png, require

RULES = {
    "gpt-image-1": {"sizes": {"1024x1024", "1536x1024", "1024x1536", "auto"},
                    "quality": {"low", "medium", "high", "auto"}, "n": 10},
    "dall-e-3": {"sizes": {"1024x1024", "1792x1024", "1024x1792"},
                 "quality": {"standard", "hd"}, "n": 1},
}


def openai_error(status: int, message: str, kind: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "param": param,
                                        "code": code}}, status=status)


class OpenAIFake(FakeServer):
    """Routes live under ``/v1``; point ``OPENAI_API_BASE_URL`` at ``base_url + "/v1"``."""

    def __init__(self, api_key: str = "sk-test-openai") -> None:
        super().__init__()
        self.api_key = api_key

    @property
    def api_url(self) -> str:
        return self.base_url + "/v1"

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/v1/images/generations", self.generations),
            ("POST", "/v1/images/edits", self.edits),
            ("GET", "/v1/models/{model}", self.model),
        ]

    def violation_response(self, request: web.Request, exc: ContractViolation
                           ) -> web.StreamResponse:
        return openai_error(exc.status, exc.message)

    def _auth(self, rec: RecordedRequest) -> web.Response | None:
        if rec.headers.get("Authorization") != f"Bearer {self.api_key}":
            return openai_error(401, "Incorrect API key provided: sk-te***.",
                                code="invalid_api_key")
        return None

    async def model(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        fail = self._auth(rec)
        if fail:
            return fail
        model = request.match_info["model"]
        if model not in RULES:
            return openai_error(404, f"The model '{model}' does not exist",
                                code="model_not_found")
        return web.json_response({"id": model, "object": "model", "owned_by": "system"})

    def _check(self, model: str, n: int, size: str, quality: str | None) -> None:
        require(model in RULES, f"Invalid model {model}", 400)
        rule = RULES[model]
        require(1 <= n <= int(str(rule["n"])), f"Invalid 'n': {model} supports 1..{rule['n']}")
        require(size in rule["sizes"], f"Invalid size '{size}' for {model}")  # type: ignore[operator]
        if quality is not None:
            require(quality in rule["quality"], f"Invalid quality '{quality}'")  # type: ignore[operator]

    def _answer(self, n: int) -> web.Response:
        data = [{"b64_json": base64.b64encode(make_png(f"openai:{i}")).decode()}
                for i in range(n)]
        return web.json_response({"created": int(time.time()), "data": data,
                                  "usage": {"total_tokens": 100}},
                                 headers={"x-request-id": "req_123"})

    async def generations(self, request: web.Request, rec: RecordedRequest
                          ) -> web.StreamResponse:
        fail = self._auth(rec)
        if fail:
            return fail
        require(rec.content_type == "application/json", "Content-Type must be JSON")
        p = rec.json
        require(isinstance(p, dict) and isinstance(p.get("prompt"), str) and p["prompt"],
                "Missing required parameter: 'prompt'.")
        assert isinstance(p, dict)
        model = p.get("model", "dall-e-2")
        allowed = {"model", "prompt", "n", "size", "quality", "user", "response_format",
                   "style", "background", "moderation", "output_format"}
        for k in p:
            require(k in allowed, f"Unknown parameter: '{k}'.")
        if model.startswith("gpt-image"):
            require("response_format" not in p, "Unknown parameter: 'response_format'.")
        else:
            require(p.get("response_format") in {"url", "b64_json"}, "response_format")
        self._check(model, int(p.get("n", 1)), p.get("size", "1024x1024"), p.get("quality"))
        return self._answer(int(p.get("n", 1)))

    async def edits(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        fail = self._auth(rec)
        if fail:
            return fail
        require(rec.content_type == "multipart/form-data", "edits need multipart/form-data")
        require("image" in rec.files or "image[]" in rec.files,
                "Missing required parameter: 'image'.")
        require(bool(rec.form.get("prompt")), "Missing required parameter: 'prompt'.")
        model = rec.form.get("model", "dall-e-2")
        require(model.startswith("gpt-image"), f"{model} does not support edits")
        for k in rec.form:
            require(k in {"model", "prompt", "n", "size", "quality", "user", "background",
                          "input_fidelity", "output_format"}, f"Unknown parameter: '{k}'.")
        n = int(rec.form.get("n", "1"))
        self._check(model, n, rec.form.get("size", "1024x1024"), rec.form.get("quality"))
        return self._answer(n)
