"""OpenAI Images API: ``/images/generations`` (JSON) and ``/images/edits`` (multipart).

Per-model rules: GPT image models take ``n`` 1..10, sizes 1024x1024 / 1536x1024 / 1024x1536,
quality low|medium|high|auto, and always answer base64 (they do not take
``response_format``); ``dall-e-3`` takes ``n=1`` only, sizes 1024x1024 / 1792x1024 /
1024x1792, quality standard|hd, and needs ``response_format=b64_json``; it has no edits. No
seeds, no negative prompt, no steps/cfg: capabilities say so, so the core tells the user.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx

from bot.errors import ConfigError
from bot.providers.base import (
    AuthFailed,
    Capabilities,
    ContentFiltered,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    NotFound,
    ProgressCallback,
    ProviderError,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
    nearest_size,
)
from bot.providers.http import (
    FilePart,
    HttpClient,
    HttpPolicy,
    Sleep,
    b64decode_many,
    error_for_status,
    get_int,
    get_secret,
    get_str,
    get_url,
    json_or_none,
    reject_unknown,
)

PREFIX = "providers.openai"
# The keys of this provider's config table (plus the shared HTTP ones).
SETTING_KEYS = frozenset({
    "base_url", "max_concurrency", "model", "organization", "quality",
})
DEFAULT_BASE_URL = "https://api.openai.com/v1"
GPT_IMAGE_SIZES = ((1024, 1024), (1536, 1024), (1024, 1536))
DALLE3_SIZES = ((1024, 1024), (1792, 1024), (1024, 1792))
GPT_IMAGE_QUALITIES = ("low", "medium", "high", "auto")
DALLE3_QUALITIES = ("standard", "hd")


def is_gpt_image(model: str) -> bool:
    return model.startswith("gpt-image")


@dataclass(frozen=True)
class OpenAISettings:
    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    model: str = "gpt-image-1"
    quality: str = "auto"
    organization: str | None = None
    max_concurrency: int = 2
    policy: HttpPolicy = field(default_factory=HttpPolicy)

    @classmethod
    def from_mapping(cls, section: Mapping[str, object],
                     env: Mapping[str, str]) -> OpenAISettings:
        reject_unknown(section, PREFIX, SETTING_KEYS)
        key = get_secret(section, env, "OPENAI_API_KEY", PREFIX, required=True)
        assert key is not None
        model = get_str(section, "model", "gpt-image-1", PREFIX).strip()
        if not (is_gpt_image(model) or model == "dall-e-3"):
            raise ConfigError(f"{PREFIX}.model must be a gpt-image model or dall-e-3")
        qualities = GPT_IMAGE_QUALITIES if is_gpt_image(model) else DALLE3_QUALITIES
        quality = get_str(section, "quality", qualities[-1] if is_gpt_image(model)
                          else "standard", PREFIX).strip()
        if quality not in qualities:
            raise ConfigError(f"{PREFIX}.quality must be one of {', '.join(qualities)} "
                              f"for {model}")
        return cls(
            api_key=key,
            base_url=get_url(section, "base_url", DEFAULT_BASE_URL, PREFIX, env,
                             "OPENAI_API_BASE_URL"),
            model=model,
            quality=quality,
            organization=get_str(section, "organization", "", PREFIX).strip() or None,
            max_concurrency=get_int(section, "max_concurrency", 2, PREFIX, lo=1, hi=64),
            policy=HttpPolicy.from_mapping(section, PREFIX),
        )


def classify(status: int, body: bytes, headers: httpx.Headers) -> ProviderError:
    """``{"error": {"message", "type", "param", "code"}}``."""
    data = json_or_none(body)
    err = data.get("error") if isinstance(data, dict) else None
    code = kind = message = ""
    if isinstance(err, dict):
        code = str(err.get("code") or "")
        kind = str(err.get("type") or "")
        message = str(err.get("message") or "")
    text = f"HTTP {status} {code or kind}: {message[:300]}"
    tag = code or kind or None
    if code in ("moderation_blocked", "content_policy_violation") \
            or (kind == "image_generation_user_error" and "safety" in message.lower()):
        return ContentFiltered(text, status=status, code=tag)
    if code in ("insufficient_quota", "billing_hard_limit_reached", "billing_not_active") \
            or kind == "insufficient_quota":
        return QuotaExhausted(text, status=status, code=tag)
    if status == 401 or code == "invalid_api_key":
        return AuthFailed(text, status=status, code=tag)
    if code == "model_not_found":
        return NotFound(text, status=status, code=tag)
    if status == 429:
        return RateLimited(text, status=status, code=tag)
    return error_for_status(status, f"{code or kind}: {message}", tag)


def capabilities_for(model: str, max_concurrency: int = 2) -> Capabilities:
    gpt = is_gpt_image(model)
    return Capabilities(
        txt2img=True,
        img2img=gpt,
        max_n_per_call=10 if gpt else 1,
        size_mode="preset",
        sizes=GPT_IMAGE_SIZES if gpt else DALLE3_SIZES,
        steps_range=None,
        cfg_range=None,
        seed_max=None,
        samplers=(),
        negative_prompt=False,
        models=(model,),
        max_concurrency=max_concurrency,
    )


class OpenAIProvider:
    name = "openai"

    def __init__(self, settings: OpenAISettings, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Sleep = asyncio.sleep) -> None:
        self.settings = settings
        self.label = f"OpenAI ({settings.model})"
        headers = {"Authorization": f"Bearer {settings.api_key}"}
        if settings.organization:
            headers["OpenAI-Organization"] = settings.organization
        self._http = HttpClient(label="OpenAI", base_url=settings.base_url,
                                policy=settings.policy, headers=headers, classify=classify,
                                transport=transport, sleep=sleep)
        self._caps = capabilities_for(settings.model, settings.max_concurrency)

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    async def aclose(self) -> None:
        await self._http.aclose()

    async def check(self) -> dict[str, str]:
        resp = await self._http.request("GET", f"/models/{self.settings.model}")
        data = await resp.json()
        found = isinstance(data, dict) and data.get("id") == self.settings.model
        return {"provider": self.label, "base_url": self.settings.base_url,
                "model": self.settings.model + (" (available)" if found else " (unknown)"),
                "quality": self.settings.quality}

    async def generate(self, req: GenerationRequest, progress: ProgressCallback | None = None
                       ) -> GenerationResult:
        model = self.settings.model
        width, height = nearest_size(req.width, req.height, self._caps)
        n = max(1, min(req.n, self._caps.max_n_per_call))
        user = hashlib.sha256(req.user_ref.encode()).hexdigest()[:32] if req.user_ref else None
        if req.init_image is None:
            body: dict[str, object] = {"model": model, "prompt": req.prompt, "n": n,
                                       "size": f"{width}x{height}",
                                       "quality": self.settings.quality}
            if not is_gpt_image(model):
                body["response_format"] = "b64_json"
            if user:
                body["user"] = user
            resp = await self._http.request("POST", "/images/generations", json_body=body,
                                            idempotent=False)
        else:
            if not is_gpt_image(model):
                raise ProviderUnavailable(f"{model} has no image edits")
            fields: list[tuple[str, FilePart]] = [
                ("model", (None, model)),
                ("prompt", (None, req.prompt)),
                ("n", (None, str(n))),
                ("size", (None, f"{width}x{height}")),
                ("quality", (None, self.settings.quality)),
                ("image", ("image.png", req.init_image, "image/png")),
            ]
            if user:
                fields.append(("user", (None, user)))
            resp = await self._http.request("POST", "/images/edits", files=fields,
                                            idempotent=False)
        data = await resp.json()
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list) or not items:
            raise ProviderUnavailable("OpenAI answer has no data")
        b64s = [it.get("b64_json") for it in items if isinstance(it, dict)]
        if len(b64s) != len(items) or not all(isinstance(s, str) for s in b64s):
            raise ProviderUnavailable("OpenAI answer has no b64_json image")
        blobs = await b64decode_many([s for s in b64s if isinstance(s, str)])
        return GenerationResult(images=tuple(GeneratedImage(data=b, seed=None) for b in blobs),
                                model=model, request_id=resp.headers.get("x-request-id"))
