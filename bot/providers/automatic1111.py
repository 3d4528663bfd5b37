"""AUTOMATIC1111 stable-diffusion-webui (and Forge): ``/sdapi/v1/txt2img`` and ``/img2img``.

Since webui 1.9 the server no longer refuses an unknown sampler: ``get_sampler_and_scheduler``
silently falls back to its default sampler (and an unknown ``scheduler`` to "Automatic"), so
the user would get a different picture than asked for. We therefore check every name
ourselves against ``/sdapi/v1/samplers`` and ``/sdapi/v1/schedulers`` (read once and cached
for ``catalog_ttl_s``), refuse an unknown one with a did-you-mean, and send the separate
``scheduler`` field; a combined legacy name ("DPM++ 2M Karras") becomes sampler + scheduler.
A webui older than 1.9 has no schedulers route: names are checked against its samplers and
no ``scheduler`` is sent.

Seeds come back in ``info.all_seeds`` (``info`` is a JSON *string*); with a returned grid,
images start at ``index_of_first_image``. Optional HTTP basic auth (``--api-auth``) from the
environment.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from bot.errors import ConfigError
from bot.providers import automatic1111_edits
from bot.providers.base import (
    AuthFailed,
    Capabilities,
    CheckFailed,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    InvalidRequest,
    ModelUnavailable,
    NotFound,
    ProgressCallback,
    ProviderError,
    ProviderUnavailable,
    did_you_mean,
    resolve_sampler,
    sampler_spellings,
)
from bot.providers.http import (
    HttpClient,
    HttpPolicy,
    Sleep,
    b64decode_many,
    error_for_status,
    get_float,
    get_int,
    get_str,
    get_url,
    json_or_none,
    reject_unknown,
)
from bot.providers.pool import POOL_KEYS, ServerSpec, parse_health_interval, parse_servers

PREFIX = "providers.automatic1111"
# The keys of this provider's config table (plus the shared HTTP ones).
SETTING_KEYS = frozenset(
    {
        "base_url",
        "catalog_ttl_s",
        "checkpoint",
        "max_concurrency",
        "max_n_per_call",
        "max_side",
        "progress_interval_s",
        "sampler",
        "scheduler",
        *POOL_KEYS,
        *automatic1111_edits.SETTING_KEYS,
    }
)
DEFAULT_BASE_URL = "http://127.0.0.1:7860"


@dataclass(frozen=True)
class Automatic1111Settings:
    base_url: str = DEFAULT_BASE_URL
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    checkpoint: str | None = None
    default_sampler: str | None = None
    default_scheduler: str | None = None
    catalog_ttl_s: float = 600.0
    max_n_per_call: int = 4
    max_side: int = 2048
    max_concurrency: int = 1
    progress_interval_s: float = 1.0
    policy: HttpPolicy = field(default_factory=HttpPolicy)
    # base_urls: a pool of servers (bot.providers.pool); empty for one base_url.
    servers: tuple[ServerSpec, ...] = ()
    health_interval_s: float = 5.0

    def for_server(self, server: ServerSpec) -> Automatic1111Settings:
        """One pool member's settings: a refused connection is not retried there, since the
        pool moves the call to another server at once."""
        return replace(
            self,
            base_url=server.url,
            max_concurrency=server.max_concurrency,
            policy=replace(self.policy, connect_retries=0),
            servers=(),
        )

    upscaler: str = ""  # a name from /sdapi/v1/upscalers for Upscale; empty: none
    outpaint_strength: float = automatic1111_edits.OUTPAINT_STRENGTH

    @classmethod
    def from_mapping(
        cls, section: Mapping[str, object], env: Mapping[str, str]
    ) -> Automatic1111Settings:
        reject_unknown(section, PREFIX, SETTING_KEYS)
        user = env.get("AUTOMATIC1111_USER") or None
        password = env.get("AUTOMATIC1111_PASSWORD") or None
        if (user is None) != (password is None):
            raise ConfigError(
                f"AUTOMATIC1111_USER and AUTOMATIC1111_PASSWORD must be set together (for {PREFIX})"
            )
        if "password" in section:
            raise ConfigError(
                f"{PREFIX}.password: secrets come from the environment (AUTOMATIC1111_PASSWORD)"
            )
        # The webui serialises generations behind one lock; more only queues there.
        concurrency = get_int(section, "max_concurrency", 1, PREFIX, lo=1, hi=16)
        servers = parse_servers(
            section, PREFIX, env, "AUTOMATIC1111_BASE_URL", default_concurrency=concurrency
        )
        return cls(
            base_url=servers[0].url
            if servers
            else get_url(
                section, "base_url", DEFAULT_BASE_URL, PREFIX, env, "AUTOMATIC1111_BASE_URL"
            ),
            username=user,
            password=password,
            checkpoint=get_str(section, "checkpoint", "", PREFIX).strip() or None,
            default_sampler=get_str(section, "sampler", "", PREFIX).strip() or None,
            default_scheduler=get_str(section, "scheduler", "", PREFIX).strip() or None,
            catalog_ttl_s=get_float(section, "catalog_ttl_s", 600.0, PREFIX, lo=0.0, hi=86400.0),
            max_n_per_call=get_int(section, "max_n_per_call", 4, PREFIX, lo=1, hi=16),
            max_side=get_int(section, "max_side", 2048, PREFIX, lo=256, hi=8192),
            max_concurrency=concurrency,
            progress_interval_s=get_float(
                section, "progress_interval_s", 1.0, PREFIX, lo=0.0, hi=60.0
            ),
            policy=HttpPolicy.from_mapping(section, PREFIX),
            servers=servers,
            health_interval_s=parse_health_interval(section, PREFIX),
            upscaler=get_str(section, "upscaler", "", PREFIX).strip(),
            outpaint_strength=get_float(section, "outpaint_strength", 0.85, PREFIX, lo=0.1, hi=1.0),
        )


def classify(status: int, body: bytes, headers: httpx.Headers) -> ProviderError:
    """Webui handler bodies ``{error, detail, body, errors}``; FastAPI 422 ``{detail: [...]}``."""
    data = json_or_none(body)
    detail = ""
    kind = ""
    if isinstance(data, dict):
        kind = str(data.get("error") or "")
        d = data.get("detail")
        if isinstance(d, str):
            detail = d
        elif isinstance(d, list):
            detail = "; ".join(str(x.get("msg", x)) if isinstance(x, dict) else str(x) for x in d)
        if not detail and isinstance(data.get("errors"), str):
            detail = data["errors"]
    text = f"HTTP {status} {kind}: {detail[:300]}"
    if status == 401:
        return AuthFailed(text, status=status, code=kind or None)
    if "not found" in detail.lower() and (
        "sampler" in detail.lower() or "script" in detail.lower()
    ):
        return InvalidRequest(text, status=status, code=kind or None)
    if status == 404:
        return NotFound(text, status=status, code=kind or None)
    if kind == "OutOfMemoryError":
        return ProviderUnavailable(text, status=status, code=kind)
    if status == 500 and "Invalid encoded image" in detail + str(data):
        return InvalidRequest(text, status=status, code=kind or None)
    return error_for_status(status, detail, kind or None)


class Automatic1111Provider:
    name = "automatic1111"

    def __init__(
        self,
        settings: Automatic1111Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.label = "Stable Diffusion webui"
        auth = (
            httpx.BasicAuth(settings.username, settings.password)
            if settings.username and settings.password
            else None
        )
        self._http = HttpClient(
            label=self.label,
            base_url=settings.base_url,
            policy=settings.policy,
            auth=auth,
            classify=classify,
            transport=transport,
            sleep=sleep,
        )
        self._caps = Capabilities(
            max_n_per_call=settings.max_n_per_call,
            size_mode="exact",
            size_multiple=8,
            min_side=64,
            max_side=settings.max_side,
            max_pixels=settings.max_side * settings.max_side,
            steps_range=(1, 150),
            cfg_range=(1.0, 30.0),
            seed_max=4294967295,
            samplers=None,
            negative_prompt=True,
            models=(),
            max_concurrency=settings.max_concurrency,
            upscale="model" if settings.upscaler else "none",
            outpaint=True,  # img2img with a padded canvas and a mask
        )

        self._catalog_at: float | None = None  # monotonic time of the last read
        self._catalog_lock = asyncio.Lock()
        # Scheduler name -> what we send: webui maps both names and labels, we send the name.
        self._scheduler_names: dict[str, str] = {}
        self._checkpoints: set[str] = set()

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    async def aclose(self) -> None:
        await self._http.aclose()

    async def refresh(self, *, check: bool = False) -> None:
        """Read samplers, schedulers (webui 1.9+) and checkpoints into the capabilities."""
        call = self._http.check if check else self._http.request
        samplers_resp, models_resp = await asyncio.gather(
            call("GET", "/sdapi/v1/samplers"), call("GET", "/sdapi/v1/sd-models")
        )
        samplers = await samplers_resp.json()
        models = await models_resp.json()
        schedulers = await self._read_schedulers(check=check)
        entries = (
            [x for x in samplers if isinstance(x, dict) and x.get("name")]
            if isinstance(samplers, list)
            else []
        )
        names = tuple(str(x["name"]) for x in entries)
        aliases = tuple(
            (str(a), str(x["name"]))
            for x in entries
            for a in (x.get("aliases") or [])
            if isinstance(a, str)
        )
        titles = (
            tuple(
                str(m.get("model_name") or m.get("title"))
                for m in models
                if isinstance(m, dict) and (m.get("model_name") or m.get("title"))
            )
            if isinstance(models, list)
            else ()
        )
        # sd_model_checkpoint takes a title ("name.safetensors [hash]") or a model name.
        self._checkpoints = (
            {
                str(m[k])
                for m in models
                if isinstance(m, dict)
                for k in ("title", "model_name")
                if m.get(k)
            }
            if isinstance(models, list)
            else set()
        )
        self._caps = replace(
            self._caps,
            samplers=names or None,
            sampler_aliases=aliases,
            schedulers=schedulers,
            models=titles,
        )
        self._catalog_at = time.monotonic()

    async def _read_schedulers(self, *, check: bool) -> tuple[str, ...] | None:
        """Labels first (what people type), then names and aliases; None before webui 1.9."""
        try:
            resp = await (self._http.check if check else self._http.request)(
                "GET", "/sdapi/v1/schedulers"
            )
        except NotFound:
            return None
        except CheckFailed as exc:
            if isinstance(exc.error, NotFound):
                return None
            raise
        data = await resp.json()
        if not isinstance(data, list):
            return None
        self._scheduler_names = {}
        labels: list[str] = []
        extra: list[str] = []
        for x in data:
            if not isinstance(x, dict) or not isinstance(x.get("name"), str):
                continue
            name = x["name"]
            label = x["label"] if isinstance(x.get("label"), str) else name
            labels.append(label)
            spellings = [name, *(a for a in x.get("aliases") or [] if isinstance(a, str))]
            extra.extend(s for s in spellings if s.lower() != label.lower())
            for spelling in (label, *spellings):
                self._scheduler_names[spelling.lower()] = name
        return (*labels, *extra)

    async def _catalog(self) -> Capabilities:
        """The capabilities with a sampler list no older than ``catalog_ttl_s``."""
        async with self._catalog_lock:
            fresh = (
                self._catalog_at is not None
                and time.monotonic() - self._catalog_at < self.settings.catalog_ttl_s
            )
            if not fresh or self._caps.samplers is None:
                await self.refresh()
        return self._caps

    async def _names(self, req: GenerationRequest) -> tuple[str | None, str | None]:
        """The sampler and scheduler to send, checked against the server's lists: webui
        1.9+ would silently run its default for a name it does not know."""
        sampler = req.sampler or self.settings.default_sampler
        scheduler = req.scheduler or self.settings.default_scheduler
        if sampler is None and scheduler is None:
            return None, None
        caps = await self._catalog()
        if sampler is not None and caps.samplers is not None:
            resolved = resolve_sampler(sampler, caps)
            if resolved is None:
                hint = did_you_mean(sampler, sampler_spellings(caps))
                raise InvalidRequest(
                    f"unknown sampler {sampler!r}",
                    user_message=f"The webui has no sampler '{sampler}'.{hint} Available: "
                    + ", ".join(caps.samplers[:20])
                    + ". Your quota was refunded.",
                )
            sampler = resolved[0]
            scheduler = scheduler or resolved[1]
        if scheduler is not None:
            if caps.schedulers is None:
                # Before 1.9 the schedule is part of the sampler name; there is no field.
                raise InvalidRequest(
                    "this webui has no schedulers",
                    user_message="This webui is older than 1.9 and takes no separate "
                    "scheduler. Your quota was refunded.",
                )
            name = self._scheduler_names.get(scheduler.lower())
            if name is None:
                hint = did_you_mean(scheduler, caps.schedulers)
                raise InvalidRequest(
                    f"unknown scheduler {scheduler!r}",
                    user_message=f"The webui has no scheduler '{scheduler}'.{hint} "
                    "Available: " + ", ".join(caps.schedulers[:20]) + ". Your quota was refunded.",
                )
            scheduler = name
        return sampler, scheduler

    async def check(self) -> dict[str, str]:
        await self.refresh(check=True)
        facts = {
            "provider": self.label,
            "base_url": self.settings.base_url,
            "auth": "basic" if self.settings.username else "none",
            "samplers": ", ".join(self._caps.samplers or ()),
            "schedulers": ", ".join(self._caps.schedulers or ()) or "none (webui < 1.9)",
            "models": ", ".join(self._caps.models),
        }
        try:
            await self._names(GenerationRequest(prompt=""))
        except InvalidRequest as exc:
            facts["warning"] = f"{PREFIX}.sampler/.scheduler: {exc.user_message}".replace(
                " Your quota was refunded.", ""
            )
        return facts

    async def ping(self) -> None:
        """The pool's health check: ``/sdapi/v1/progress`` is on every webui and Forge API
        (also with ``--nowebui``, which has no ``/internal/ping``), cheap, and answered while
        a generation runs. An answer also closes this server's circuit breaker."""
        await self._http.request(
            "GET",
            "/sdapi/v1/progress",
            params={"skip_current_image": "true"},
            side_channel=True,
            deadline_s=min(10.0, self.settings.policy.deadline_s),
        )
        self._http.breaker.success()

    async def _poll_progress(self, progress: ProgressCallback) -> None:
        """The webui answers a generation only when it is done; its ``/progress`` endpoint
        says how far the current one is. Best effort: any failure just stops the polling."""
        while True:
            await asyncio.sleep(self.settings.progress_interval_s)
            try:
                resp = await self._http.request(
                    "GET",
                    "/sdapi/v1/progress",
                    params={"skip_current_image": "true"},
                    side_channel=True,
                )
                data = await resp.json()
            except ProviderError:
                return
            value = data.get("progress") if isinstance(data, dict) else None
            if isinstance(value, int | float) and 0.0 <= value <= 1.0:
                progress(float(value))

    # ------------------------------------------------- image verbs (automatic1111_edits)
    async def upscale(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        return await automatic1111_edits.upscale(self._http, req, self.settings.upscaler)

    async def outpaint(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        sampler, scheduler = await self._names(req)
        extra: dict[str, Any] = {"sampler_name": sampler} if sampler else {}
        extra.update({"scheduler": scheduler} if scheduler else {})
        if checkpoint := req.model or self.settings.checkpoint:
            extra["override_settings"] = {"sd_model_checkpoint": checkpoint}
            extra["override_settings_restore_afterwards"] = True
        strength = self.settings.outpaint_strength
        return await automatic1111_edits.outpaint(self._http, req, extra, strength)

    async def generate(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        body: dict[str, Any] = {
            "prompt": req.prompt,
            "negative_prompt": req.negative_prompt or "",
            "seed": req.seed,
            "batch_size": max(1, req.n),
            "n_iter": 1,
            "width": req.width,
            "height": req.height,
            "send_images": True,
            "save_images": False,
        }
        if req.steps is not None:
            body["steps"] = req.steps
        if req.cfg is not None:
            body["cfg_scale"] = req.cfg
        sampler, scheduler = await self._names(req)
        if sampler:
            body["sampler_name"] = sampler
        if scheduler:
            body["scheduler"] = scheduler
        checkpoint = req.model or self.settings.checkpoint
        if checkpoint and req.model is None:
            # The configured checkpoint: if the server no longer has it, every request fails
            # alike until an admin changes the setting.
            await self._catalog()
            if self._checkpoints and checkpoint not in self._checkpoints:
                raise ModelUnavailable(
                    f"checkpoint {checkpoint!r} is not on the webui",
                    model=checkpoint,
                    setting=f"{PREFIX}.checkpoint",
                )
        if checkpoint:
            # Per-request override, restored afterwards, so users do not flip the server's
            # global model under each other.
            body["override_settings"] = {"sd_model_checkpoint": checkpoint}
            body["override_settings_restore_afterwards"] = True
        if req.init_image is not None:
            import base64

            body["init_images"] = [base64.b64encode(req.init_image).decode("ascii")]
            body["denoising_strength"] = 0.75 if req.strength is None else req.strength
            path = "/sdapi/v1/img2img"
        else:
            path = "/sdapi/v1/txt2img"
        poller = (
            asyncio.create_task(self._poll_progress(progress))
            if progress is not None and self.settings.progress_interval_s > 0
            else None
        )
        try:
            resp = await self._http.request("POST", path, json_body=body, idempotent=False)
        finally:
            if poller is not None:
                poller.cancel()
                await asyncio.gather(poller, return_exceptions=True)
        data = await resp.json()
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise ProviderUnavailable("webui answer has no images")
        info = _parse_info(data.get("info"))
        first = info.get("index_of_first_image", 0)
        first = first if isinstance(first, int) and 0 <= first < len(data["images"]) else 0
        b64s = [s for s in data["images"][first:] if isinstance(s, str)][: max(1, req.n)]
        if not b64s:
            raise ProviderUnavailable("webui answer has no images")
        blobs = await b64decode_many([_strip_data_url(s) for s in b64s])
        seeds = info.get("all_seeds")
        images = tuple(
            GeneratedImage(data=blob, seed=_seed_at(seeds, i, req.seed))
            for i, blob in enumerate(blobs)
        )
        model = info.get("sd_model_name")
        return GenerationResult(images=images, model=str(model) if model else checkpoint)


def _parse_info(raw: object) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def _seed_at(seeds: object, i: int, fallback: int) -> int:
    if isinstance(seeds, list) and i < len(seeds) and isinstance(seeds[i], int):
        return int(seeds[i])
    return fallback + i


def _strip_data_url(s: str) -> str:
    return s.split(",", 1)[1] if s.startswith("data:") and "," in s else s
