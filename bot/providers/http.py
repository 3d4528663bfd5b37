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

from bot.errors import ConfigError
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

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
# (status, body, headers) -> the typed error for a non-2xx answer.
Classifier = Callable[[int, bytes, httpx.Headers], ProviderError]
# One multipart part: (filename or None for a plain field, content, content type or None).
FilePart = tuple[str | None, bytes | str, str | None] | tuple[str | None, bytes | str]

_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_BIG_JSON = 256 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed answer may be tried once more, from the vendor's documented semantics.

    ``post_statuses``: the 5xx answers to a non-idempotent call (a generation POST) after which
    the service has neither done nor billed the work, so one retry cannot charge twice.
    ``idempotent_5xx``: whether a GET (or a call marked idempotent) retries any 5xx once.
    Connection failures (nothing sent) are always retried, per ``HttpPolicy.connect_retries``.
    """

    post_statuses: frozenset[int] = frozenset({500, 502, 503})
    idempotent_5xx: bool = True

    @classmethod
    def never_post(cls) -> RetryPolicy:
        return cls(post_statuses=frozenset())


DEFAULT_RETRY = RetryPolicy()


class ServicePaused(ProviderUnavailable):
    """The circuit breaker is open: we are not calling the service for a while."""

    user_message = (
        "The image service failed several times in a row, so the bot paused calls to it for a "
        "short while. Your quota was refunded; try again in a minute."
    )


# ------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class HttpPolicy:
    """Timeouts, caps and breaker thresholds; one per provider, read from its config section."""

    connect_timeout_s: float = 10.0
    read_timeout_s: float = 120.0
    deadline_s: float = 300.0
    connect_retries: int = 2
    max_rate_limit_retries: int = 2
    retry_after_cap_s: float = 30.0
    default_retry_after_s: float = 2.0
    max_body_bytes: int = 64 * 1024 * 1024
    breaker_threshold: int = 5
    breaker_reset_s: float = 60.0
    retry: RetryPolicy = DEFAULT_RETRY

    @classmethod
    def from_mapping(cls, section: Mapping[str, object], prefix: str, *,
                     retry: RetryPolicy = DEFAULT_RETRY,
                     deadline_s: float | None = None) -> HttpPolicy:
        """``retry`` and ``deadline_s`` are the provider's own defaults; the section's
        ``retry_post_statuses`` and ``deadline_s`` keys override them."""
        d = cls(deadline_s=deadline_s if deadline_s is not None else cls.deadline_s)
        return cls(
            connect_timeout_s=get_float(section, "connect_timeout_s", d.connect_timeout_s,
                                        prefix, lo=0.1),
            read_timeout_s=get_float(section, "timeout_s", d.read_timeout_s, prefix, lo=0.1),
            deadline_s=get_float(section, "deadline_s", d.deadline_s, prefix, lo=0.1),
            connect_retries=get_int(section, "connect_retries", d.connect_retries, prefix,
                                    lo=0, hi=10),
            max_rate_limit_retries=get_int(section, "rate_limit_retries",
                                           d.max_rate_limit_retries, prefix, lo=0, hi=10),
            retry_after_cap_s=get_float(section, "retry_after_cap_s", d.retry_after_cap_s,
                                        prefix, lo=0.0),
            default_retry_after_s=d.default_retry_after_s,
            max_body_bytes=get_int(section, "max_body_bytes", d.max_body_bytes, prefix,
                                   lo=1024),
            breaker_threshold=get_int(section, "breaker_threshold", d.breaker_threshold,
                                      prefix, lo=1, hi=1000),
            breaker_reset_s=get_float(section, "breaker_reset_s", d.breaker_reset_s, prefix,
                                      lo=0.0),
            retry=RetryPolicy(
                post_statuses=get_statuses(section, "retry_post_statuses",
                                           retry.post_statuses, prefix),
                idempotent_5xx=retry.idempotent_5xx),
        )


def get_statuses(section: Mapping[str, object], key: str, default: frozenset[int],
                 prefix: str) -> frozenset[int]:
    value = section.get(key)
    if value is None:
        return default
    if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 500 <= v <= 599 for v in value):
        raise ConfigError(f"{_key(prefix, key)} must be a list of 5xx status codes, "
                          "e.g. [502, 503]")
    return frozenset(value)


def _key(prefix: str, key: str) -> str:
    return f"{prefix}.{key}"


def get_str(section: Mapping[str, object], key: str, default: str, prefix: str) -> str:
    value = section.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{_key(prefix, key)} must be a string")
    return value


def get_bool(section: Mapping[str, object], key: str, default: bool, prefix: str) -> bool:
    value = section.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{_key(prefix, key)} must be true or false")
    return value


def get_int(section: Mapping[str, object], key: str, default: int, prefix: str, *,
            lo: int | None = None, hi: int | None = None) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{_key(prefix, key)} must be an integer")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{_key(prefix, key)} must be between {lo} and {hi}")
    return value


def get_float(section: Mapping[str, object], key: str, default: float, prefix: str, *,
              lo: float | None = None, hi: float | None = None) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{_key(prefix, key)} must be a number")
    f = float(value)
    if not math.isfinite(f) or (lo is not None and f < lo) or (hi is not None and f > hi):
        raise ConfigError(f"{_key(prefix, key)} must be between {lo} and {hi}")
    return f


def get_url(section: Mapping[str, object], key: str, default: str, prefix: str,
            env: Mapping[str, str], env_name: str | None) -> str:
    """A base URL: the environment wins over the file, so a proxy or fake can stand in."""
    value = (env.get(env_name) if env_name else None) or get_str(section, key, default, prefix)
    try:
        url = httpx.URL(value)
    except Exception as exc:  # httpx raises several types for bad URLs
        raise ConfigError(f"{_key(prefix, key)} is not a valid URL") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"{_key(prefix, key)} must be an http(s) URL")
    if url.userinfo:
        # Credentials in URLs end up in logs (httpx logs URLs); insist on headers instead.
        raise ConfigError(f"{_key(prefix, key)} must not contain credentials")
    return value.rstrip("/")


POLICY_KEYS = frozenset({
    "connect_timeout_s", "timeout_s", "deadline_s", "connect_retries", "rate_limit_retries",
    "retry_after_cap_s", "max_body_bytes", "breaker_threshold", "breaker_reset_s",
    "retry_post_statuses",
})


def reject_unknown(section: Mapping[str, object], prefix: str,
                   keys: frozenset[str]) -> None:
    """A typo in a provider table is an error naming the key, not a silently kept default."""
    unknown = sorted(set(section) - keys - POLICY_KEYS - {"api_key"})
    if unknown:
        known = ", ".join(sorted(keys | POLICY_KEYS))
        raise ConfigError(f"Unknown setting {prefix}.{unknown[0]}. Known keys: {known}")


def get_secret(section: Mapping[str, object], env: Mapping[str, str], env_name: str,
               prefix: str, *, required: bool) -> str | None:
    """An API key: from the environment only (a key in a config file ends up in backups and
    screenshots); ``None`` when optional and unset."""
    if "api_key" in section:
        raise ConfigError(f"{prefix}.api_key: keys come from the environment ({env_name}), "
                          "never from the config file")
    value = env.get(env_name, "").strip()
    if required and not value:
        raise ConfigError(f"{env_name} is not set (needed by {prefix})")
    return value or None


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


def build_async_client(base_url: str, policy: HttpPolicy, *, headers: Mapping[str, str],
                       auth: httpx.Auth | None = None,
                       transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    # httpx logs every request URL at INFO; keep it quiet so nothing sensitive can leak there.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    timeout = httpx.Timeout(policy.read_timeout_s, connect=policy.connect_timeout_s,
                            pool=policy.connect_timeout_s)
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
        raise ProviderUnavailable("the service returned an image that is not valid base64") \
            from exc


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
        self._client = build_async_client(base_url, policy, headers=headers or {}, auth=auth,
                                          transport=transport)
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
                resp = await self._attempts(method, path, json_body, files, params, headers,
                                            safe, scope)
        except TimeoutError:
            breaker.failure()
            raise ProviderUnavailable(f"{self.label} did not answer in time "
                                      f"({method} {path})") from None
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

    async def _attempts(self, method: str, path: str, json_body: object | None,
                        files: Sequence[tuple[str, FilePart]] | None,
                        params: Mapping[str, str] | None, headers: Mapping[str, str] | None,
                        safe: bool, scope: asyncio.Timeout) -> HttpResponse:
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
                raise ProviderUnavailable(f"cannot reach {self.label}: "
                                          f"{type(exc).__name__}") from None
            except httpx.TimeoutException as exc:
                # The request was sent: the service may be working on it (and billing it).
                if safe and not retried_5xx:
                    retried_5xx = True
                    continue
                raise ProviderUnavailable(f"{self.label} timed out "
                                          f"({type(exc).__name__})") from None
            except httpx.TransportError as exc:
                # Connection dropped mid-answer, truncated body, protocol error.
                if safe and not retried_5xx:
                    retried_5xx = True
                    continue
                raise ProviderUnavailable(f"{self.label} connection failed "
                                          f"({type(exc).__name__})") from None
            log.debug("%s %s %s -> %d in %.3fs", self.label, method, path, resp.status,
                      time.perf_counter() - started)
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
                if (wait > self.policy.retry_after_cap_s or wait >= left
                        or rate_limit_retries >= self.policy.max_rate_limit_retries):
                    raise err
                rate_limit_retries += 1
                await self._sleep(wait)
                continue
            retry = self.policy.retry
            if isinstance(err, ProviderUnavailable) and not retried_5xx and (
                (safe and retry.idempotent_5xx and resp.status >= 500)
                or (not safe and resp.status in retry.post_statuses)
            ):
                retried_5xx = True
                continue
            raise err

    async def _once(self, method: str, path: str, json_body: object | None,
                    files: Sequence[tuple[str, FilePart]] | None,
                    params: Mapping[str, str] | None,
                    headers: Mapping[str, str] | None) -> HttpResponse:
        kwargs: dict[str, Any] = {}
        if json_body is not None:
            kwargs["json"] = json_body
        if files is not None:
            kwargs["files"] = list(files)
        req = self._client.build_request(method, path, params=params, headers=headers,
                                         **kwargs)
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
                    raise ProviderUnavailable(f"{self.label} answer exceeded "
                                              f"{self.policy.max_body_bytes} bytes")
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
    "ServicePaused",
    "b64decode_many",
    "b64decode_strict",
    "default_classifier",
    "error_for_status",
    "parse_retry_after",
]
