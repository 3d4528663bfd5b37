"""Settings: read once at start, validated, passed down. No module-level settings object.

Sources, later ones winning: the embedded defaults (the dataclasses below, mirrored and
commented in ``config/default.toml``), a TOML file (``--config PATH``), environment variables
``IMAGINE_<SECTION>__<KEY>`` (e.g. ``IMAGINE_QUOTA__USER_DAILY=20``), and programmatic
overrides (tests, benchmarks). Secrets come from the environment only and are never printed.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.errors import ConfigError

ENV_PREFIX = "IMAGINE_"
SECRET_ENV = (
    "DISCORD_TOKEN",
    "SLACK_BOT_TOKEN",
    "SLACK_APP_TOKEN",
    "SLACK_SIGNING_SECRET",
    "STABILITY_API_KEY",
    "CEREBRIUM_API_KEY",
    "OPENAI_API_KEY",
    "AUTOMATIC1111_PASSWORD",
    "WEB_ACCESS_TOKEN",
)


@dataclass(frozen=True)
class BotSettings:
    data_dir: str = "./data"
    log_level: str = "INFO"
    # Admins as "platform:user_id" (e.g. "web:alice", "discord:80351110224678912").
    admins: tuple[str, ...] = ()
    # Where provider alerts (bad key, no credits) are posted once: "platform:tenant:channel".
    alert_channel: str = ""


@dataclass(frozen=True)
class GrammarSettings:
    max_images: int = 10
    default_n: int = 4
    max_prompt_chars: int = 1000
    max_permutations: int = 8
    base_side: int = 1024


@dataclass(frozen=True)
class QuotaSettings:
    timezone: str = "UTC"
    user_daily: int = 50
    user_monthly: int = 1000
    workspace_daily: int = 0  # 0 = unlimited
    workspace_monthly: int = 0
    exempt_admins: bool = True
    # Per-role limits: {"vip" = {daily = 200, monthly = 4000}}; the most generous role wins.
    roles: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class JobSettings:
    max_running_per_user: int = 2
    max_queued_per_user: int = 10
    max_queue: int = 500
    retry_interrupted: int = 1
    job_timeout_s: float = 300.0


@dataclass(frozen=True)
class ImageSettings:
    max_input_bytes: int = 20 * 1024 * 1024
    max_input_pixels: int = 4096 * 4096
    preview_max_bytes: int = 8 * 1024 * 1024
    preview_max_side: int = 1536


@dataclass(frozen=True)
class ActionSettings:
    refine_strength: float = 0.6
    vary_strength: float = 0.3
    collaborative: bool = True  # default for channels without their own setting


@dataclass(frozen=True)
class ProviderSettings:
    default: str = "auto"  # "auto": stability when STABILITY_API_KEY is set, else offline
    fallback: str = ""
    # One table per provider, validated by that provider's own settings class.
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class WebSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    channels: tuple[str, ...] = ("general", "avatars", "sandbox")
    admins: tuple[str, ...] = ()
    access_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Settings:
    bot: BotSettings = field(default_factory=BotSettings)
    grammar: GrammarSettings = field(default_factory=GrammarSettings)
    quota: QuotaSettings = field(default_factory=QuotaSettings)
    jobs: JobSettings = field(default_factory=JobSettings)
    images: ImageSettings = field(default_factory=ImageSettings)
    actions: ActionSettings = field(default_factory=ActionSettings)
    providers: ProviderSettings = field(default_factory=ProviderSettings)
    styles: Mapping[str, str] = field(default_factory=dict)
    web: WebSettings = field(default_factory=WebSettings)
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def data_dir(self) -> Path:
        return Path(self.bot.data_dir)

    def secret(self, name: str) -> str | None:
        value = self.env.get(name)
        return value or None

    def __repr__(self) -> str:  # never show env (secrets)
        parts = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self) if f.repr
        )
        return f"Settings({parts})"


_SECTIONS: dict[str, type[Any]] = {
    "bot": BotSettings,
    "grammar": GrammarSettings,
    "quota": QuotaSettings,
    "jobs": JobSettings,
    "images": ImageSettings,
    "actions": ActionSettings,
    "web": WebSettings,
}


def _coerce(key: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"Setting {key} must be true or false (got {value!r}).")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"Setting {key} must be a whole number (got {value!r}).")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"Setting {key} must be a number (got {value!r}).")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"Setting {key} must be text (got {value!r}).")
    if origin in (types.UnionType, typing.Union):  # str | None
        if value is None or value == "":
            return None
        return _coerce(key, value, str)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"Setting {key} must be a list of text values (got {value!r}).")
    if isinstance(value, Mapping):
        return dict(value)
    raise ConfigError(f"Setting {key} must be a table (got {value!r}).")


def _build(section: str, cls: type[Any], raw: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(
                f"Unknown setting {section}.{key}. Known keys in [{section}]: "
                + ", ".join(sorted(known))
            )
        kwargs[key] = _coerce(f"{section}.{key}", value, hints[key])
    return cls(**kwargs)


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _env_layer(env: Mapping[str, str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        try:
            value: Any = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # plain text such as a path
        node = layer
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return layer


def load_settings(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read and validate settings; raise :class:`ConfigError` naming the bad key."""
    env = dict(os.environ if env is None else env)
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"Config file {path} does not exist.") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"Config file {path} is not valid TOML: {exc}") from None
    raw = _merge(raw, _env_layer(env))
    if overrides:
        raw = _merge(raw, overrides)

    unknown = set(raw) - set(_SECTIONS) - {"providers", "styles"}
    if unknown:
        raise ConfigError(f"Unknown config section [{sorted(unknown)[0]}].")
    built: dict[str, Any] = {
        name: _build(name, cls, raw.get(name, {})) for name, cls in _SECTIONS.items()
    }
    prov_raw = dict(raw.get("providers", {}))
    default = prov_raw.pop("default", "auto")
    fallback = prov_raw.pop("fallback", "")
    if not isinstance(default, str) or not isinstance(fallback, str):
        raise ConfigError("Settings providers.default and providers.fallback must be text.")
    for name, section in prov_raw.items():
        if not isinstance(section, Mapping):
            raise ConfigError(f"Setting providers.{name} must be a table.")
    built["providers"] = ProviderSettings(default=default, fallback=fallback, sections=prov_raw)
    styles = raw.get("styles", {})
    if not isinstance(styles, Mapping) or not all(isinstance(v, str) for v in styles.values()):
        raise ConfigError("Settings under [styles] must be name = \"template with {prompt}\".")
    built["styles"] = dict(styles)
    web: WebSettings = built["web"]
    if web.access_token is None and env.get("WEB_ACCESS_TOKEN"):
        built["web"] = dataclasses.replace(web, access_token=env["WEB_ACCESS_TOKEN"])
    settings = Settings(**built, env=env)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise ConfigError(f"Setting {key} {what}.")

    g = s.grammar
    need(1 <= g.max_images <= 10, "grammar.max_images", "must be 1..10")
    need(1 <= g.default_n <= g.max_images, "grammar.default_n", "must be 1..grammar.max_images")
    need(1 <= g.max_prompt_chars <= 10000, "grammar.max_prompt_chars", "must be 1..10000")
    need(1 <= g.max_permutations <= 64, "grammar.max_permutations", "must be 1..64")
    need(256 <= g.base_side <= 2048, "grammar.base_side", "must be 256..2048")
    q = s.quota
    try:
        zoneinfo.ZoneInfo(q.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"Setting quota.timezone: unknown time zone {q.timezone!r}.") from None
    for key in ("user_daily", "user_monthly", "workspace_daily", "workspace_monthly"):
        need(getattr(q, key) >= 0, f"quota.{key}", "must be 0 (unlimited) or more")
    for role, limits in q.roles.items():
        for k, v in limits.items():
            need(k in ("daily", "monthly"), f"quota.roles.{role}.{k}",
                 "is unknown (daily, monthly)")
            need(isinstance(v, int) and v >= 0, f"quota.roles.{role}.{k}", "must be a whole number")
    j = s.jobs
    need(j.max_running_per_user >= 1, "jobs.max_running_per_user", "must be at least 1")
    need(j.max_queued_per_user >= 1, "jobs.max_queued_per_user", "must be at least 1")
    need(j.max_queue >= 1, "jobs.max_queue", "must be at least 1")
    need(j.retry_interrupted >= 0, "jobs.retry_interrupted", "must be 0 or more")
    need(j.job_timeout_s > 0, "jobs.job_timeout_s", "must be positive")
    a = s.actions
    need(0 < a.refine_strength <= 1, "actions.refine_strength", "must be in (0, 1]")
    need(0 < a.vary_strength <= 1, "actions.vary_strength", "must be in (0, 1]")
    need(1 <= s.web.port <= 65535, "web.port", "must be 1..65535")
    need(s.bot.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"), "bot.log_level",
         "must be DEBUG, INFO, WARNING or ERROR")
    for admin in s.bot.admins:
        need(":" in admin, "bot.admins", f"entries look like 'platform:user_id' (got {admin!r})")
