"""A fake ComfyUI server: ``/prompt``, ``/history/{id}``, ``/view``, ``/upload/image``.

``/prompt`` checks the workflow strictly (API format, every node has ``class_type`` and
``inputs``, no unfilled ``{{placeholder}}``, typed seed/steps/cfg/size on KSampler and
EmptyLatentImage, LoadImage names an uploaded file) and answers the real validation error
shape. History stays empty for ``pending_polls`` polls, then holds the outputs.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from tests.fakes import ContractViolation, FakeServer, Handler, RecordedRequest, make_png, require

TXT2IMG_WORKFLOW: dict[str, Any] = {
    "3": {"class_type": "KSampler", "inputs": {
        "seed": "{{seed}}", "steps": "{{steps}}", "cfg": "{{cfg}}", "sampler_name": "euler",
        "scheduler": "normal", "denoise": "{{denoise}}", "model": ["4", 0],
        "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {
        "width": "{{width}}", "height": "{{height}}", "batch_size": "{{batch_size}}"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{prompt}}", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{negative}}", "clip": ["4", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "imagine",
                                                "images": ["8", 0]}},
}
IMG2IMG_WORKFLOW: dict[str, Any] = {
    **{k: v for k, v in TXT2IMG_WORKFLOW.items() if k != "5"},
    "3": {"class_type": "KSampler", "inputs": {
        **TXT2IMG_WORKFLOW["3"]["inputs"], "latent_image": ["11", 0]}},
    "10": {"class_type": "LoadImage", "inputs": {"image": "{{init_image}}"}},
    "11": {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}},
}


class ComfyUIFake(FakeServer):
    def __init__(self, pending_polls: int = 1) -> None:
        super().__init__()
        self.pending_polls = pending_polls
        self.history: dict[str, dict[str, Any]] = {}
        self.polls: dict[str, int] = {}
        self.files: dict[str, bytes] = {}
        self.uploads: dict[str, bytes] = {}
        self.fail_execution: str | None = None

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/prompt", self.prompt),
            ("GET", "/history/{pid}", self.get_history),
            ("GET", "/view", self.view),
            ("POST", "/upload/image", self.upload),
            ("GET", "/system_stats", self.stats),
        ]

    def violation_response(self, request: web.Request, exc: ContractViolation
                           ) -> web.StreamResponse:
        return web.json_response({
            "error": {"type": "prompt_outputs_failed_validation",
                      "message": "Prompt outputs failed validation", "details": exc.message,
                      "extra_info": {}},
            "node_errors": {"3": {"errors": [{"type": "value_not_valid",
                                              "message": "Value not valid",
                                              "details": exc.message, "extra_info": {}}],
                                  "dependent_outputs": ["9"], "class_type": "KSampler"}}},
            status=400)

    async def stats(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        return web.json_response({"system": {"os": "posix", "comfyui_version": "0.3.40"},
                                  "devices": []})

    async def upload(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        require(rec.content_type == "multipart/form-data", "upload must be multipart")
        require("image" in rec.files, "image field is required")
        name, data, _ = rec.files["image"]
        self.uploads[name] = data
        return web.json_response({"name": name, "subfolder": "", "type": "input"})

    async def prompt(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        require(rec.content_type == "application/json", "body must be JSON")
        body = rec.json
        if not isinstance(body, dict) or "prompt" not in body:
            return web.json_response({"error": {"type": "no_prompt", "message":
                                                "No prompt provided", "details": "",
                                                "extra_info": {}}, "node_errors": {}},
                                     status=400)
        wf = body["prompt"]
        require(isinstance(wf, dict) and bool(wf), "prompt must be a non-empty object")
        require(isinstance(body.get("client_id"), str), "client_id should be a string")
        for node_id, node in wf.items():
            require(isinstance(node, dict) and "class_type" in node
                    and isinstance(node.get("inputs"), dict), f"node {node_id} malformed")
            for key, value in node["inputs"].items():
                require(not (isinstance(value, str) and "{{" in value),
                        f"{node_id}.{key}: unfilled placeholder {value}")
            inputs = node["inputs"]
            if node["class_type"] == "KSampler":
                require(isinstance(inputs["seed"], int) and 0 <= inputs["seed"] < 2**64,
                        "seed: must be an int")
                require(isinstance(inputs["steps"], int) and 1 <= inputs["steps"] <= 10000,
                        "steps: must be an int")
                require(isinstance(inputs["cfg"], int | float), "cfg: must be a number")
                require(0 <= inputs["denoise"] <= 1, "denoise: must be 0..1")
            if node["class_type"] == "EmptyLatentImage":
                for k in ("width", "height", "batch_size"):
                    require(isinstance(inputs[k], int), f"{k}: must be an int")
                require(inputs["width"] % 8 == 0 and inputs["height"] % 8 == 0,
                        "width/height must be multiples of 8")
            if node["class_type"] == "LoadImage":
                require(inputs["image"] in self.uploads,
                        f"Invalid image file: {inputs['image']}")
            if node["class_type"] == "CLIPTextEncode":
                require(isinstance(inputs["text"], str), "text: must be a string")
        pid = str(uuid.uuid4())
        batch = next((n["inputs"]["batch_size"] for n in wf.values()
                      if n["class_type"] == "EmptyLatentImage"), 1)
        seed = next(n["inputs"]["seed"] for n in wf.values() if n["class_type"] == "KSampler")
        images = []
        for i in range(batch):
            fname = f"imagine_{len(self.files):05d}_.png"
            self.files[fname] = make_png(f"comfy:{seed}:{i}")
            images.append({"filename": fname, "subfolder": "", "type": "output"})
        if self.fail_execution:
            entry = {"prompt": [0, pid, wf, {}, ["9"]], "outputs": {},
                     "status": {"status_str": "error", "completed": False, "messages": [
                         ["execution_start", {"prompt_id": pid}],
                         ["execution_error", {"prompt_id": pid, "node_id": "3",
                                              "exception_type": "RuntimeError",
                                              "exception_message": self.fail_execution}]]}}
        else:
            entry = {"prompt": [0, pid, wf, {}, ["9"]],
                     "outputs": {"9": {"images": images}},
                     "status": {"status_str": "success", "completed": True, "messages": []}}
        self.history[pid] = entry
        self.polls[pid] = 0
        return web.json_response({"prompt_id": pid, "number": len(self.history),
                                  "node_errors": {}})

    async def get_history(self, request: web.Request, rec: RecordedRequest
                          ) -> web.StreamResponse:
        pid = request.match_info["pid"]
        if pid not in self.history:
            return web.json_response({})
        self.polls[pid] += 1
        if self.polls[pid] <= self.pending_polls:
            return web.json_response({})
        return web.json_response({pid: self.history[pid]})

    async def view(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        name = rec.query.get("filename", "")
        require(rec.query.get("type") == "output", "type must be output")
        if ".." in name or "/" in name:
            return web.Response(status=403)
        if name not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[name], content_type="image/png")
