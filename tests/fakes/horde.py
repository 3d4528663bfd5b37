"""A strict fake of the AI Horde's image API (``/api/v2``), in the shapes of its code.

Source: github Haidra-Org/AI-Horde at fbd5ed465e5daadec3d3e9997957af047cee9d73:
``horde/apis/v2/stable.py`` (routes, rate limits), ``horde/apis/models/stable_v2.py`` and
``v2.py`` (request and answer models), ``horde/exceptions.py`` (``{"message", "rc"}``
errors), ``horde/consts.py`` (samplers). What it checks, as the Horde does:

- ``apikey`` header (a registered key or the anonymous ``0000000000``; else 401
  ``InvalidAPIKey``); ``Client-Agent`` is recorded (``client_agents``);
- the payload against ``GenerationInputStable`` (flask-restx ``validate=True``: wrong types or
  ranges are a 400 "Input payload validation failed" with ``errors``): prompt, ``params``
  width/height multiples of 64 in 64..3072, steps 1..500, n 1..20, cfg_scale 0..100 with at
  most two decimals (``BadCFGDecimals``), known ``sampler_name``, ``seed`` a *string*,
  denoising_strength 0.01..1;
- anonymous requests over 1024x1024 pixels or 50 steps: 403 ``KudosUpfront``; more waiting
  requests than the key may have: 429 ``TooManyPrompts``;
- ``/generate/check/{id}`` limited to 10 a second and ``/generate/status/{id}`` (GET and
  DELETE together) to 10 a minute, per path, like the Horde's limiter (429);
- with ``r2`` true (its default) the images are download links; with ``r2: false`` inline
  base64 WebP.

Scripting: ``plan`` is the sequence of light statuses a new request goes through (one per
check; the last repeats); ``censor`` the indexes answered censored; ``faulted``/``impossible``
make the next request fault or be impossible; ``never_done`` keeps it waiting.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image

from tests.fakes import FakeServer, Handler, RecordedRequest

ANONYMOUS_KEY = "0000000000"
KNOWN_SAMPLERS = {
    "k_lms",
    "k_heun",
    "k_euler",
    "k_euler_a",
    "k_dpm_2",
    "k_dpm_2_a",
    "k_dpm_fast",
    "k_dpm_adaptive",
    "k_dpmpp_2s_a",
    "k_dpmpp_2m",
    "dpmsolver",
    "k_dpmpp_sde",
    "DDIM",
    "lcm",
}
ACTIVE_MODELS = [
    {
        "name": "AlbedoBase XL (SDXL)",
        "count": 14,
        "performance": 1.9e6,
        "queued": 4.1e6,
        "jobs": 11.0,
        "eta": 38,
        "type": "image",
    },
    {
        "name": "Deliberate",
        "count": 9,
        "performance": 1.1e6,
        "queued": 1.3e6,
        "jobs": 6.0,
        "eta": 21,
        "type": "image",
    },
    {
        "name": "Flux.1-Schnell fp8 (Compact)",
        "count": 4,
        "performance": 4.2e5,
        "queued": 2.8e6,
        "jobs": 5.0,
        "eta": 95,
        "type": "image",
    },
    {
        "name": "stable_diffusion",
        "count": 3,
        "performance": 3.0e5,
        "queued": 2.0e5,
        "jobs": 2.0,
        "eta": 12,
        "type": "image",
    },
]
TOP_LEVEL = {
    "prompt",
    "params",
    "nsfw",
    "trusted_workers",
    "validated_backends",
    "slow_workers",
    "extra_slow_workers",
    "censor_nsfw",
    "workers",
    "worker_blacklist",
    "models",
    "source_image",
    "source_processing",
    "source_mask",
    "extra_source_images",
    "r2",
    "shared",
    "replacement_filter",
    "dry_run",
    "proxied_account",
    "disable_batching",
    "allow_downgrade",
    "webhook",
    "style",
}
DEFAULT_PLAN: list[dict[str, Any]] = [
    {"waiting": 1, "processing": 0, "queue_position": 12, "wait_time": 40},
    {"waiting": 0, "processing": 1, "queue_position": 0, "wait_time": 8},
    {"done": True},
]


def webp(seed: str, index: int) -> bytes:
    """A small real WebP, different per seed, as the Horde's workers send."""
    h = abs(hash((seed, index)))
    im = Image.new("RGB", (8, 8), (h % 256, (h >> 8) % 256, (h >> 16) % 256))
    buf = io.BytesIO()
    im.save(buf, "WEBP", quality=80)
    return buf.getvalue()


def horde_error(
    status: int, rc: str, message: str, errors: dict[str, str] | None = None
) -> web.Response:
    body: dict[str, Any] = {"message": message, "rc": rc}
    if errors is not None:
        body["errors"] = errors
    return web.json_response(body, status=status)


@dataclass
class WaitingPrompt:
    id: str
    key: str
    n: int
    seeds: list[str]
    models: list[str]
    r2: bool
    plan: list[dict[str, Any]]
    censor: set[int] = field(default_factory=set)
    faulted: bool = False
    impossible: bool = False
    checks: int = 0
    cancelled: bool = False

    def lite(self) -> dict[str, Any]:
        step = dict(self.plan[min(self.checks, len(self.plan) - 1)])
        done = bool(step.get("done")) and not self.faulted and not self.cancelled
        finished = self.n if done else int(step.get("finished", 0))
        return {
            "finished": finished,
            "processing": int(step.get("processing", 0)),
            "restarted": 0,
            "waiting": 0 if done else int(step.get("waiting", 0)),
            "done": done or self.cancelled,
            "faulted": self.faulted,
            "wait_time": 0 if done else int(step.get("wait_time", 0)),
            "queue_position": 0 if done else int(step.get("queue_position", 0)),
            "kudos": 10.0 * self.n,
            "is_possible": not self.impossible,
        }


class HordeFake(FakeServer):
    """Routes live under ``/api/v2``; point ``AI_HORDE_BASE_URL`` at ``base_url + "/api"``."""

    def __init__(self, keys: dict[str, str] | None = None, *, max_waiting: int = 5) -> None:
        super().__init__()
        # key -> username; the anonymous key always works.
        self.keys = {ANONYMOUS_KEY: "Anonymous#0", **(keys or {})}
        self.max_waiting = max_waiting
        self.plan = [dict(s) for s in DEFAULT_PLAN]
        self.censor: set[int] = set()
        self.faulted = False
        self.impossible = False
        self.never_done = False
        self.active_models = [dict(m) for m in ACTIVE_MODELS]
        self.prompts: dict[str, WaitingPrompt] = {}
        self.client_agents: list[str] = []
        self.cancelled: list[str] = []
        self._hits: dict[str, list[float]] = defaultdict(list)
        self.submitted = asyncio.Event()  # set at the first queued request
        self.checked = asyncio.Event()  # set at the first status check

    @property
    def api_url(self) -> str:
        return self.base_url + "/api"

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/api/v2/generate/async", self.generate_async),
            ("GET", "/api/v2/generate/check/{id}", self.check),
            ("GET", "/api/v2/generate/status/{id}", self.status),
            ("DELETE", "/api/v2/generate/status/{id}", self.cancel),
            ("GET", "/api/v2/status/models", self.models),
            ("GET", "/api/v2/find_user", self.find_user),
            ("GET", "/api/v2/status/heartbeat", self.heartbeat),
        ]

    # ---------------------------------------------------------------------------- helpers
    def _agent(self, rec: RecordedRequest) -> None:
        self.client_agents.append(rec.headers.get("Client-Agent", "unknown:0:unknown"))

    def _limited(self, key: str, per: float, limit: int) -> bool:
        now = time.monotonic()
        hits = [t for t in self._hits[key] if now - t < per]
        hits.append(now)
        self._hits[key] = hits
        return len(hits) > limit

    def _user(self, rec: RecordedRequest) -> str | None:
        key = rec.headers.get("apikey")
        return key if key in self.keys else None

    def waiting_for(self, key: str) -> int:
        return sum(
            1
            for wp in self.prompts.values()
            if wp.key == key and not wp.cancelled and not wp.lite()["done"]
        )

    # ----------------------------------------------------------------------------- routes
    async def generate_async(
        self, request: web.Request, rec: RecordedRequest
    ) -> web.StreamResponse:
        self._agent(rec)
        key = self._user(rec)
        if key is None:
            return horde_error(
                401,
                "InvalidAPIKey",
                "No user matching sent API Key. Have "
                "you remembered to register at https://stablehorde.net/register ?",
            )
        body = rec.json
        errors = validate_payload(body)
        if errors:
            self.violations.append(f"POST {request.path}: {errors}")
            return horde_error(400, "BadRequest", "Input payload validation failed", errors)
        assert isinstance(body, dict)
        params = body.get("params") or {}
        cfg = params.get("cfg_scale")
        if cfg is not None and round(cfg, 2) != cfg:
            return horde_error(
                400, "BadCFGDecimals", "cfg_scale must be rounded to 2 decimal places"
            )
        steps = int(params.get("steps", 30))
        pixels = int(params.get("width", 512)) * int(params.get("height", 512))
        if key == ANONYMOUS_KEY and (pixels > 1024 * 1024 or steps > 50):
            return horde_error(
                403,
                "KudosUpfront",
                "Due to heavy demand, for requests over "
                "1024x1024 or over 50 steps the client needs to already have "
                "the required kudos. This request requires 28 kudos to fulfil.",
            )
        n = int(params.get("n", 1))
        if self.waiting_for(key) + 1 > self.max_waiting:
            return horde_error(
                429,
                "TooManyPrompts",
                f"Parallel requests "
                f"({self.waiting_for(key) + 1}) exceeded user limit "
                f"({self.max_waiting}).",
            )
        seed = params.get("seed")
        variation = int(params.get("seed_variation", 1))
        base = int(seed) if isinstance(seed, str) and seed.isdigit() else 1_000_000_007
        seeds = [str(base + i * variation) for i in range(n)]
        models = list(body.get("models") or [])
        served = {m["name"] for m in self.active_models}
        impossible = self.impossible or bool(models and not set(models) & served)
        plan = [dict(s) for s in self.plan]
        if self.never_done:
            plan = [{"waiting": 1, "queue_position": 40, "wait_time": 600}]
        wp = WaitingPrompt(
            str(uuid.uuid4()),
            key,
            n,
            seeds,
            models,
            r2=bool(body.get("r2", True)),
            plan=plan,
            censor=set(self.censor),
            faulted=self.faulted,
            impossible=impossible,
        )
        self.prompts[wp.id] = wp
        self.submitted.set()
        answer: dict[str, Any] = {"id": wp.id, "kudos": 10.0 * n}
        if impossible:
            answer["message"] = (
                "Warning: No available workers can fulfill this request. It "
                "will expire in 20 minutes unless a worker appears."
            )
            answer["warnings"] = [{"code": "NoAvailableWorker", "message": answer["message"]}]
        return web.json_response(answer, status=202)

    async def check(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        self._agent(rec)
        if self._limited(request.path, 1.0, 10):
            return horde_error(429, "TooManyRequests", "10 per 1 second")
        wp = self.prompts.get(request.match_info["id"])
        if wp is None:
            return horde_error(
                404,
                "RequestNotFound",
                f"Image Waiting Prompt (Check) with ID '{request.match_info['id']}' not found.",
            )
        status = wp.lite()
        wp.checks += 1
        self.checked.set()
        return web.json_response(status)

    def _full(self, wp: WaitingPrompt) -> dict[str, Any]:
        status = wp.lite()
        gens = []
        if status["finished"]:
            import base64

            for i in range(status["finished"]):
                censored = i in wp.censor
                img = (
                    f"https://r2.example.invalid/{wp.id}/{i}.webp"
                    if wp.r2
                    else base64.b64encode(webp(wp.seeds[i], i)).decode()
                )
                gens.append(
                    {
                        "img": img,
                        "seed": wp.seeds[i],
                        "id": str(uuid.uuid4()),
                        "censored": censored,
                        "worker_id": str(uuid.UUID(int=i + 1)),
                        "worker_name": f"worker-{i}",
                        "model": (wp.models or ["AlbedoBase XL (SDXL)"])[0],
                        "state": "censored" if censored else "ok",
                        "gen_metadata": (
                            [{"type": "censorship", "value": "nsfw"}] if censored else []
                        ),
                    }
                )
        return {**status, "generations": gens, "shared": False}

    async def status(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        self._agent(rec)
        if self._limited(request.path, 60.0, 10):
            return horde_error(429, "TooManyRequests", "10 per 1 minute")
        wp = self.prompts.get(request.match_info["id"])
        if wp is None:
            return horde_error(
                404,
                "RequestNotFound",
                f"Image Waiting Prompt (Status) with ID '{request.match_info['id']}' not found.",
            )
        return web.json_response(self._full(wp))

    async def cancel(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        self._agent(rec)
        if self._limited(request.path, 60.0, 10):
            return horde_error(429, "TooManyRequests", "10 per 1 minute")
        wp = self.prompts.get(request.match_info["id"])
        if wp is None:
            return horde_error(
                404,
                "RequestNotFound",
                f"Image Waiting Prompt (Delete) with ID '{request.match_info['id']}' not found.",
            )
        full = self._full(wp)
        wp.cancelled = True
        self.cancelled.append(wp.id)
        return web.json_response(full)

    async def models(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        self._agent(rec)
        if rec.query.get("type", "image") != "image":
            return web.json_response([])
        least = int(rec.query.get("min_count", "0") or 0)
        return web.json_response([m for m in self.active_models if m["count"] >= least])

    async def find_user(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        self._agent(rec)
        key = self._user(rec)
        if key is None:
            return horde_error(404, "UserNotFound", "User with API Key not found.")
        return web.json_response(
            {
                "username": self.keys[key],
                "id": 0 if key == ANONYMOUS_KEY else 4242,
                "kudos": 0.0 if key == ANONYMOUS_KEY else 1234.5,
            }
        )

    async def heartbeat(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        return web.json_response({"message": "OK", "version": "5.1.5"})


def validate_payload(body: object) -> dict[str, str]:
    """``GenerationInputStable`` as flask-restx checks it (the errors, by field)."""
    from tests.contracts import errors as schema_errors

    problems = schema_errors("horde/generation_input.schema.json", "GenerationInputStable", body)
    out: dict[str, str] = {}
    for p in problems:
        where, _, what = p.partition(": ")
        out[where.replace("/", ".")] = what
    return out
