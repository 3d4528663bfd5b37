"""Stability AI: v2beta Stable Image (core, ultra, sd3.5) and v1 ``generation`` engines.

The model name picks the API: ``core``, ``ultra`` and the ``sd3.5-*`` names go to v2beta
``stable-image/generate/{core,ultra,sd3}`` (multipart, one image per call, aspect ratios);
anything else is a v1 engine id (``stable-diffusion-xl-1024-v1-0``, ``stable-diffusion-v1-6``)
and goes to ``/v1/generation/{engine}/text-to-image`` (JSON) or ``/image-to-image``
(multipart), up to 10 samples per call, with weighted ``text_prompts``.

Models as Stability serves them today: the SD 3.0 models (``sd3-large``, ``sd3-large-turbo``,
``sd3-medium``) were removed (Stability-AI/stability-sdk f4ce04c, "Remove SD3.0. Add
style_preset to generate models."), ``sd3.5-flash`` was added, and ``style_preset`` is taken
by every generate model (core, ultra, sd3.5). Seed 0 means "random" on both APIs, so a seed
we wrap never lands on 0. Only v1 users depend on ``/v1/engines/list``.

Strength: our requests use the denoise convention (0 keeps the init image). v2beta
``strength`` is the same; v1 ``image_strength`` is the opposite (1 keeps it), so it is
``1 - strength`` there.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from bot.errors import ConfigError
from bot.providers import stability_edits
from bot.providers.base import (
    AuthFailed,
    Capabilities,
    ContentFiltered,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    InvalidRequest,
    ModelUnavailable,
    NotFound,
    ProgressCallback,
    ProviderError,
    ProviderUnavailable,
    QuotaExhausted,
    nearest_aspect,
    nearest_size,
    wrap_seed,
)
from bot.providers.http import (
    FilePart,
    HttpClient,
    HttpPolicy,
    HttpResponse,
    RetryPolicy,
    Sleep,
    b64decode_many,
    error_for_status,
    get_bool,
    get_int,
    get_secret,
    get_str,
    get_url,
    json_or_none,
    reject_unknown,
)
from bot.providers.stability_prompts import _int_or_none, v1_text_prompts, v2_prompt

PREFIX = "providers.stability"
MODEL_SETTING = f"{PREFIX}.model"
# The keys of this provider's config table (plus the shared HTTP ones).
SETTING_KEYS = frozenset(
    {
        "accept_json",
        "base_url",
        "client_id",
        "clip_guidance_preset",
        "max_concurrency",
        "model",
        *stability_edits.SETTING_KEYS,
    }
)
DEFAULT_BASE_URL = "https://api.stability.ai"

STYLE_PRESETS: tuple[str, ...] = (
    "3d-model",
    "analog-film",
    "anime",
    "cinematic",
    "comic-book",
    "digital-art",
    "enhance",
    "fantasy-art",
    "isometric",
    "line-art",
    "low-poly",
    "modeling-compound",
    "neon-punk",
    "origami",
    "photographic",
    "pixel-art",
    "tile-texture",
)
V1_SAMPLERS: tuple[str, ...] = (
    "DDIM",
    "DDPM",
    "K_DPMPP_2M",
    "K_DPMPP_2S_ANCESTRAL",
    "K_DPM_2",
    "K_DPM_2_ANCESTRAL",
    "K_EULER",
    "K_EULER_ANCESTRAL",
    "K_HEUN",
    "K_LMS",
)
CLIP_GUIDANCE_PRESETS: tuple[str, ...] = (
    "NONE",
    "FAST_BLUE",
    "FAST_GREEN",
    "SIMPLE",
    "SLOW",
    "SLOWER",
    "SLOWEST",
)
SDXL_SIZES: tuple[tuple[int, int], ...] = (
    (1024, 1024),
    (1152, 896),
    (896, 1152),
    (1216, 832),
    (832, 1216),
    (1344, 768),
    (768, 1344),
    (1536, 640),
    (640, 1536),
)
ASPECT_RATIOS: tuple[str, ...] = ("21:9", "16:9", "3:2", "5:4", "1:1", "4:5", "2:3", "9:16", "9:21")
SD3_MODELS: tuple[str, ...] = ("sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium", "sd3.5-flash")
# Removed by Stability in 2025, with their successors.
REMOVED_MODELS: dict[str, str] = {
    "sd3-large": "sd3.5-large",
    "sd3-large-turbo": "sd3.5-large-turbo",
    "sd3-medium": "sd3.5-medium",
}
# sd3.5-flash takes no negative prompt (Stability-AI/stability-sdk #314).
NO_NEGATIVE_PROMPT = frozenset({"sd3.5-flash"})
V2_ENDPOINTS: dict[str, str] = {
    "core": "/v2beta/stable-image/generate/core",
    "ultra": "/v2beta/stable-image/generate/ultra",
    **{m: "/v2beta/stable-image/generate/sd3" for m in SD3_MODELS},
}
V2_ALIASES = {"stable-image-core": "core", "stable-image-ultra": "ultra"}
DEFAULT_V1_ENGINES: tuple[str, ...] = ("stable-diffusion-xl-1024-v1-0", "stable-diffusion-v1-6")
V2_SEED_MAX = 4294967294  # v2beta documents 0..4294967294, one less than v1
V1_SEED_MAX = 4294967295
# Stability charges only for a successful generation, so a 500/502/503 may be sent again.
RETRY = RetryPolicy(post_statuses=frozenset({500, 502, 503}))


@dataclass(frozen=True)
class StabilitySettings:
    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    model: str = "core"
    client_id: str = "imagine-bot"
    accept_json: bool = False
    clip_guidance_preset: str | None = None
    max_concurrency: int = 2
    policy: HttpPolicy = field(default_factory=lambda: HttpPolicy(retry=RETRY))
    edits: stability_edits.StabilityEditSettings = field(
        default_factory=stability_edits.StabilityEditSettings
    )

    @classmethod
    def from_mapping(
        cls, section: Mapping[str, object], env: Mapping[str, str]
    ) -> StabilitySettings:
        reject_unknown(section, PREFIX, SETTING_KEYS)
        key = get_secret(section, env, "STABILITY_API_KEY", PREFIX, required=True)
        assert key is not None
        model = get_str(section, "model", "core", PREFIX).strip()
        model = V2_ALIASES.get(model, model)
        if not model:
            raise ConfigError(f"{MODEL_SETTING} must not be empty")
        if model in REMOVED_MODELS:
            raise ConfigError(
                f"{MODEL_SETTING} = {model!r}: Stability removed the SD 3.0 "
                f"models; use {REMOVED_MODELS[model]}"
            )
        clip = get_str(section, "clip_guidance_preset", "", PREFIX).strip().upper() or None
        if clip is not None and clip not in CLIP_GUIDANCE_PRESETS:
            raise ConfigError(
                f"{PREFIX}.clip_guidance_preset must be one of " + ", ".join(CLIP_GUIDANCE_PRESETS)
            )
        return cls(
            api_key=key,
            base_url=get_url(
                section, "base_url", DEFAULT_BASE_URL, PREFIX, env, "STABILITY_API_BASE_URL"
            ),
            model=model,
            client_id=get_str(section, "client_id", "imagine-bot", PREFIX)[:256],
            accept_json=get_bool(section, "accept_json", False, PREFIX),
            clip_guidance_preset=clip,
            max_concurrency=get_int(section, "max_concurrency", 2, PREFIX, lo=1, hi=64),
            policy=HttpPolicy.from_mapping(section, PREFIX, retry=RETRY),
            edits=stability_edits.StabilityEditSettings.from_mapping(section, PREFIX),
        )


# ------------------------------------------------------------------------------ error bodies
def classify(status: int, body: bytes, headers: httpx.Headers) -> ProviderError:
    """v1 bodies are ``{id, name, message}``; v2beta ``{id, name, errors: [...]}``."""
    data = json_or_none(body)
    name = ""
    message = ""
    if isinstance(data, dict):
        name = str(data.get("name") or "")
        if isinstance(data.get("message"), str):
            message = data["message"]
        elif isinstance(data.get("errors"), list):
            message = "; ".join(str(e) for e in data["errors"])
    text = f"HTTP {status} {name}: {message[:300]}".strip()
    if name in ("content_moderation", "invalid_prompts"):
        return ContentFiltered(text, status=status, code=name)
    if status == 402 or name in ("payment_required", "insufficient_balance"):
        return QuotaExhausted(text, status=status, code=name)
    if name == "unauthorized":
        return AuthFailed(text, status=status, code=name)
    if name == "not_found":
        return NotFound(text, status=status, code=name)
    return error_for_status(status, f"{name}: {message}" if name else message, name or None)


def is_sdxl_engine(engine: str) -> bool:
    return "xl-1024" in engine


def capabilities_for(model: str, models: tuple[str, ...], max_concurrency: int = 2) -> Capabilities:
    model = V2_ALIASES.get(model, model)
    if model in V2_ENDPOINTS:
        sd3 = model in SD3_MODELS
        return Capabilities(
            txt2img=True,
            img2img=model != "core",
            max_n_per_call=1,
            size_mode="aspect",
            aspect_ratios=ASPECT_RATIOS,
            steps_range=None,
            cfg_range=(1.0, 10.0) if sd3 else None,
            seed_max=V2_SEED_MAX,
            seed_zero_random=True,
            samplers=(),
            native_styles=STYLE_PRESETS,
            negative_prompt=model not in NO_NEGATIVE_PROMPT,
            weighted_prompts=True,
            models=models,
            max_concurrency=max_concurrency,
        )
    common: dict[str, Any] = {
        "max_n_per_call": 10,
        "steps_range": (10, 50),
        "cfg_range": (0.0, 35.0),
        "seed_max": V1_SEED_MAX,
        "seed_zero_random": True,
        "samplers": V1_SAMPLERS,
        "native_styles": STYLE_PRESETS,
        "weighted_prompts": True,
        "models": models,
        "max_concurrency": max_concurrency,
    }
    if is_sdxl_engine(model):
        return Capabilities(size_mode="preset", sizes=SDXL_SIZES, **common)
    # SD 1.6 and older engines: multiples of 64, each side 320..1536.
    return Capabilities(
        size_mode="exact",
        size_multiple=64,
        min_side=320,
        max_side=1536,
        max_pixels=1536 * 1536,
        **common,
    )


# ---------------------------------------------------------------------------------- provider
class StabilityProvider:
    name = "stability"

    def __init__(
        self,
        settings: StabilitySettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.label = f"Stability AI ({settings.model})"
        self._engines: tuple[str, ...] = DEFAULT_V1_ENGINES
        self._http = HttpClient(
            label="Stability AI",
            base_url=settings.base_url,
            policy=settings.policy,
            headers={
                "Authorization": f"Bearer {settings.api_key}",
                "Stability-Client-ID": settings.client_id,
            },
            classify=classify,
            transport=transport,
            sleep=sleep,
        )
        self._caps = self._compute_caps()
        self._sleep = sleep

    def _compute_caps(self) -> Capabilities:
        models = (*V2_ENDPOINTS, *self._engines)
        caps = capabilities_for(self.settings.model, models, self.settings.max_concurrency)
        limit = stability_edits.MAX_INPUT_PIXELS.get(self.settings.edits.upscaler, 0)
        # v2beta, whatever the model
        return replace(caps, upscale="model", upscale_max_pixels=limit, outpaint=True)

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def _uses_v1(self) -> bool:
        return self.settings.model not in V2_ENDPOINTS

    async def refresh(self) -> None:
        """Read the v1 engines this key can use. The v2beta models are fixed routes, so a
        v2beta deployment does not depend on the (legacy) v1 engines list at all."""
        if self._uses_v1:
            await self._read_engines(self._http.request)

    async def _read_engines(self, call: Callable[..., Awaitable[HttpResponse]]) -> None:
        resp = await call("GET", "/v1/engines/list", headers={"Accept": "application/json"})
        data = await resp.json()
        if not isinstance(data, list):
            raise ProviderUnavailable("engines list is not a list")
        engines = tuple(
            str(e["id"])
            for e in data
            if isinstance(e, dict)
            and e.get("id")
            and str(e.get("type", "PICTURE")).upper() == "PICTURE"
        )
        if engines:
            self._engines = engines
            self._caps = self._compute_caps()

    async def check(self) -> dict[str, str]:
        facts = {"provider": self.label, "base_url": self.settings.base_url}
        # The account balance (and so the key) is the same for both APIs.
        resp = await self._http.check(
            "GET", "/v1/user/balance", headers={"Accept": "application/json"}
        )
        data = await resp.json()
        credits = data.get("credits") if isinstance(data, dict) else None
        facts["balance"] = (
            f"{float(credits):.2f} credits" if isinstance(credits, int | float) else "unknown"
        )
        if self._uses_v1:
            await self._read_engines(self._http.check)
            facts["engines"] = ", ".join(self._engines)
            if self.settings.model not in self._engines:
                facts["warning"] = (
                    f"engine {self.settings.model!r} is not in this key's "
                    f"engines list; change {MODEL_SETTING}"
                )
        facts["model"] = self.settings.model
        return facts

    # ------------------------------------------------------------------------- generate
    async def generate(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        model = V2_ALIASES.get(req.model or self.settings.model, req.model or self.settings.model)
        try:
            if model in V2_ENDPOINTS:
                # v2beta makes one image per call; the core normally splits already.
                caps = capabilities_for(model, ())
                seeds = [wrap_seed(req.seed + i, caps) if req.seed else 0 for i in range(req.n)]
                parts = await asyncio.gather(*(self._v2(req, model, seed) for seed in seeds))
                images = tuple(img for img, _ in parts)
                return GenerationResult(images=images, model=model, request_id=parts[0][1])
            return await self._v1(req, model)
        except (NotFound, InvalidRequest) as exc:
            if model == V2_ALIASES.get(
                self.settings.model, self.settings.model
            ) and _about_the_model(exc):
                # The configured model itself is gone: every request fails until an admin
                # changes the setting.
                raise ModelUnavailable(
                    exc.message,
                    model=model,
                    setting=MODEL_SETTING,
                    status=exc.status,
                    code=exc.code,
                ) from None
            raise

    # ------------------------------------------------------ image verbs (stability_edits)
    async def upscale(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        headers = self._headers(req, "application/json" if self.settings.accept_json else "image/*")
        return await stability_edits.upscale(
            self._http, headers, req, v2_prompt(req), self.settings.edits, self._sleep, progress
        )

    async def outpaint(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        headers = self._headers(req, "application/json" if self.settings.accept_json else "image/*")
        return await stability_edits.outpaint(
            self._http, headers, req, v2_prompt(req), self.settings.edits
        )

    def _headers(self, req: GenerationRequest, accept: str) -> dict[str, str]:
        headers = {"Accept": accept}
        if req.user_ref:
            # Helps Stability talk to us about one abusive user without learning who it is.
            digest = hashlib.sha256(req.user_ref.encode()).hexdigest()[:32]
            headers["Stability-Client-User-ID"] = digest
        return headers

    async def _v2(
        self, req: GenerationRequest, model: str, seed: int
    ) -> tuple[GeneratedImage, str | None]:
        caps = capabilities_for(model, ())
        prompt, negative = v2_prompt(req)
        fields: list[tuple[str, FilePart]] = [("prompt", (None, prompt))]
        if negative and caps.negative_prompt:
            fields.append(("negative_prompt", (None, negative)))
        fields.append(("seed", (None, str(wrap_seed(seed, caps)))))
        fields.append(("output_format", (None, "png")))
        if model in SD3_MODELS:
            fields.append(("model", (None, model)))
            if req.cfg is not None:
                fields.append(("cfg_scale", (None, f"{req.cfg:g}")))
        if req.style in STYLE_PRESETS:
            fields.append(("style_preset", (None, str(req.style))))
        if req.init_image is not None:
            if model in SD3_MODELS:
                fields.append(("mode", (None, "image-to-image")))
            fields.append(("image", ("init.png", req.init_image, "image/png")))
            strength = 0.7 if req.strength is None else req.strength
            fields.append(("strength", (None, f"{min(1.0, max(0.0, strength)):g}")))
        else:
            # aspect_ratio is text-to-image only; with an image the output follows it.
            fields.append(("aspect_ratio", (None, nearest_aspect(req.width, req.height, caps))))
        accept = "application/json" if self.settings.accept_json else "image/*"
        resp = await self._http.request(
            "POST",
            V2_ENDPOINTS[model],
            files=fields,
            headers=self._headers(req, accept),
            idempotent=False,
        )
        request_id = resp.headers.get("x-request-id")
        if resp.content_type.startswith("image/"):
            finish = resp.headers.get("finish-reason", "SUCCESS").upper()
            data = resp.content
            seed_out = _int_or_none(resp.headers.get("seed"))
        else:
            body = await resp.json()
            if not isinstance(body, dict) or not isinstance(body.get("image"), str):
                raise ProviderUnavailable("v2beta answer has no image")
            finish = str(body.get("finish_reason") or "SUCCESS").upper()
            data = (await b64decode_many([body["image"]]))[0]
            seed_out = _int_or_none(body.get("seed"))
        if finish == "ERROR":
            raise ProviderUnavailable("Stability reported a generation error")
        if not data:
            raise ProviderUnavailable("v2beta answer has an empty image")
        return (
            GeneratedImage(
                data=data,
                seed=seed_out if seed_out is not None else seed,
                filtered=finish == "CONTENT_FILTERED",
            ),
            request_id,
        )

    async def _v1(self, req: GenerationRequest, engine: str) -> GenerationResult:
        caps = capabilities_for(engine, ())
        prompts = v1_text_prompts(req)
        seed = wrap_seed(req.seed, caps)
        style = req.style if req.style in STYLE_PRESETS else None
        sampler = req.sampler.upper() if req.sampler else None
        if sampler is not None and sampler not in V1_SAMPLERS:
            sampler = None
        common: dict[str, Any] = {"samples": max(1, min(10, req.n)), "seed": seed}
        if req.cfg is not None:
            common["cfg_scale"] = min(35.0, max(0.0, req.cfg))
        if req.steps is not None:
            common["steps"] = min(50, max(10, req.steps))
        if sampler:
            common["sampler"] = sampler
        if style:
            common["style_preset"] = style
        if self.settings.clip_guidance_preset:
            common["clip_guidance_preset"] = self.settings.clip_guidance_preset
        headers = self._headers(req, "application/json")
        if req.init_image is None:
            # The core already fitted the size for the configured model; this only matters
            # when --model picked another engine (SDXL takes nine fixed sizes).
            width, height = nearest_size(req.width, req.height, caps)
            body = {
                "text_prompts": [{"text": p.text, "weight": p.weight} for p in prompts],
                "width": width,
                "height": height,
                **common,
            }
            resp = await self._http.request(
                "POST",
                f"/v1/generation/{engine}/text-to-image",
                json_body=body,
                headers=headers,
                idempotent=False,
            )
        else:
            strength = 0.65 if req.strength is None else min(1.0, max(0.0, req.strength))
            fields: list[tuple[str, FilePart]] = []
            for i, p in enumerate(prompts):
                fields.append((f"text_prompts[{i}][text]", (None, p.text)))
                fields.append((f"text_prompts[{i}][weight]", (None, f"{p.weight:g}")))
            fields.append(("init_image", ("init.png", req.init_image, "image/png")))
            fields.append(("init_image_mode", (None, "IMAGE_STRENGTH")))
            fields.append(("image_strength", (None, f"{1.0 - strength:.4g}")))
            fields.extend((k, (None, str(v))) for k, v in common.items())
            resp = await self._http.request(
                "POST",
                f"/v1/generation/{engine}/image-to-image",
                files=fields,
                headers=headers,
                idempotent=False,
            )
        data = await resp.json()
        artifacts = data.get("artifacts") if isinstance(data, dict) else None
        if not isinstance(artifacts, list) or not artifacts:
            raise ProviderUnavailable("v1 answer has no artifacts")
        b64s: list[str] = []
        for art in artifacts:
            if not isinstance(art, dict) or not isinstance(art.get("base64"), str):
                raise ProviderUnavailable("v1 artifact without base64")
            b64s.append(art["base64"])
        decoded = await b64decode_many(b64s)
        images: list[GeneratedImage] = []
        for i, (art, blob) in enumerate(zip(artifacts, decoded, strict=True)):
            finish = str(art.get("finishReason") or "SUCCESS").upper()
            if finish == "ERROR":
                raise ProviderUnavailable("Stability reported a generation error")
            seed_out = _int_or_none(art.get("seed"))
            images.append(
                GeneratedImage(
                    data=blob,
                    seed=seed_out if seed_out is not None else (seed + i if seed else None),
                    filtered=finish == "CONTENT_FILTERED",
                )
            )
        return GenerationResult(
            images=tuple(images), model=engine, request_id=resp.headers.get("x-request-id")
        )


_MODEL_FIELD = re.compile(r"HTTP 400:? (?:[a-z_]+: )?model\b")


def _about_the_model(exc: ProviderError) -> bool:
    """A v1 ``not_found`` (unknown engine) or a v2beta 400 about the ``model`` field."""
    if isinstance(exc, NotFound):
        return True
    return exc.status == 400 and _MODEL_FIELD.match(exc.message) is not None
