"""OpenAI Images API: ``/images/generations`` (JSON) and ``/images/edits`` (multipart).

Models (as of 2026-12-01, OpenAI's model and deprecations pages): the GPT Image 2 family,
``gpt-image-2.6-flare`` (fast; the default), ``gpt-image-2.6-sunburst`` (detail), the 2.5 pair
and ``gpt-image-2``. They take free ``WIDTHxHEIGHT`` sizes: both sides divisible by 16, ratio
within 1:3..3:1, at least 655,360 pixels; we stay at or under 2560x1440 because OpenAI calls
larger sizes experimental. ``n`` 1..10, quality ``low|medium|high|auto`` (2.5 and 2.6 add
``xhigh`` and ``max``); answers are always base64. ``dall-e-*``, ``gpt-image-1``,
``gpt-image-1-mini``, ``gpt-image-1.5`` and ``chatgpt-image-latest`` are shut down: the
settings refuse them, naming the date and a replacement.

The next retirement is announced, not discovered: ``GET /models/{model}`` carries a
``shutdown_date``, which :meth:`OpenAIProvider.check` (doctor) and :meth:`refresh` (start-up)
turn into a warning. A model the API no longer knows raises :class:`ModelRetired` or
:class:`ModelUnavailable`, which alert the admins once with the setting to change. No seeds,
no negative prompt, no steps/cfg: capabilities say so, so the core tells the user.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx

from bot.errors import ConfigError
from bot.providers.base import (
    AuthFailed,
    Capabilities,
    CheckFailed,
    ContentFiltered,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    ModelRetired,
    ModelUnavailable,
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
    RetryPolicy,
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

log = logging.getLogger(__name__)

PREFIX = "providers.openai"
MODEL_SETTING = f"{PREFIX}.model"
# The keys of this provider's config table (plus the shared HTTP ones).
SETTING_KEYS = frozenset(
    {
        "base_url",
        "max_concurrency",
        "max_n_per_call",
        "model",
        "organization",
        "quality",
    }
)
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-image-2.6-flare"
CURRENT_MODELS: tuple[str, ...] = (
    "gpt-image-2.6-flare",
    "gpt-image-2.6-sunburst",
    "gpt-image-2.5-flare",
    "gpt-image-2.5-sunburst",
    "gpt-image-2",
)
# Shut down, with the date from OpenAI's deprecations page.
RETIRED_MODELS: Mapping[str, str] = {
    "dall-e-2": "2026-05-12",
    "dall-e-3": "2026-05-12",
    "gpt-image-1": "2026-10-23",
    "gpt-image-1-mini": "2026-12-01",
    "gpt-image-1.5": "2026-12-01",
    "gpt-image-1.5-2025-12-16": "2026-12-01",
    "chatgpt-image-latest": "2026-12-01",
}
BASE_QUALITIES = ("low", "medium", "high", "auto")
EXTENDED_QUALITIES = ("low", "medium", "high", "xhigh", "max", "auto")
SIZE_MULTIPLE = 16
MIN_PIXELS = 655_360
MAX_PIXELS = 2560 * 1440  # larger sizes (up to 3840x2160) are "experimental" per OpenAI
MAX_ASPECT = 3.0
# OpenAI documents 500 ("retry after a brief wait") and 503 (overloaded) as not completed, so
# not billed; a 502 from its edge never reached a model.
RETRY = RetryPolicy(post_statuses=frozenset({500, 502, 503}))


def is_gpt_image(model: str) -> bool:
    return model.startswith("gpt-image-")


def qualities_for(model: str) -> tuple[str, ...]:
    """gpt-image-2 stops at ``high``; 2.5, 2.6 (and later) add ``xhigh`` and ``max``."""
    return (
        BASE_QUALITIES
        if model == "gpt-image-2" or model.startswith("gpt-image-2-")
        else EXTENDED_QUALITIES
    )


@dataclass(frozen=True)
class OpenAISettings:
    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    model: str = DEFAULT_MODEL
    quality: str = "auto"
    organization: str | None = None
    max_n_per_call: int = 4
    max_concurrency: int = 2
    policy: HttpPolicy = field(default_factory=lambda: HttpPolicy(retry=RETRY))

    @classmethod
    def from_mapping(cls, section: Mapping[str, object], env: Mapping[str, str]) -> OpenAISettings:
        reject_unknown(section, PREFIX, SETTING_KEYS)
        key = get_secret(section, env, "OPENAI_API_KEY", PREFIX, required=True)
        assert key is not None
        model = get_str(section, "model", DEFAULT_MODEL, PREFIX).strip()
        if model in RETIRED_MODELS:
            raise ConfigError(
                f"{MODEL_SETTING} = {model!r}: OpenAI shut this model down on "
                f"{RETIRED_MODELS[model]}. Use {DEFAULT_MODEL} (fast) or one of "
                + ", ".join(m for m in CURRENT_MODELS if m != DEFAULT_MODEL)
            )
        if not is_gpt_image(model):
            raise ConfigError(
                f"{MODEL_SETTING} must be a GPT Image model, e.g. " + ", ".join(CURRENT_MODELS)
            )
        qualities = qualities_for(model)
        quality = get_str(section, "quality", "auto", PREFIX).strip()
        if quality not in qualities:
            raise ConfigError(f"{PREFIX}.quality must be one of {', '.join(qualities)} for {model}")
        return cls(
            api_key=key,
            base_url=get_url(
                section, "base_url", DEFAULT_BASE_URL, PREFIX, env, "OPENAI_API_BASE_URL"
            ),
            model=model,
            quality=quality,
            organization=get_str(section, "organization", "", PREFIX).strip() or None,
            max_n_per_call=get_int(section, "max_n_per_call", 4, PREFIX, lo=1, hi=10),
            max_concurrency=get_int(section, "max_concurrency", 2, PREFIX, lo=1, hi=64),
            policy=HttpPolicy.from_mapping(section, PREFIX, retry=RETRY),
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
    if code in ("moderation_blocked", "content_policy_violation") or (
        kind == "image_generation_user_error" and "safety" in message.lower()
    ):
        return ContentFiltered(text, status=status, code=tag)
    if (
        code in ("insufficient_quota", "billing_hard_limit_reached", "billing_not_active")
        or kind == "insufficient_quota"
    ):
        return QuotaExhausted(text, status=status, code=tag)
    if status == 401 or code == "invalid_api_key":
        return AuthFailed(text, status=status, code=tag)
    if code == "model_not_found":
        return NotFound(text, status=status, code=tag)
    if status == 429:
        return RateLimited(text, status=status, code=tag)
    return error_for_status(status, f"{code or kind}: {message}", tag)


def _model_gone(err: NotFound, model: str) -> ModelUnavailable:
    """A ``model_not_found`` for the configured model: retired or unknown, with the setting."""
    text = err.message.lower()
    cls = (
        ModelRetired
        if any(w in text for w in ("deprecated", "shut down", "retired"))
        else ModelUnavailable
    )
    return cls(
        err.message,
        model=model,
        setting=MODEL_SETTING,
        replacement=DEFAULT_MODEL if model != DEFAULT_MODEL else None,
        status=err.status,
        code=err.code,
    )


def capabilities_for(model: str, max_n_per_call: int = 4, max_concurrency: int = 2) -> Capabilities:
    return Capabilities(
        txt2img=True,
        img2img=True,
        max_n_per_call=max_n_per_call,
        size_mode="exact",
        size_multiple=SIZE_MULTIPLE,
        min_side=SIZE_MULTIPLE,
        max_side=3840,
        max_pixels=MAX_PIXELS,
        min_pixels=MIN_PIXELS,
        max_aspect=MAX_ASPECT,
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

    def __init__(
        self,
        settings: OpenAISettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        today: Callable[[], dt.date] = lambda: dt.datetime.now(dt.UTC).date(),
    ) -> None:
        self.settings = settings
        self.label = f"OpenAI ({settings.model})"
        self._today = today
        self.warnings: tuple[str, ...] = ()  # for the admins: e.g. an announced shutdown
        headers = {"Authorization": f"Bearer {settings.api_key}"}
        if settings.organization:
            headers["OpenAI-Organization"] = settings.organization
        self._http = HttpClient(
            label="OpenAI",
            base_url=settings.base_url,
            policy=settings.policy,
            headers=headers,
            classify=classify,
            transport=transport,
            sleep=sleep,
        )
        self._caps = capabilities_for(
            settings.model, settings.max_n_per_call, settings.max_concurrency
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    async def aclose(self) -> None:
        await self._http.aclose()

    def _shutdown_warning(self, data: object) -> str | None:
        date_text = data.get("shutdown_date") if isinstance(data, dict) else None
        if not isinstance(date_text, str):
            return None
        try:
            when = dt.date.fromisoformat(date_text)
        except ValueError:
            return f"OpenAI announced a shutdown of {self.settings.model}: {date_text!r}"
        days = (when - self._today()).days
        others = ", ".join(m for m in CURRENT_MODELS if m != self.settings.model)
        span = f"in {days} days" if days > 0 else "today" if days == 0 else "already past"
        return (
            f"OpenAI shuts {self.settings.model} down on {when.isoformat()} ({span}); "
            f"change {MODEL_SETTING} before then (current models: {others})."
        )

    async def _model_info(self) -> object:
        path = f"/models/{self.settings.model}"
        try:
            resp = await self._http.check("GET", path)
        except CheckFailed as exc:
            if isinstance(exc.error, NotFound):
                raise CheckFailed(
                    exc.url,
                    f"OpenAI does not know the model "
                    f"{self.settings.model!r} (retired?); change "
                    f"{MODEL_SETTING}, e.g. to {DEFAULT_MODEL}",
                    error=exc.error,
                ) from None
            raise
        return await resp.json()

    async def refresh(self) -> None:
        """At start-up: read the configured model's ``shutdown_date`` and warn ahead of it."""
        warning = self._shutdown_warning(await self._model_info())
        self.warnings = (warning,) if warning else ()
        if warning:
            log.warning("provider openai: %s", warning)

    async def check(self) -> dict[str, str]:
        data = await self._model_info()
        found = isinstance(data, dict) and data.get("id") == self.settings.model
        facts = {
            "provider": self.label,
            "base_url": self.settings.base_url,
            "model": self.settings.model + (" (available)" if found else " (unknown)"),
            "quality": self.settings.quality,
        }
        warning = self._shutdown_warning(data)
        self.warnings = (warning,) if warning else ()
        if warning:
            facts["warning"] = warning
        return facts

    async def generate(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        try:
            return await self._generate(req)
        except ModelUnavailable:
            raise
        except NotFound as exc:
            raise _model_gone(exc, self.settings.model) from None

    async def _generate(self, req: GenerationRequest) -> GenerationResult:
        model = self.settings.model
        width, height = nearest_size(req.width, req.height, self._caps)
        n = max(1, min(req.n, self._caps.max_n_per_call))
        user = hashlib.sha256(req.user_ref.encode()).hexdigest()[:32] if req.user_ref else None
        size = f"{width}x{height}"
        if req.init_image is None:
            body: dict[str, object] = {
                "model": model,
                "prompt": req.prompt,
                "n": n,
                "size": size,
                "quality": self.settings.quality,
            }
            if user:
                body["user"] = user
            resp = await self._http.request(
                "POST", "/images/generations", json_body=body, idempotent=False
            )
        else:
            fields: list[tuple[str, FilePart]] = [
                ("model", (None, model)),
                ("prompt", (None, req.prompt)),
                ("n", (None, str(n))),
                ("size", (None, size)),
                ("quality", (None, self.settings.quality)),
                ("image", ("image.png", req.init_image, "image/png")),
            ]
            if user:
                fields.append(("user", (None, user)))
            resp = await self._http.request("POST", "/images/edits", files=fields, idempotent=False)
        data = await resp.json()
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list) or not items:
            raise ProviderUnavailable("OpenAI answer has no data")
        b64s = [it.get("b64_json") for it in items if isinstance(it, dict)]
        if len(b64s) != len(items) or not all(isinstance(s, str) for s in b64s):
            raise ProviderUnavailable("OpenAI answer has no b64_json image")
        blobs = await b64decode_many([s for s in b64s if isinstance(s, str)])
        return GenerationResult(
            images=tuple(GeneratedImage(data=b, seed=None) for b in blobs),
            model=model,
            request_id=resp.headers.get("x-request-id"),
        )
