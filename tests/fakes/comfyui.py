"""A fake ComfyUI server: ``/prompt``, ``/history/{id}``, ``/view``, ``/upload/image``, ``/ws``.

``/prompt`` checks the workflow strictly (API format, every node has ``class_type`` and
``inputs``, no unfilled ``{{placeholder}}``, typed seed/steps/cfg/size on KSampler and
EmptyLatentImage, LoadImage names an uploaded file, CheckpointLoaderSimple names a checkpoint
the server has) and answers ComfyUI's validation error shape (``execution.py``
``validate_prompt``: ``{"error": {...}, "node_errors": {id: {errors, dependent_outputs,
class_type}}}``). SaveImage nodes produce outputs of type ``output``; PreviewImage nodes
outputs of type ``temp`` (ComfyUI's temp folder), both served by ``/view``.

Progress: a client connected to ``/ws?clientId=...`` (as ComfyUI's ``server.py``) receives,
for the prompts queued with that ``client_id``: ``status`` (queue_remaining),
``execution_start``, ``execution_cached``, ``executing`` per node, ``progress`` (value/max)
for the sampler's steps, ``executed``, then ``executing`` with ``node: null`` and
``execution_success`` (or ``execution_error``). History holds the run once it has finished.
Without a socket, history stays empty for ``pending_polls`` polls.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes import ContractViolation, FakeServer, Handler, RecordedRequest, make_png, require

TXT2IMG_WORKFLOW: dict[str, Any] = {
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": "{{seed}}",
            "steps": "{{steps}}",
            "cfg": "{{cfg}}",
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": "{{denoise}}",
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl.safetensors"}},
    "5": {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": "{{width}}", "height": "{{height}}", "batch_size": "{{batch_size}}"},
    },
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{prompt}}", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{negative}}", "clip": ["4", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "imagine", "images": ["8", 0]}},
}
IMG2IMG_WORKFLOW: dict[str, Any] = {
    **{k: v for k, v in TXT2IMG_WORKFLOW.items() if k != "5"},
    "3": {
        "class_type": "KSampler",
        "inputs": {**TXT2IMG_WORKFLOW["3"]["inputs"], "latent_image": ["11", 0]},
    },
    "10": {"class_type": "LoadImage", "inputs": {"image": "{{init_image}}"}},
    "11": {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}},
}
# The same graph ending in a PreviewImage: its outputs are of type "temp".
PREVIEW_WORKFLOW: dict[str, Any] = {
    **{k: v for k, v in TXT2IMG_WORKFLOW.items() if k != "9"},
    "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
}
IMAGE_OUTPUT_NODES = {"SaveImage": "output", "PreviewImage": "temp"}
# Upscale with a model, then to the asked factor (stock nodes: comfy_extras/nodes_upscale_model
# and nodes.ImageScaleBy, whose scale_by is a float 0.01..8).
UPSCALE_WORKFLOW: dict[str, Any] = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "{{init_image}}"}},
    "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "RealESRGAN_x4plus.pth"}},
    "3": {
        "class_type": "ImageUpscaleWithModel",
        "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]},
    },
    "4": {
        "class_type": "ImageScaleBy",
        "inputs": {"image": ["3", 0], "upscale_method": "lanczos", "scale_by": "{{scale}}"},
    },
    "5": {"class_type": "SaveImage", "inputs": {"filename_prefix": "upscaled", "images": ["4", 0]}},
}


def validation_error(
    node_id: str,
    class_type: str,
    kind: str,
    message: str,
    details: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "error": {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": "",
            "extra_info": {},
        },
        "node_errors": {
            node_id: {
                "errors": [
                    {
                        "type": kind,
                        "message": message,
                        "details": details,
                        "extra_info": extra or {},
                    }
                ],
                "dependent_outputs": ["9"],
                "class_type": class_type,
            }
        },
    }


class ComfyUIFake(FakeServer):
    unfaulted_paths = ("/ws",)

    def __init__(
        self,
        pending_polls: int = 1,
        *,
        websocket: bool = True,
        steps: int = 3,
        step_delay_s: float = 0.0,
    ) -> None:
        super().__init__()
        self.pending_polls = pending_polls
        self.websocket = websocket
        self.steps = steps
        self.step_delay_s = step_delay_s
        self.history: dict[str, dict[str, Any]] = {}
        self.polls: dict[str, int] = {}
        self.finished: set[str] = set()
        self.ws_runs: set[str] = set()
        self.files: dict[tuple[str, str], bytes] = {}
        self.uploads: dict[str, bytes] = {}
        self.checkpoints = {"sd_xl.safetensors", "sd15.safetensors"}
        self.upscale_models = {"RealESRGAN_x4plus.pth", "4x-UltraSharp.pth"}
        self.fail_execution: str | None = None
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.ws_clients: list[str] = []
        self.queue_ahead = 0  # other prompts reported in the queue before ours
        # Cleared: runs wait (a queue that does not move) until it is set again.
        self.run_gate = asyncio.Event()
        self.run_gate.set()
        self.socket_opened = asyncio.Event()
        self._runs: set[asyncio.Task[None]] = set()

    def routes(self) -> list[tuple[str, str, Handler]]:
        routes: list[tuple[str, str, Handler]] = [
            ("POST", "/prompt", self.prompt),
            ("GET", "/history/{pid}", self.get_history),
            ("GET", "/view", self.view),
            ("POST", "/upload/image", self.upload),
            ("GET", "/system_stats", self.stats),
        ]
        if self.websocket:
            routes.append(("GET", "/ws", self.ws))
        return routes

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._runs):
            task.cancel()
        for ws in list(self.sockets.values()):
            await ws.close()
        await super().__aexit__(*exc)

    def violation_response(
        self, request: web.Request, exc: ContractViolation
    ) -> web.StreamResponse:
        return web.json_response(
            validation_error("3", "KSampler", "value_not_valid", "Value not valid", exc.message),
            status=400,
        )

    async def stats(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        return web.json_response(
            {"system": {"os": "posix", "comfyui_version": "0.3.40"}, "devices": []}
        )

    async def ws(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        sid = request.query.get("clientId") or uuid.uuid4().hex
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets[sid] = ws
        self.ws_clients.append(sid)
        self.socket_opened.set()
        await ws.send_json(
            {
                "type": "status",
                "data": {
                    "status": {"exec_info": {"queue_remaining": self.queue_ahead}},
                    "sid": sid,
                },
            }
        )
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
        finally:
            if self.sockets.get(sid) is ws:
                del self.sockets[sid]
        return ws

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
            return web.json_response(
                {
                    "error": {
                        "type": "no_prompt",
                        "message": "No prompt provided",
                        "details": "",
                        "extra_info": {},
                    },
                    "node_errors": {},
                },
                status=400,
            )
        wf = body["prompt"]
        require(isinstance(wf, dict) and bool(wf), "prompt must be a non-empty object")
        require(isinstance(body.get("client_id"), str), "client_id should be a string")
        for node_id, node in wf.items():
            require(
                isinstance(node, dict)
                and "class_type" in node
                and isinstance(node.get("inputs"), dict),
                f"node {node_id} malformed",
            )
            for key, value in node["inputs"].items():
                require(
                    not (isinstance(value, str) and "{{" in value),
                    f"{node_id}.{key}: unfilled placeholder {value}",
                )
            inputs = node["inputs"]
            if node["class_type"] == "KSampler":
                require(
                    isinstance(inputs["seed"], int) and 0 <= inputs["seed"] < 2**64,
                    "seed: must be an int",
                )
                require(
                    isinstance(inputs["steps"], int) and 1 <= inputs["steps"] <= 10000,
                    "steps: must be an int",
                )
                require(isinstance(inputs["cfg"], int | float), "cfg: must be a number")
                require(0 <= inputs["denoise"] <= 1, "denoise: must be 0..1")
            if node["class_type"] == "EmptyLatentImage":
                for k in ("width", "height", "batch_size"):
                    require(isinstance(inputs[k], int), f"{k}: must be an int")
                require(
                    inputs["width"] % 8 == 0 and inputs["height"] % 8 == 0,
                    "width/height must be multiples of 8",
                )
            if node["class_type"] == "LoadImage":
                require(inputs["image"] in self.uploads, f"Invalid image file: {inputs['image']}")
            if node["class_type"] == "CLIPTextEncode":
                require(isinstance(inputs["text"], str), "text: must be a string")
            if node["class_type"] == "ImageScaleBy":
                scale = inputs.get("scale_by")
                require(
                    isinstance(scale, int | float) and 0.01 <= scale <= 8,
                    "scale_by: must be a number 0.01..8",
                )
            if (
                node["class_type"] == "UpscaleModelLoader"
                and inputs["model_name"] not in self.upscale_models
            ):
                known = sorted(self.upscale_models)
                return web.json_response(
                    validation_error(
                        node_id,
                        "UpscaleModelLoader",
                        "value_not_in_list",
                        "Value not in list",
                        f"model_name: '{inputs['model_name']}' not in {known}",
                        {"input_name": "model_name", "received_value": inputs["model_name"]},
                    ),
                    status=400,
                )
            if (
                node["class_type"] == "CheckpointLoaderSimple"
                and inputs["ckpt_name"] not in self.checkpoints
            ):
                known = sorted(self.checkpoints)
                return web.json_response(
                    validation_error(
                        node_id,
                        "CheckpointLoaderSimple",
                        "value_not_in_list",
                        "Value not in list",
                        f"ckpt_name: '{inputs['ckpt_name']}' not in {known}",
                        {
                            "input_name": "ckpt_name",
                            "input_config": [known],
                            "received_value": inputs["ckpt_name"],
                        },
                    ),
                    status=400,
                )
        require(
            any(n["class_type"] in IMAGE_OUTPUT_NODES for n in wf.values()),
            "prompt has no output nodes",
        )
        pid = str(uuid.uuid4())
        batch = next(
            (
                n["inputs"]["batch_size"]
                for n in wf.values()
                if n["class_type"] == "EmptyLatentImage"
            ),
            1,
        )
        seed = next((n["inputs"]["seed"] for n in wf.values() if n["class_type"] == "KSampler"), 0)
        outputs: dict[str, Any] = {}
        for node_id, node in wf.items():
            kind = IMAGE_OUTPUT_NODES.get(node["class_type"])
            if kind is None:
                continue
            images = []
            for i in range(batch):
                prefix = "imagine" if kind == "output" else f"ComfyUI_temp_{pid[:5]}"
                fname = f"{prefix}_{len(self.files):05d}_.png"
                self.files[(kind, fname)] = make_png(f"comfy:{seed}:{i}")
                images.append({"filename": fname, "subfolder": "", "type": kind})
            outputs[node_id] = {"images": images}
        if self.fail_execution:
            entry = {
                "prompt": [0, pid, wf, {}, list(outputs)],
                "outputs": {},
                "status": {
                    "status_str": "error",
                    "completed": False,
                    "messages": [
                        ["execution_start", {"prompt_id": pid}],
                        [
                            "execution_error",
                            {
                                "prompt_id": pid,
                                "node_id": "3",
                                "node_type": "KSampler",
                                "exception_type": "RuntimeError",
                                "exception_message": self.fail_execution,
                            },
                        ],
                    ],
                },
            }
        else:
            entry = {
                "prompt": [0, pid, wf, {}, list(outputs)],
                "outputs": outputs,
                "status": {"status_str": "success", "completed": True, "messages": []},
            }
        self.history[pid] = entry
        self.polls[pid] = 0
        ws = self.sockets.get(body["client_id"])
        if ws is not None:
            self.ws_runs.add(pid)
            task = asyncio.create_task(self._run(ws, pid, wf, outputs))
            self._runs.add(task)
            task.add_done_callback(self._runs.discard)
        return web.json_response({"prompt_id": pid, "number": len(self.history), "node_errors": {}})

    async def _run(
        self, ws: web.WebSocketResponse, pid: str, wf: dict[str, Any], outputs: dict[str, Any]
    ) -> None:
        """What ComfyUI's executor reports while it runs the prompt."""

        async def send(kind: str, data: dict[str, Any]) -> None:
            await ws.send_json({"type": kind, "data": {**data, "prompt_id": pid}})

        try:
            await ws.send_json(
                {
                    "type": "status",
                    "data": {"status": {"exec_info": {"queue_remaining": self.queue_ahead + 1}}},
                }
            )
            await self.run_gate.wait()
            await send("execution_start", {"timestamp": 0})
            await send("execution_cached", {"nodes": ["4"], "timestamp": 0})
            for node_id, node in wf.items():
                if node_id == "4":
                    continue
                await send("executing", {"node": node_id, "display_node": node_id})
                if node["class_type"] == "KSampler":
                    if self.fail_execution:
                        await send(
                            "execution_error",
                            {
                                "node_id": node_id,
                                "node_type": "KSampler",
                                "executed": [],
                                "exception_type": "RuntimeError",
                                "exception_message": self.fail_execution,
                                "traceback": [],
                                "current_inputs": {},
                                "current_outputs": {},
                            },
                        )
                        self.finished.add(pid)
                        return
                    for step in range(1, self.steps + 1):
                        await asyncio.sleep(self.step_delay_s)
                        # A preview frame (binary) between the JSON messages.
                        await ws.send_bytes(b"\x00\x00\x00\x01\x00\x00\x00\x02" + make_png())
                        await send("progress", {"value": step, "max": self.steps, "node": node_id})
                if node_id in outputs:
                    await send(
                        "executed",
                        {"node": node_id, "display_node": node_id, "output": outputs[node_id]},
                    )
            self.finished.add(pid)
            await send("executing", {"node": None})
            await send("execution_success", {"timestamp": 0})
        except (ConnectionError, RuntimeError):
            self.finished.add(pid)

    async def get_history(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        pid = request.match_info["pid"]
        if pid not in self.history:
            return web.json_response({})
        if pid in self.ws_runs:  # it ran with a socket: there once it has finished
            return web.json_response({pid: self.history[pid]} if pid in self.finished else {})
        self.polls[pid] += 1
        if self.polls[pid] <= self.pending_polls:
            return web.json_response({})
        return web.json_response({pid: self.history[pid]})

    async def view(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        name = rec.query.get("filename", "")
        kind = rec.query.get("type", "output")
        require(kind in ("output", "temp", "input"), "type must be output, temp or input")
        if ".." in name or "/" in name:
            return web.Response(status=403)
        if (kind, name) not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[(kind, name)], content_type="image/png")
