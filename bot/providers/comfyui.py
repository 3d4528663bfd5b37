"""ComfyUI: a user-supplied API-format workflow with placeholders, run via ``/prompt``.

The workflow (exported with "Save (API Format)") holds placeholders that we fill per request:
``{{prompt}}``, ``{{negative}}``, ``{{seed}}``, ``{{steps}}``, ``{{cfg}}``, ``{{width}}``,
``{{height}}``, ``{{denoise}}``, ``{{init_image}}``, ``{{batch_size}}``. A string that *is*
a placeholder becomes the typed value (``"{{seed}}"`` -> ``1234``); a placeholder inside a
longer string is replaced as text. An init image is uploaded first with ``POST /upload/image``
and referenced by name.

Then: open ComfyUI's WebSocket (``/ws?clientId=<ours>``, a fresh id per call, since ComfyUI
sends a client's events to its latest socket), ``POST /prompt`` with that ``client_id``, and
follow the run: ``status`` (queue position), ``executing``/``execution_cached`` (nodes done),
``progress`` (sampler steps), until ``executing`` with ``node: null`` or ``execution_success``;
an ``execution_error`` names the node that failed. Then ``GET /history/{prompt_id}`` once for
the outputs and ``GET /view`` for each image, of type ``output`` (SaveImage) or ``temp``
(PreviewImage). httpx has no WebSocket, and ``bot/`` must not import aiohttp, so this uses the
``websockets`` package; where the socket cannot be opened (a proxy without upgrades,
``websocket = false``) or drops, the provider polls ``/history`` instead.

A workflow ComfyUI refuses (``node_errors``) names the node and the cause; a model file the
server lacks (``value_not_in_list`` on a ``*_name`` input) is :class:`ModelUnavailable`, which
alerts the admins with the setting to change, since every request would fail alike.
ComfyUI has no auth of its own; ``COMFYUI_API_KEY`` is sent as a Bearer token for a proxy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from bot.errors import ConfigError
from bot.providers.base import (
    Capabilities,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    InvalidRequest,
    ModelUnavailable,
    Progress,
    ProgressCallback,
    ProviderError,
    ProviderUnavailable,
)
from bot.providers.comfyui_workflows import PLACEHOLDERS as PLACEHOLDERS
from bot.providers.comfyui_workflows import fill as fill
from bot.providers.comfyui_workflows import load_workflow
from bot.providers.http import (
    FilePart,
    HttpClient,
    HttpPolicy,
    Sleep,
    error_for_status,
    get_bool,
    get_float,
    get_int,
    get_url,
    json_or_none,
    reject_unknown,
)
from bot.providers.pool import POOL_KEYS, ServerSpec, parse_health_interval, parse_servers

log = logging.getLogger(__name__)

PREFIX = "providers.comfyui"
WORKFLOW_SETTING = f"{PREFIX}.workflow"
# The keys of this provider's config table (plus the shared HTTP ones).
SETTING_KEYS = frozenset(
    {
        "base_url",
        "img2img_workflow",
        "max_concurrency",
        "max_n_per_call",
        "max_side",
        "poll_interval_s",
        "upscale_workflow",
        "websocket",
        "workflow",
        *POOL_KEYS,
    }
)
IMAGE_TYPES = ("output", "temp")  # SaveImage writes "output", PreviewImage "temp"
DEFAULT_BASE_URL = "http://127.0.0.1:8188"


@dataclass(frozen=True)
class ComfyUISettings:
    workflow: str  # API-format JSON text with placeholders
    img2img_workflow: str | None = None
    upscale_workflow: str | None = None  # Upscale: {{init_image}}, {{scale}} (the factor)
    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = field(default=None, repr=False)
    max_n_per_call: int = 1
    poll_interval_s: float = 0.5
    websocket: bool = True
    max_side: int = 2048
    max_concurrency: int = 1
    policy: HttpPolicy = field(default_factory=HttpPolicy)
    # base_urls: a pool of servers (bot.providers.pool); empty for one base_url.
    servers: tuple[ServerSpec, ...] = ()
    health_interval_s: float = 5.0

    def for_server(self, server: ServerSpec) -> ComfyUISettings:
        """One pool member's settings: a refused connection is not retried there, since the
        pool moves the call to another server at once."""
        return replace(
            self,
            base_url=server.url,
            max_concurrency=server.max_concurrency,
            policy=replace(self.policy, connect_retries=0),
            servers=(),
        )

    @classmethod
    def from_mapping(cls, section: Mapping[str, object], env: Mapping[str, str]) -> ComfyUISettings:
        reject_unknown(section, PREFIX, SETTING_KEYS)
        workflow = load_workflow(section, "workflow")
        if workflow is None:
            raise ConfigError(
                f"{PREFIX}.workflow is required: the path of an API-format "
                "workflow JSON with placeholders"
            )
        batch = "{{batch_size}}" in workflow
        concurrency = get_int(section, "max_concurrency", 1, PREFIX, lo=1, hi=16)
        servers = parse_servers(
            section, PREFIX, env, "COMFYUI_BASE_URL", default_concurrency=concurrency
        )
        return cls(
            workflow=workflow,
            img2img_workflow=load_workflow(section, "img2img_workflow"),
            upscale_workflow=load_workflow(section, "upscale_workflow", needs="init_image"),
            base_url=servers[0].url
            if servers
            else get_url(section, "base_url", DEFAULT_BASE_URL, PREFIX, env, "COMFYUI_BASE_URL"),
            api_key=env.get("COMFYUI_API_KEY", "").strip() or None,
            max_n_per_call=get_int(
                section, "max_n_per_call", 4 if batch else 1, PREFIX, lo=1, hi=16 if batch else 1
            ),
            poll_interval_s=get_float(section, "poll_interval_s", 0.5, PREFIX, lo=0.0, hi=10.0),
            websocket=get_bool(section, "websocket", True, PREFIX),
            max_side=get_int(section, "max_side", 2048, PREFIX, lo=256, hi=8192),
            max_concurrency=concurrency,
            policy=HttpPolicy.from_mapping(section, PREFIX),
            servers=servers,
            health_interval_s=parse_health_interval(section, PREFIX),
        )


_MODEL_INPUT = re.compile(
    r"(ckpt|unet|vae|lora|clip\d?|control_net|model|upscale_model|"
    r"style_model|gligen)_name$"
)


def _node_problem(nodes: object) -> tuple[str, str, dict[str, Any]] | None:
    """The first node error: (node id, class type, error dict)."""
    if not isinstance(nodes, dict):
        return None
    for node_id, info in nodes.items():
        if not isinstance(info, dict):
            continue
        for err in info.get("errors") or []:
            if isinstance(err, dict):
                return str(node_id), str(info.get("class_type") or ""), err
    return None


def classify(status: int, body: bytes, headers: httpx.Headers) -> ProviderError:
    """``/prompt`` validation: ``{"error": {type, message, details}, "node_errors": {...}}``.

    The admin wrote the workflow, so the answer names the node and the cause; a model file the
    server does not have is :class:`ModelUnavailable` (every request would fail alike)."""
    data = json_or_none(body)
    message = ""
    problem = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            message = f"{err.get('type', '')}: {err.get('message', '')} {err.get('details', '')}"
        elif isinstance(err, str):
            message = err
        nodes = data.get("node_errors")
        problem = _node_problem(nodes)
        if isinstance(nodes, dict):
            for node_id, info in list(nodes.items())[:3]:
                for e in (info.get("errors") or [])[:2] if isinstance(info, dict) else []:
                    if isinstance(e, dict):
                        message += f"; node {node_id}: {e.get('details') or e.get('message')}"
    text = f"HTTP {status}: {message.strip()[:500]}"
    if problem is None or status >= 500:
        return error_for_status(status, message.strip())
    node_id, class_type, err = problem
    details = str(err.get("details") or err.get("message") or err.get("type") or "")
    extra = err.get("extra_info") if isinstance(err.get("extra_info"), dict) else {}
    assert isinstance(extra, dict)
    input_name = str(extra.get("input_name") or details.split(":", 1)[0]).strip()
    where = f"node {node_id} ({class_type})" if class_type else f"node {node_id}"
    if err.get("type") == "value_not_in_list" and _MODEL_INPUT.search(input_name):
        received = extra.get("received_value")
        if not isinstance(received, str):
            found = re.search(r"'([^']+)' not in", details)
            received = found.group(1) if found else "?"
        return ModelUnavailable(
            text,
            model=received,
            status=status,
            code="value_not_in_list",
            setting=f"{WORKFLOW_SETTING} ({where}, {input_name})",
        )
    cause = re.sub(r" not in \[.*", " is not one the server has", details)[:200]
    return InvalidRequest(
        text,
        status=status,
        code=str(err.get("type") or "") or None,
        user_message=f"ComfyUI rejected the workflow at {where}: {cause}. Your quota was refunded.",
    )


class ComfyUIProvider:
    name = "comfyui"

    def __init__(
        self,
        settings: ComfyUISettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.label = "ComfyUI"
        self._sleep = sleep
        self._client_id = uuid.uuid4().hex
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self._http = HttpClient(
            label=self.label,
            base_url=settings.base_url,
            policy=settings.policy,
            headers=headers,
            classify=classify,
            transport=transport,
            sleep=sleep,
        )
        self._caps = Capabilities(
            img2img=settings.img2img_workflow is not None,
            max_n_per_call=settings.max_n_per_call,
            size_mode="exact",
            size_multiple=8,
            min_side=64,
            max_side=settings.max_side,
            max_pixels=settings.max_side * settings.max_side,
            steps_range=(1, 150),
            cfg_range=(0.0, 30.0),
            seed_max=4294967295,
            samplers=(),
            negative_prompt="{{negative}}" in settings.workflow,
            max_concurrency=settings.max_concurrency,
            upscale="model" if settings.upscale_workflow else "none",
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    async def aclose(self) -> None:
        await self._http.aclose()

    async def check(self) -> dict[str, str]:
        resp = await self._http.check("GET", "/system_stats")
        data = await resp.json()
        system = data.get("system", {}) if isinstance(data, dict) else {}
        version = system.get("comfyui_version", "unknown") if isinstance(system, dict) else "?"
        return {
            "provider": self.label,
            "base_url": self.settings.base_url,
            "version": str(version),
            "img2img": "yes" if self.settings.img2img_workflow else "no",
        }

    async def ping(self) -> None:
        """The pool's health check: ``GET /system_stats``, which every ComfyUI serves (also
        while it runs a workflow). An answer also closes this server's circuit breaker."""
        await self._http.request(
            "GET",
            "/system_stats",
            side_channel=True,
            deadline_s=min(10.0, self.settings.policy.deadline_s),
        )
        self._http.breaker.success()

    async def _upload(self, image: bytes) -> str:
        files: list[tuple[str, FilePart]] = [
            ("image", (f"imagine-{uuid.uuid4().hex}.png", image, "image/png")),
            ("type", (None, "input")),
            ("overwrite", (None, "true")),
        ]
        # Same bytes under a fresh name: uploading twice is harmless, so it may be retried.
        resp = await self._http.request("POST", "/upload/image", files=files, idempotent=True)
        data = await resp.json()
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise ProviderUnavailable("upload answer has no name")
        sub = data.get("subfolder") or ""
        return f"{sub}/{data['name']}" if sub else str(data["name"])

    async def generate(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        try:
            async with asyncio.timeout(self.settings.policy.deadline_s):
                return await self._generate(req, progress)
        except TimeoutError:
            raise ProviderUnavailable("ComfyUI did not finish in time") from None

    async def upscale(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        """The image verb Upscale: the configured upscale workflow on the picked image."""
        if self.settings.upscale_workflow is None or req.edit is None:
            raise ProviderUnavailable("no upscale workflow configured")
        extra = {"scale": req.edit.scale, "denoise": req.strength or 0.0}
        try:
            async with asyncio.timeout(self.settings.policy.deadline_s):
                return await self._generate(req, progress, self.settings.upscale_workflow, extra)
        except TimeoutError:
            raise ProviderUnavailable("ComfyUI did not finish in time") from None

    async def _generate(
        self,
        req: GenerationRequest,
        progress: ProgressCallback | None,
        workflow: str | None = None,  # an image verb's own workflow, with its extra values
        extra: Mapping[str, object] | None = None,
    ) -> GenerationResult:
        template = workflow or self.settings.workflow
        values: dict[str, object] = {
            "prompt": req.prompt,
            "negative": req.negative_prompt or "",
            "seed": req.seed,
            "steps": req.steps if req.steps is not None else 20,
            "cfg": req.cfg if req.cfg is not None else 7.0,
            "width": req.width,
            "height": req.height,
            "denoise": 1.0,
            "batch_size": max(1, req.n),
        }
        if req.init_image is not None:
            if workflow is None and self.settings.img2img_workflow is None:
                raise ProviderUnavailable("no img2img workflow configured")
            template = workflow or self.settings.img2img_workflow or template
            values["init_image"] = await self._upload(req.init_image)
            values["denoise"] = 0.75 if req.strength is None else req.strength
        values.update(extra or {})
        workflow = fill(template, values)
        # A fresh client id per call: ComfyUI sends a client's events to its latest socket.
        client_id = uuid.uuid4().hex
        ws = await self._open_socket(client_id) if self.settings.websocket else None
        try:
            resp = await self._http.request(
                "POST",
                "/prompt",
                json_body={"prompt": workflow, "client_id": client_id},
                idempotent=False,
            )
            data = await resp.json()
            prompt_id = data.get("prompt_id") if isinstance(data, dict) else None
            if not isinstance(prompt_id, str) or not prompt_id:
                raise ProviderUnavailable("ComfyUI did not return a prompt_id")
            if ws is not None and await self._follow(ws, prompt_id, len(workflow), progress):
                entry = await self._history_once(prompt_id) or await self._wait(prompt_id, progress)
            else:
                entry = await self._wait(prompt_id, progress)
        finally:
            if ws is not None:
                await ws.close()
        refs = _output_images(entry)
        if not refs:
            raise ProviderUnavailable("ComfyUI finished without output images")
        blobs = await asyncio.gather(*(self._view(r) for r in refs[: max(1, req.n)]))
        return GenerationResult(
            images=tuple(GeneratedImage(data=b, seed=req.seed + i) for i, b in enumerate(blobs)),
            request_id=prompt_id,
        )

    def _ws_url(self, client_id: str) -> str:
        url = httpx.URL(self.settings.base_url)
        scheme = "wss" if url.scheme == "https" else "ws"
        return str(
            url.copy_with(
                scheme=scheme, path=url.path.rstrip("/") + "/ws", params={"clientId": client_id}
            )
        )

    async def _open_socket(self, client_id: str) -> ClientConnection | None:
        """The progress socket, or None (then /history is polled): a proxy that does not
        pass upgrades, or an old server, must not stop the generation."""
        headers = (
            {"Authorization": f"Bearer {self.settings.api_key}"} if self.settings.api_key else None
        )
        try:
            return await connect(
                self._ws_url(client_id),
                additional_headers=headers,
                open_timeout=self.settings.policy.connect_timeout_s,
                max_size=16 * 1024 * 1024,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            log.info(
                "ComfyUI progress socket unavailable (%s); polling /history instead",
                type(exc).__name__,
            )
            return None

    async def _follow(
        self, ws: ClientConnection, prompt_id: str, nodes: int, progress: ProgressCallback | None
    ) -> bool:
        """Follow the run over the socket until it is done (True) or the socket drops
        (False: the caller polls). An ``execution_error`` raises, naming the node."""
        done: set[str] = set()
        current: str | None = None
        started = False
        try:
            async for raw in ws:
                if isinstance(raw, bytes):
                    continue  # a preview frame
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                kind = msg.get("type") if isinstance(msg, dict) else None
                data = msg.get("data") if isinstance(msg, dict) else None
                if not isinstance(data, dict):
                    continue
                if kind == "status" and not started and progress is not None:
                    info = data.get("status", {})
                    queue = (
                        info.get("exec_info", {}).get("queue_remaining")
                        if isinstance(info, dict)
                        else None
                    )
                    if isinstance(queue, int) and queue > 1:
                        progress(Progress(0.0, f"{queue - 1} ahead in ComfyUI's queue"))
                    continue
                if data.get("prompt_id") != prompt_id:
                    continue
                if kind == "execution_start":
                    started = True
                elif kind == "execution_cached":
                    done.update(str(n) for n in data.get("nodes") or [])
                elif kind == "executing":
                    if current is not None:
                        done.add(current)
                    node = data.get("node")
                    if node is None:
                        return True
                    current = str(node)
                elif kind == "execution_success":
                    return True
                elif kind == "execution_error":
                    raise _socket_error(data)
                elif kind == "execution_interrupted":
                    raise ProviderUnavailable("ComfyUI interrupted the run")
                if progress is not None and kind in ("executing", "execution_cached", "progress"):
                    step = 0.0
                    if (
                        kind == "progress"
                        and isinstance(data.get("max"), int | float)
                        and data["max"]
                    ):
                        step = min(1.0, float(data.get("value") or 0) / float(data["max"]))
                    progress(min(0.95, (len(done) + step) / max(1, nodes)))
        except ConnectionClosed:
            pass
        log.info("ComfyUI progress socket closed before the run finished; polling /history")
        return False

    async def _history_once(self, prompt_id: str) -> dict[str, Any] | None:
        resp = await self._http.request("GET", f"/history/{prompt_id}")
        data = await resp.json()
        entry = data.get(prompt_id) if isinstance(data, dict) else None
        if not isinstance(entry, dict):
            return None
        status = entry.get("status") or {}
        if isinstance(status, dict) and status.get("status_str") == "error":
            raise _execution_error(status)
        return entry

    async def _wait(self, prompt_id: str, progress: ProgressCallback | None) -> dict[str, Any]:
        polls = 0
        while True:
            resp = await self._http.request("GET", f"/history/{prompt_id}")
            data = await resp.json()
            entry = data.get(prompt_id) if isinstance(data, dict) else None
            if isinstance(entry, dict):
                status = entry.get("status") or {}
                if isinstance(status, dict) and status.get("status_str") == "error":
                    raise _execution_error(status)
                if not isinstance(status, dict) or status.get("completed", True):
                    return entry
            polls += 1
            if progress is not None:
                progress(min(0.9, polls / (polls + 10)))
            await self._sleep(self.settings.poll_interval_s)

    async def _view(self, ref: Mapping[str, str]) -> bytes:
        resp = await self._http.request(
            "GET",
            "/view",
            params={
                "filename": ref["filename"],
                "subfolder": ref.get("subfolder", ""),
                "type": ref.get("type", "output"),
            },
        )
        if not resp.content:
            raise ProviderUnavailable("ComfyUI returned an empty image")
        return resp.content


def _output_images(entry: Mapping[str, Any]) -> list[dict[str, str]]:
    """Every image an output node made: SaveImage's ``output`` and PreviewImage's ``temp``
    (a workflow ending in a preview node is a valid one)."""
    outputs = entry.get("outputs")
    refs: list[dict[str, str]] = []
    if not isinstance(outputs, dict):
        return refs
    for node in outputs.values():
        for img in (node.get("images") or []) if isinstance(node, dict) else []:
            kind = img.get("type", "output") if isinstance(img, dict) else None
            if (
                isinstance(img, dict)
                and isinstance(img.get("filename"), str)
                and kind in IMAGE_TYPES
            ):
                refs.append(
                    {
                        "filename": img["filename"],
                        "subfolder": str(img.get("subfolder") or ""),
                        "type": str(kind),
                    }
                )
    return refs


def _failed_at(
    node_id: object, node_type: object, exc_type: object, exc_message: object
) -> ProviderUnavailable:
    where = f"node {node_id} ({node_type})" if node_type else f"node {node_id}"
    # A node that fails while running (missing file, OOM) is the server's problem, not the
    # user's wording; the exception text is for the logs.
    return ProviderUnavailable(
        f"ComfyUI execution failed at {where}: {exc_type}: {str(exc_message)[:300]}",
        user_message=f"ComfyUI failed while running {where}. Your quota was refunded; the "
        "admins can find the cause in the bot's log.",
    )


def _socket_error(data: Mapping[str, Any]) -> ProviderUnavailable:
    return _failed_at(
        data.get("node_id", "?"),
        data.get("node_type"),
        data.get("exception_type", ""),
        data.get("exception_message", ""),
    )


def _execution_error(status: Mapping[str, Any]) -> ProviderError:
    for msg in status.get("messages") or []:
        if (
            isinstance(msg, list)
            and len(msg) == 2
            and msg[0] == "execution_error"
            and isinstance(msg[1], dict)
        ):
            return _socket_error(msg[1])
    return ProviderUnavailable("ComfyUI execution failed")
