"""How a provider calls its service, read from its config section: :class:`RetryPolicy`,
:class:`HttpPolicy`, and the typed getters every provider uses to parse its table.

Split out of :mod:`bot.providers.http`, which re-exports every name here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from bot.errors import ConfigError


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
    def from_mapping(
        cls,
        section: Mapping[str, object],
        prefix: str,
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
        deadline_s: float | None = None,
    ) -> HttpPolicy:
        """``retry`` and ``deadline_s`` are the provider's own defaults; the section's
        ``retry_post_statuses`` and ``deadline_s`` keys override them."""
        d = cls(deadline_s=deadline_s if deadline_s is not None else cls.deadline_s)
        return cls(
            connect_timeout_s=get_float(
                section, "connect_timeout_s", d.connect_timeout_s, prefix, lo=0.1
            ),
            read_timeout_s=get_float(section, "timeout_s", d.read_timeout_s, prefix, lo=0.1),
            deadline_s=get_float(section, "deadline_s", d.deadline_s, prefix, lo=0.1),
            connect_retries=get_int(
                section, "connect_retries", d.connect_retries, prefix, lo=0, hi=10
            ),
            max_rate_limit_retries=get_int(
                section, "rate_limit_retries", d.max_rate_limit_retries, prefix, lo=0, hi=10
            ),
            retry_after_cap_s=get_float(
                section, "retry_after_cap_s", d.retry_after_cap_s, prefix, lo=0.0
            ),
            default_retry_after_s=d.default_retry_after_s,
            max_body_bytes=get_int(section, "max_body_bytes", d.max_body_bytes, prefix, lo=1024),
            breaker_threshold=get_int(
                section, "breaker_threshold", d.breaker_threshold, prefix, lo=1, hi=1000
            ),
            breaker_reset_s=get_float(
                section, "breaker_reset_s", d.breaker_reset_s, prefix, lo=0.0
            ),
            retry=RetryPolicy(
                post_statuses=get_statuses(
                    section, "retry_post_statuses", retry.post_statuses, prefix
                ),
                idempotent_5xx=retry.idempotent_5xx,
            ),
        )


def get_statuses(
    section: Mapping[str, object], key: str, default: frozenset[int], prefix: str
) -> frozenset[int]:
    value = section.get(key)
    if value is None:
        return default
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 500 <= v <= 599 for v in value
    ):
        raise ConfigError(
            f"{_key(prefix, key)} must be a list of 5xx status codes, e.g. [502, 503]"
        )
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


def get_int(
    section: Mapping[str, object],
    key: str,
    default: int,
    prefix: str,
    *,
    lo: int | None = None,
    hi: int | None = None,
) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{_key(prefix, key)} must be an integer")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{_key(prefix, key)} must be between {lo} and {hi}")
    return value


def get_float(
    section: Mapping[str, object],
    key: str,
    default: float,
    prefix: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{_key(prefix, key)} must be a number")
    f = float(value)
    if not math.isfinite(f) or (lo is not None and f < lo) or (hi is not None and f > hi):
        raise ConfigError(f"{_key(prefix, key)} must be between {lo} and {hi}")
    return f


def get_url(
    section: Mapping[str, object],
    key: str,
    default: str,
    prefix: str,
    env: Mapping[str, str],
    env_name: str | None,
) -> str:
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


POLICY_KEYS = frozenset(
    {
        "connect_timeout_s",
        "timeout_s",
        "deadline_s",
        "connect_retries",
        "rate_limit_retries",
        "retry_after_cap_s",
        "max_body_bytes",
        "breaker_threshold",
        "breaker_reset_s",
        "retry_post_statuses",
    }
)


def reject_unknown(section: Mapping[str, object], prefix: str, keys: frozenset[str]) -> None:
    """A typo in a provider table is an error naming the key, not a silently kept default."""
    unknown = sorted(set(section) - keys - POLICY_KEYS - {"api_key"})
    if unknown:
        known = ", ".join(sorted(keys | POLICY_KEYS))
        raise ConfigError(f"Unknown setting {prefix}.{unknown[0]}. Known keys: {known}")


def get_secret(
    section: Mapping[str, object],
    env: Mapping[str, str],
    env_name: str,
    prefix: str,
    *,
    required: bool,
) -> str | None:
    """An API key: from the environment only (a key in a config file ends up in backups and
    screenshots); ``None`` when optional and unset."""
    if "api_key" in section:
        raise ConfigError(
            f"{prefix}.api_key: keys come from the environment ({env_name}), "
            "never from the config file"
        )
    value = env.get(env_name, "").strip()
    if required and not value:
        raise ConfigError(f"{env_name} is not set (needed by {prefix})")
    return value or None
