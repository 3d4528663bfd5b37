"""The AI Horde: a crowdsourced Stable Diffusion cluster, free with the anonymous key.

Contract (github Haidra-Org/AI-Horde ``horde/apis/v2/stable.py`` and ``horde/apis/models/``,
commit fbd5ed4, 2026-08-06): ``POST /v2/generate/async`` queues a request and answers 202
``{id, kudos, message?, warnings?}``; ``GET /v2/generate/check/{id}`` is the light status
(``finished, processing, restarted, waiting, done, faulted, wait_time, queue_position, kudos,
is_possible``), limited to 10 per second and cached for one second, so we poll it every
``poll_interval_s`` (at least 1 s); ``GET /v2/generate/status/{id}`` carries the images and
is limited to 10 a minute ("you are requested to not retrieve this endpoint often"), so it is
read once, when ``done``; ``DELETE /v2/generate/status/{id}`` cancels, which we send when the
deadline passes, when the job is cancelled, or on any failure while waiting.

Every request sends ``apikey`` (``AI_HORDE_API_KEY``, or the documented anonymous key
``0000000000``) and ``Client-Agent: imagine-bot:<version>:<contact>`` (name:version:contact,
as the Horde asks of integrations). Images are asked inline (``r2: false``: base64 WebP), and
a generation that comes back as a URL is refused: we never download from an address a worker
chose. Seeds are strings in the API; we send ours as a decimal string with
``seed_variation: 1`` and read each generation's ``seed`` back. A censored generation
(``censored``, or ``gen_metadata`` of type ``censorship``) is a filtered image, refunded by
the core. The negative prompt follows ``###``.

Queue position and wait time become progress notes ("#12 in the Horde's queue, about 40 s"),
carried by :class:`~bot.providers.base.Progress`.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from bot.errors import ConfigError
from bot.providers.base import (
    Capabilities,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    ModelUnavailable,
    NotFound,
    Progress,
    ProgressCallback,
    ProviderError,
    ProviderUnavailable,
)
from bot.providers.horde_wire import (
    _KEY_HINT,
    _censored,
    _seed,
    classify,
    horde_prompt,
    queue_note,
)
from bot.providers.http import (
    HttpClient,
    HttpPolicy,
    RetryPolicy,
    Sleep,
    b64decode_many,
    get_bool,
    get_float,
    get_int,
    get_str,
    get_url,
    reject_unknown,
)

log = logging.getLogger(__name__)

PREFIX = "providers.horde"
MODELS_SETTING = f"{PREFIX}.models"
ANONYMOUS_KEY = "0000000000"
DEFAULT_BASE_URL = "https://aihorde.net/api"
SETTING_KEYS = frozenset(
    {
        "base_url",
        "censor_nsfw",
        "contact",
        "max_concurrency",
        "max_n_per_call",
        "max_side",
        "max_steps",
        "models",
        "nsfw",
        "poll_interval_s",
        "slow_workers",
        "trusted_workers",
    }
)
# horde/consts.py KNOWN_SAMPLERS
SAMPLERS: tuple[str, ...] = (
    "k_euler_a",
    "k_euler",
    "k_lms",
    "k_heun",
    "k_dpm_2",
    "k_dpm_2_a",
    "k_dpm_fast",
    "k_dpm_adaptive",
    "k_dpmpp_2s_a",
    "k_dpmpp_2m",
    "k_dpmpp_sde",
    "dpmsolver",
    "DDIM",
    "lcm",
)
SAMPLER_ALIASES: tuple[tuple[str, str], ...] = (
    ("euler a", "k_euler_a"),
    ("euler_a", "k_euler_a"),
    ("euler", "k_euler"),
    ("lms", "k_lms"),
    ("heun", "k_heun"),
    ("dpm++ 2m", "k_dpmpp_2m"),
    ("dpm++ sde", "k_dpmpp_sde"),
    ("dpm++ 2s a", "k_dpmpp_2s_a"),
    ("ddim", "DDIM"),
)
MIN_POLL_S = 1.0  # the check endpoint is cached for one second: polling faster learns nothing
# A 500 may have queued the request (and reserved kudos); 502/503 come from the Horde's edge
# before it (Cloudflare, maintenance), so only those are sent again.
RETRY = RetryPolicy(post_statuses=frozenset({502, 503}))


def _version() -> str:
    try:
        return importlib.metadata.version("imagine-bot")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def get_models(section: Mapping[str, object]) -> tuple[str, ...]:
    value = section.get("models", [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(
            f"{MODELS_SETTING} must be a list of Horde model names, e.g. "
            '["AlbedoBase XL (SDXL)"] (empty: any model a worker has)'
        )
    return tuple(v.strip() for v in value)


@dataclass(frozen=True)
class HordeSettings:
    api_key: str = field(default=ANONYMOUS_KEY, repr=False)
    base_url: str = DEFAULT_BASE_URL
    models: tuple[str, ...] = ()
    contact: str = "self-hosted"
    poll_interval_s: float = 3.0
    max_n_per_call: int = 4
    max_side: int = 1024
    max_steps: int = 50
    nsfw: bool = False
    censor_nsfw: bool = True
    trusted_workers: bool = False
    slow_workers: bool = True
    max_concurrency: int = 2
    policy: HttpPolicy = field(default_factory=lambda: HttpPolicy(retry=RETRY, deadline_s=600))

    @property
    def anonymous(self) -> bool:
        return self.api_key == ANONYMOUS_KEY

    @property
    def client_agent(self) -> str:
        return f"imagine-bot:{_version()}:{self.contact}"

    @classmethod
    def from_mapping(cls, section: Mapping[str, object], env: Mapping[str, str]) -> HordeSettings:
        reject_unknown(section, PREFIX, SETTING_KEYS)
        if "api_key" in section:
            raise ConfigError(
                f"{PREFIX}.api_key: keys come from the environment "
                "(AI_HORDE_API_KEY), never from the config file"
            )
        contact = get_str(section, "contact", "self-hosted", PREFIX).strip() or "self-hosted"
        if ":" in contact:
            raise ConfigError(
                f"{PREFIX}.contact must not contain ':' (the Client-Agent is name:version:contact)"
            )
        max_side = get_int(section, "max_side", 1024, PREFIX, lo=64, hi=3072)
        if max_side % 64:
            raise ConfigError(f"{PREFIX}.max_side must be a multiple of 64")
        return cls(
            api_key=env.get("AI_HORDE_API_KEY", "").strip() or ANONYMOUS_KEY,
            base_url=get_url(
                section, "base_url", DEFAULT_BASE_URL, PREFIX, env, "AI_HORDE_BASE_URL"
            ),
            models=get_models(section),
            contact=contact,
            poll_interval_s=get_float(
                section, "poll_interval_s", 3.0, PREFIX, lo=MIN_POLL_S, hi=60.0
            ),
            max_n_per_call=get_int(section, "max_n_per_call", 4, PREFIX, lo=1, hi=20),
            max_side=max_side,
            # Above 50 steps (or large sizes) the Horde wants kudos up front.
            max_steps=get_int(section, "max_steps", 50, PREFIX, lo=1, hi=500),
            nsfw=get_bool(section, "nsfw", False, PREFIX),
            censor_nsfw=get_bool(section, "censor_nsfw", True, PREFIX),
            trusted_workers=get_bool(section, "trusted_workers", False, PREFIX),
            slow_workers=get_bool(section, "slow_workers", True, PREFIX),
            max_concurrency=get_int(section, "max_concurrency", 2, PREFIX, lo=1, hi=20),
            policy=HttpPolicy.from_mapping(section, PREFIX, retry=RETRY, deadline_s=600),
        )


class HordeProvider:
    name = "horde"

    def __init__(
        self,
        settings: HordeSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.label = "the AI Horde" + (" (anonymous)" if settings.anonymous else "")
        self._sleep = sleep
        self._http = HttpClient(
            label="AI Horde",
            base_url=settings.base_url,
            policy=settings.policy,
            headers={"apikey": settings.api_key, "Client-Agent": settings.client_agent},
            classify=classify,
            transport=transport,
            sleep=sleep,
        )
        self._cancels: set[asyncio.Task[None]] = set()
        side = settings.max_side
        self._caps = Capabilities(
            txt2img=True,
            img2img=True,
            max_n_per_call=settings.max_n_per_call,
            size_mode="exact",
            size_multiple=64,
            min_side=64,
            max_side=side,
            max_pixels=side * side,
            steps_range=(1, settings.max_steps),
            cfg_range=(0.0, 100.0),
            seed_max=4294967295,
            samplers=SAMPLERS,
            sampler_aliases=SAMPLER_ALIASES,
            negative_prompt=True,
            weighted_prompts=True,
            models=settings.models,
            max_concurrency=settings.max_concurrency,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    async def aclose(self) -> None:
        if self._cancels:
            await asyncio.gather(*self._cancels, return_exceptions=True)
        await self._http.aclose()

    # ----------------------------------------------------------------------------- models
    async def _active_models(self, *, check: bool = False) -> list[dict[str, Any]]:
        call = self._http.check if check else self._http.request
        resp = await call("GET", "/v2/status/models", params={"type": "image", "min_count": "1"})
        data = await resp.json()
        rows = (
            [m for m in data if isinstance(m, dict) and isinstance(m.get("name"), str)]
            if isinstance(data, list)
            else []
        )
        return sorted(rows, key=lambda m: -float(m.get("count") or 0))

    async def refresh(self) -> None:
        """Learn which models workers serve now, so ``--model`` is checked before charging.
        A configured list wins: the admin chose those."""
        if self.settings.models:
            return
        names = tuple(m["name"] for m in await self._active_models())
        if names:
            self._caps = Capabilities(**{**self._caps.__dict__, "models": names})

    async def check(self) -> dict[str, str]:
        facts = {
            "provider": self.label,
            "base_url": self.settings.base_url,
            "client_agent": self.settings.client_agent,
        }
        resp = await self._http.check("GET", "/v2/find_user")
        user = await resp.json()
        if isinstance(user, dict):
            kudos = user.get("kudos")
            facts["account"] = (
                f"{user.get('username', '?')}, {kudos:g} kudos"
                if isinstance(kudos, int | float)
                else str(user.get("username", "?"))
            )
        if self.settings.anonymous:
            facts["key"] = f"anonymous ({ANONYMOUS_KEY}): lowest priority; {_KEY_HINT}"
        active = await self._active_models(check=True)
        facts["models"] = (
            ", ".join(f"{m['name']} ({m.get('count', 0)} workers)" for m in active[:8])
            or "none served right now"
        )
        served = {m["name"] for m in active}
        missing = [m for m in self.settings.models if m not in served]
        if missing:
            facts["warning"] = (
                f"no worker serves {', '.join(missing)} right now; check {MODELS_SETTING}"
            )
        return facts

    # --------------------------------------------------------------------------- generate
    def _body(self, req: GenerationRequest) -> dict[str, Any]:
        n = max(1, min(req.n, self._caps.max_n_per_call))
        params: dict[str, Any] = {
            "width": req.width,
            "height": req.height,
            "n": n,
            "seed": str(req.seed),
            "seed_variation": 1,
        }
        if req.steps is not None:
            params["steps"] = req.steps
        if req.cfg is not None:
            params["cfg_scale"] = round(req.cfg, 2)  # the Horde refuses more decimals
        if req.sampler is not None:
            params["sampler_name"] = req.sampler
        if req.scheduler is not None and req.scheduler.lower() == "karras":
            params["karras"] = True
        body: dict[str, Any] = {
            "prompt": horde_prompt(req),
            "params": params,
            "nsfw": self.settings.nsfw,
            "censor_nsfw": self.settings.censor_nsfw,
            "trusted_workers": self.settings.trusted_workers,
            "slow_workers": self.settings.slow_workers,
            "r2": False,  # inline base64: we never fetch a URL a worker chose
            "shared": False,
        }
        models = [req.model] if req.model else list(self.settings.models)
        if models:
            body["models"] = models
        if req.init_image is not None:
            import base64

            body["source_image"] = base64.b64encode(req.init_image).decode("ascii")
            body["source_processing"] = "img2img"
            params["denoising_strength"] = round(
                min(1.0, max(0.01, 0.75 if req.strength is None else req.strength)), 2
            )
        return body

    def _configured_models_gone(self, message: str) -> ModelUnavailable:
        return ModelUnavailable(
            message, model=", ".join(self.settings.models), setting=MODELS_SETTING
        )

    async def generate(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        body = self._body(req)
        try:
            resp = await self._http.request(
                "POST", "/v2/generate/async", json_body=body, idempotent=False
            )
        except NotFound as exc:
            if req.model is None and self.settings.models:
                raise self._configured_models_gone(exc.message) from None
            raise
        queued = await resp.json()
        request_id = queued.get("id") if isinstance(queued, dict) else None
        if not isinstance(request_id, str) or not request_id:
            raise ProviderUnavailable("the Horde did not return a request id")
        try:
            async with asyncio.timeout(self.settings.policy.deadline_s):
                await self._wait(request_id, req, progress)
            full = await (
                await self._http.request("GET", f"/v2/generate/status/{request_id}")
            ).json()
        except TimeoutError:
            await self._cancel(request_id)
            raise ProviderUnavailable(
                f"the Horde did not finish {request_id} in {self.settings.policy.deadline_s:g}s",
                user_message="The AI Horde did not finish in time (its queue is long right "
                "now). Your quota was refunded; try again later.",
            ) from None
        except BaseException:
            # Cancelled (the job's deadline, shutdown) or failed: do not leave the request
            # queued on the Horde, where it would still use workers and kudos.
            await self._cancel(request_id)
            raise
        return await self._result(full, req, request_id)

    async def _wait(
        self, request_id: str, req: GenerationRequest, progress: ProgressCallback | None
    ) -> None:
        n = max(1, min(req.n, self._caps.max_n_per_call))
        while True:
            resp = await self._http.request("GET", f"/v2/generate/check/{request_id}")
            status = await resp.json()
            if not isinstance(status, dict):
                raise ProviderUnavailable("the Horde's check answer is not an object")
            if status.get("faulted"):
                raise ProviderUnavailable(
                    f"the Horde reports request {request_id} faulted",
                    user_message="The AI Horde reported a fault with this request. Your quota "
                    "was refunded; try again.",
                )
            if status.get("is_possible") is False:
                if req.model is None and self.settings.models:
                    served = {m["name"] for m in await self._active_models()}
                    if not served & set(self.settings.models):
                        # No worker has any configured model: every request would fail
                        # alike until an admin changes the setting.
                        raise self._configured_models_gone(
                            f"no Horde worker serves {', '.join(self.settings.models)}"
                        )
                models = ", ".join(self._body(req).get("models", [])) or "any model"
                raise ProviderUnavailable(
                    f"no Horde worker can serve {request_id}",
                    user_message=(
                        "No AI Horde worker can make this right now "
                        f"({models}, {req.width}x{req.height}). Your quota was "
                        "refunded; try a smaller size or another model."
                    ),
                )
            if status.get("done"):
                return
            if progress is not None:
                finished = status.get("finished")
                done = float(finished) / n if isinstance(finished, int | float) else 0.0
                progress(Progress(min(0.95, done), queue_note(status)))
            await self._sleep(self.settings.poll_interval_s)

    async def _cancel(self, request_id: str) -> None:
        """Best effort, and never cut short by the cancellation that caused it."""

        async def delete() -> None:
            try:
                await self._http.request(
                    "DELETE",
                    f"/v2/generate/status/{request_id}",
                    idempotent=True,
                    side_channel=True,
                    deadline_s=10,
                )
            except ProviderError as exc:
                log.info("could not cancel Horde request %s: %s", request_id, type(exc).__name__)

        task = asyncio.ensure_future(delete())
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)
        # Cancelled again while waiting? The DELETE goes on in the background (aclose()
        # waits for it) and the cancellation propagates.
        await asyncio.shield(task)

    async def _result(
        self, full: object, req: GenerationRequest, request_id: str
    ) -> GenerationResult:
        gens = full.get("generations") if isinstance(full, dict) else None
        if not isinstance(gens, list) or not gens:
            raise ProviderUnavailable(f"the Horde finished {request_id} without images")
        blobs: list[str] = []
        for g in gens:
            img = g.get("img") if isinstance(g, dict) else None
            if not isinstance(img, str) or not img:
                raise ProviderUnavailable("a Horde generation has no image")
            if img.startswith(("http://", "https://")):
                # We asked for r2: false; a link would make us fetch from an address a
                # worker or a CDN chose. Refuse rather than download.
                raise ProviderUnavailable("the Horde sent an image link instead of the image")
            blobs.append(img)
        decoded = await b64decode_many(blobs)
        images: list[GeneratedImage] = []
        for i, (g, data) in enumerate(zip(gens, decoded, strict=True)):
            images.append(
                GeneratedImage(
                    data=data, seed=_seed(g.get("seed"), req.seed + i), filtered=_censored(g)
                )
            )
        model = next((str(g["model"]) for g in gens if isinstance(g.get("model"), str)), None)
        return GenerationResult(images=tuple(images), model=model, request_id=request_id)


__all__ = [
    "ANONYMOUS_KEY",
    "HordeProvider",
    "HordeSettings",
    "classify",
    "horde_prompt",
    "queue_note",
]
