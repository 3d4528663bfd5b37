"""The small HTTP layer every remote provider shares.

One long-lived :class:`httpx.AsyncClient` per provider, wrapped by :class:`HttpClient.request`,
which owns the reliability rules so that no provider re-invents them:

- a whole-call deadline (``asyncio.timeout``) on top of httpx's connect/read timeouts;
- connection failures (nothing reached the server) are retried freely, within the deadline;
- 429 honours ``Retry-After`` (seconds or HTTP-date) up to a cap, above it we fail fast with
  :class:`RateLimited` so the user hears "busy" now rather than after minutes;
- at most one retry of a 5xx, by the provider's :class:`RetryPolicy`: which statuses mean "the
  service failed and did not charge" is the vendor's to say (Stability and OpenAI: 500/502/503;
  for Cerebrium a 500 means the function ran and was billed, so a generation is never re-sent).
  A read timeout, a cut-off body or a 504 on a non-idempotent call is *not* retried, because
  the service may have done (and billed) the work; idempotent calls (GET) retry any 5xx once;
- bodies are streamed and counted: over ``max_body_bytes`` or past the deadline, we abort;
- a circuit breaker per provider: after N consecutive unavailability failures it opens for T
  seconds and answers :class:`ServicePaused` without any HTTP request, then lets one probe
  through (half-open). Client errors, rate limits and content filters never trip it;
- every failure becomes one of the typed errors in :mod:`bot.providers.base`, via a small
  provider-specific classifier for its error bodies.

Secrets live only in the client's default headers; nothing here logs headers or bodies.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from bot.providers.base import (
    AuthFailed,
    CheckFailed,
    InvalidRequest,
    NotFound,
    ProviderError,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
)

# The policy types and the config getters moved to bot.providers.policy; every name stays
# importable from here.
from bot.providers.policy import DEFAULT_RETRY as DEFAULT_RETRY
from bot.providers.policy import POLICY_KEYS as POLICY_KEYS
from bot.providers.policy import HttpPolicy as HttpPolicy
from bot.providers.policy import RetryPolicy as RetryPolicy
from bot.providers.policy import get_bool as get_bool
from bot.providers.policy import get_float as get_float
from bot.providers.policy import get_int as get_int
from bot.providers.policy import get_secret as get_secret
from bot.providers.policy import get_statuses as get_statuses
from bot.providers.policy import get_str as get_str
from bot.providers.policy import get_url as get_url
from bot.providers.policy import reject_unknown as reject_unknown

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
# (status, body, headers) -> the typed error for a non-2xx answer.
Classifier = Callable[[int, bytes, httpx.Headers], ProviderError]
# One multipart part: (filename or None for a plain field, content, content type or None).
FilePart = tuple[str | None, bytes | str, str | None] | tuple[str | None, bytes | str]

_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_BIG_JSON = 256 * 1024


class ServerUnreachable(ProviderUnavailable):
    """Nothing reached the service (connection refused, connect timeout): nothing ran, so
    another server of a pool may take the call (:mod:`bot.providers.pool`)."""


class ServicePaused(ProviderUnavailable):
    """The circuit breaker is open: we are not calling the service for a while."""

    user_message = (
        "The image service failed several times in a row, so the bot paused calls to it for a "
        "short while. Your quota was refunded; try again in a minute."
    )


# ------------------------------------------------------------------------------ error mapping
def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        secs = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        secs = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(secs):
        return None
    return max(0.0, secs)


def error_for_status(status: int, message: str, code: str | None = None) -> ProviderError:
    """The default status -> typed error mapping; provider classifiers refine it by code."""
    msg = f"HTTP {status}: {message[:300]}" if message else f"HTTP {status}"
    if status == 401:
        return AuthFailed(msg, status=status, code=code)
    if status == 402:
        return QuotaExhausted(msg, status=status, code=code)
    if status == 403:
        return AuthFailed(msg, status=status, code=code)
    if status == 404:
        return NotFound(msg, status=status, code=code)
    if status == 429:
        return RateLimited(msg, status=status, code=code)
    if status >= 500:
        return ProviderUnavailable(msg, status=status, code=code)
    if status in (400, 405, 409, 413, 415, 422):
        return InvalidRequest(msg, status=status, code=code)
    return ProviderUnavailable(msg, status=status, code=code)


def json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def default_classifier(status: int, body: bytes, headers: httpx.Headers) -> ProviderError:
    data = json_or_none(body)
    message = ""
    if isinstance(data, dict):
        for k in ("message", "detail", "error"):
            if isinstance(data.get(k), str):
                message = data[k]
                break
    return error_for_status(status, message)


# ---------------------------------------------------------------------------- circuit breaker
class CircuitBreaker:
    """Closed -> (N consecutive failures) -> open for ``reset_s`` -> half-open: one probe."""

    def __init__(self, threshold: int, reset_s: float, clock: Clock) -> None:
        self.threshold = threshold
        self.reset_s = reset_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.reset_s:
            return "half-open"
        return "open"

    def before(self, label: str) -> None:
        state = self.state
        if state == "closed":
            return
        if state == "half-open" and not self._probing:
            self._probing = True  # this call is the probe; others wait for its verdict
            return
        assert self._opened_at is not None
        left = max(0.0, self.reset_s - (self._clock() - self._opened_at))
        raise ServicePaused(f"{label} is paused after repeated failures; next try in {left:.0f}s")

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def neutral(self) -> None:
        """The service answered (e.g. a 400): it is alive, but this says nothing else."""
        if self._probing:
            self.success()

    def abandon(self) -> None:
        self._probing = False

    def failure(self) -> None:
        self._failures += 1
        if self._probing or self._failures >= self.threshold:
            self._opened_at = self._clock()
        self._probing = False


# ------------------------------------------------------------------------------------- client
class _NoBreaker:
    """Stands in for the breaker on side-channel calls: records nothing."""

    def failure(self) -> None: ...

    def neutral(self) -> None: ...

    def abandon(self) -> None: ...

    def success(self) -> None: ...


_NO_BREAKER = _NoBreaker()


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: httpx.Headers
    content: bytes

    @property
    def content_type(self) -> str:
        value: str = self.headers.get("content-type", "")
        return value.split(";")[0].strip().lower()

    async def json(self) -> Any:
        """Parse the body; a malformed body is the provider's fault, not the user's."""
        try:
            if len(self.content) > _BIG_JSON:
                return await asyncio.to_thread(json.loads, self.content)
            return json.loads(self.content)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProviderUnavailable(f"malformed JSON answer (HTTP {self.status})") from exc


def build_async_client(
    base_url: str,
    policy: HttpPolicy,
    *,
    headers: Mapping[str, str],
    auth: httpx.Auth | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    # httpx logs every request URL at INFO; keep it quiet so nothing sensitive can leak there.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    timeout = httpx.Timeout(
        policy.read_timeout_s, connect=policy.connect_timeout_s, pool=policy.connect_timeout_s
    )
    return httpx.AsyncClient(
        base_url=base_url,
        headers=dict(headers),
        auth=auth,
        timeout=timeout,
        # No transport-level retries: HttpClient.request retries connection failures itself,
        # and both layers together made connect_retries=2 nine connection attempts.
        transport=transport or httpx.AsyncHTTPTransport(retries=0),
        follow_redirects=False,
    )


def b64decode_strict(data: str) -> bytes:
    import base64
    import binascii

    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProviderUnavailable("the service returned an image that is not valid base64") from exc


async def b64decode_many(items: Sequence[str]) -> list[bytes]:
    """Decode strictly, off the event loop when the payload is big."""
    if sum(len(s) for s in items) < _BIG_JSON:
        return [b64decode_strict(s) for s in items]
    return await asyncio.to_thread(lambda: [b64decode_strict(s) for s in items])


class HttpClient:
    """One provider's HTTP client with the shared reliability rules (see module docstring)."""

    def __init__(
        self,
        *,
        label: str,
        base_url: str,
        policy: HttpPolicy,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        classify: Classifier = default_classifier,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        self.label = label
        self.policy = policy
        self._classify = classify
        self._sleep = sleep
        self._client = build_async_client(
            base_url, policy, headers=headers or {}, auth=auth, transport=transport
        )
        self.breaker = CircuitBreaker(policy.breaker_threshold, policy.breaker_reset_s, clock)

    async def aclose(self) -> None:
        await self._client.aclose()

    def url(self, path: str) -> str:
        """The absolute URL a path resolves to (for ``doctor``; base URLs hold no secrets)."""
        return str(self._client.build_request("GET", path).url.copy_with(query=None))

    async def check(self, method: str, path: str, **kwargs: Any) -> HttpResponse:
        """:meth:`request` for ``check()``: a failure becomes :class:`CheckFailed` naming the
        URL tried and the cause, which is what an admin needs, not the chat apology."""
        try:
            return await self.request(method, path, **kwargs)
        except ProviderError as exc:
            raise CheckFailed(self.url(path), exc.message, error=exc) from exc

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: object | None = None,
        files: Sequence[tuple[str, FilePart]] | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        deadline_s: float | None = None,
        side_channel: bool = False,
    ) -> HttpResponse:
        """Send one logical call (with the allowed retries) and return a 2xx answer, or raise a
        typed :class:`ProviderError`. ``idempotent`` defaults to true for GET only.

        ``side_channel``: a best-effort call beside the real work (progress polling). It
        neither consults nor moves the circuit breaker, so it can never use up the half-open
        probe or open the breaker on its own."""
        if not side_channel:
            self.breaker.before(self.label)
        breaker = _NO_BREAKER if side_channel else self.breaker
        safe = method.upper() in ("GET", "HEAD") if idempotent is None else idempotent
        try:
            async with asyncio.timeout(deadline_s or self.policy.deadline_s) as scope:
                resp = await self._attempts(
                    method, path, json_body, files, params, headers, safe, scope
                )
        except TimeoutError:
            breaker.failure()
            raise ProviderUnavailable(
                f"{self.label} did not answer in time ({method} {path})"
            ) from None
        except ProviderUnavailable:
            breaker.failure()
            raise
        except ProviderError:
            breaker.neutral()
            raise
        except BaseException:
            # Cancelled (job cancelled, shutdown) or a bug: no verdict on the service.
            breaker.abandon()
            raise
        breaker.success()
        return resp

    async def _attempts(
        self,
        method: str,
        path: str,
        json_body: object | None,
        files: Sequence[tuple[str, FilePart]] | None,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        safe: bool,
        scope: asyncio.Timeout,
    ) -> HttpResponse:
        retried_5xx = False
        rate_limit_retries = 0
        connect_retries = 0
        while True:
            started = time.perf_counter()
            try:
                resp = await self._once(method, path, json_body, files, params, headers)
            except _NOT_SENT as exc:
                # Nothing reached the service, so a retry cannot charge twice.
                if connect_retries < self.policy.connect_retries:
                    connect_retries += 1
                    await self._sleep(min(0.5 * connect_retries, 2.0))
                    continue
                raise ServerUnreachable(
                    f"cannot reach {self.label}: {type(exc).__name__}"
                ) from None
            except httpx.TimeoutException as exc:
                # The request was sent: the service may be working on it (and billing it).
                if safe and not retried_5xx:
                    retried_5xx = True
                    continue
                raise ProviderUnavailable(
                    f"{self.label} timed out ({type(exc).__name__})"
                ) from None
            except httpx.TransportError as exc:
                # Connection dropped mid-answer, truncated body, protocol error.
                if safe and not retried_5xx:
                    retried_5xx = True
                    continue
                raise ProviderUnavailable(
                    f"{self.label} connection failed ({type(exc).__name__})"
                ) from None
            log.debug(
                "%s %s %s -> %d in %.3fs",
                self.label,
                method,
                path,
                resp.status,
                time.perf_counter() - started,
            )
            if 200 <= resp.status < 300:
                return resp
            err = self._classify(resp.status, resp.content, resp.headers)
            if isinstance(err, RateLimited):
                wait = parse_retry_after(resp.headers.get("retry-after"))
                if err.retry_after is None:
                    err.retry_after = wait
                if wait is None:
                    wait = self.policy.default_retry_after_s
                when = scope.when()
                left = math.inf if when is None else when - asyncio.get_running_loop().time()
                # A wait the deadline would cut short is a rate limit now, not a timeout later
                # (which would read as an outage and count against the breaker).
                if (
                    wait > self.policy.retry_after_cap_s
                    or wait >= left
                    or rate_limit_retries >= self.policy.max_rate_limit_retries
                ):
                    raise err
                rate_limit_retries += 1
                await self._sleep(wait)
                continue
            retry = self.policy.retry
            if (
                isinstance(err, ProviderUnavailable)
                and not retried_5xx
                and (
                    (safe and retry.idempotent_5xx and resp.status >= 500)
                    or (not safe and resp.status in retry.post_statuses)
                )
            ):
                retried_5xx = True
                continue
            raise err

    async def _once(
        self,
        method: str,
        path: str,
        json_body: object | None,
        files: Sequence[tuple[str, FilePart]] | None,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
    ) -> HttpResponse:
        kwargs: dict[str, Any] = {}
        if json_body is not None:
            kwargs["json"] = json_body
        if files is not None:
            kwargs["files"] = list(files)
        req = self._client.build_request(method, path, params=params, headers=headers, **kwargs)
        resp = await self._client.send(req, stream=True)
        try:
            declared = resp.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > self.policy.max_body_bytes:
                raise ProviderUnavailable(f"{self.label} answer too large ({declared} bytes)")
            chunks: list[bytes] = []
            size = 0
            # Decoded bytes are counted, so a compression bomb hits the cap too.
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > self.policy.max_body_bytes:
                    raise ProviderUnavailable(
                        f"{self.label} answer exceeded {self.policy.max_body_bytes} bytes"
                    )
                chunks.append(chunk)
        finally:
            await resp.aclose()
        return HttpResponse(resp.status_code, resp.headers, b"".join(chunks))


__all__ = [
    "CircuitBreaker",
    "Classifier",
    "HttpClient",
    "HttpPolicy",
    "HttpResponse",
    "RetryPolicy",
    "ServerUnreachable",
    "ServicePaused",
    "b64decode_many",
    "b64decode_strict",
    "default_classifier",
    "error_for_status",
    "parse_retry_after",
]
