"""Settings: read once at start, validated, passed down. No module-level settings object.

Sources, later ones winning: the embedded defaults (the dataclasses below, mirrored and
commented in ``config/default.toml``), a TOML file (``--config PATH``), environment variables
``IMAGINE_<SECTION>__<KEY>`` (e.g. ``IMAGINE_QUOTA__USER_DAILY=20``), and programmatic
overrides (tests, benchmarks). Secrets come from the environment only and are never printed.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import tomllib
import typing
import zoneinfo
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.config_values import BadValue, coerce, is_text
from bot.errors import ConfigError
from bot.sharding import BadShards, ShardPlan, shard_plan

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
    # A command that expands to more jobs than this asks first (a Confirm button; --yes on
    # the CLI): nothing is charged until then.
    confirm_over: int = 2
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
    # Several processes on one database (store.url): a running job's lease, renewed while it
    # runs, and how often each process looks for queued jobs.
    lease_s: float = 5.0
    claim_poll_s: float = 1.0


@dataclass(frozen=True)
class ImageSettings:
    max_input_bytes: int = 20 * 1024 * 1024
    max_input_pixels: int = 4096 * 4096
    preview_max_bytes: int = 8 * 1024 * 1024
    preview_max_side: int = 1536


@dataclass(frozen=True)
class ActionSettings:
    refine_strength: float = 0.6
    vary_strength: float = 0.3  # Vary (Subtle), and the old single Vary buttons
    vary_strong_strength: float = 0.75
    collaborative: bool = True  # default for channels without their own setting
    # Upscale: the factor asked of a provider's upscaler (or of the resize), quota units per
    # upscale by provider name ("default" for the rest), and whether a provider without an
    # upscaler offers a plain resize (labelled "resized, not generated") or no Upscale button.
    upscale_factor: float = 2.0
    upscale_cost: Mapping[str, int] = field(default_factory=lambda: {"default": 1, "stability": 2})
    upscale_resize: bool = True
    pan_fraction: float = 0.5  # Pan extends the image by this share of its side

    def cost_of_upscale(self, provider: str) -> int:
        return int(self.upscale_cost.get(provider, self.upscale_cost.get("default", 1)))


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
class StoreSettings:
    # Empty: SQLite in the data dir. "postgresql://user:password@host:5432/imagine": the
    # PostgreSQL store (the [postgres] extra); its password is never shown.
    url: str = field(default="", repr=False)


@dataclass(frozen=True)
class SlackSettings:
    # Best-effort status edits (queue place, progress): per job, per channel, per workspace.
    # Slack's chat.update is Tier 3 (50+ a minute per workspace), and the result settles each
    # status message with one more: the defaults leave that room.
    status_edits_per_job: int = 3
    status_edits_per_channel_per_min: float = 20.0
    status_edits_per_workspace_per_min: float = 30.0


@dataclass(frozen=True)
class DiscordSettings:
    # Discord allows about 5 message edits per 5 s in a channel (and discord.py waits out
    # its buckets); status edits get at most half of that.
    status_edits_per_job: int = 3
    status_edits_per_channel_per_min: float = 30.0
    # Gateway shards (bot/sharding.py): unset for one connection, "auto" for Discord's
    # recommended count, or the total over all processes with this process's shard_ids.
    shards: int | str | None = None
    shard_ids: tuple[int, ...] = ()

    def shard_plan(self) -> ShardPlan | None:
        """None where sharding is off (the settings were checked when loaded)."""
        return shard_plan(self.shards, self.shard_ids)

    # One thread per job: its result, buttons and children go in a thread on its status
    # message, which stays one line in the channel. Needs Create Public Threads.
    threads: bool = False


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
    store: StoreSettings = field(default_factory=StoreSettings)
    slack: SlackSettings = field(default_factory=SlackSettings)
    discord: DiscordSettings = field(default_factory=DiscordSettings)
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
    "store": StoreSettings,
    "slack": SlackSettings,
    "discord": DiscordSettings,
}


def _suggest(word: str, choices: Iterable[str]) -> str | None:
    """The closest real name to a misspelt one, if any is close."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return close[0] if close else None


KeyPath = tuple[str, ...]


@dataclass(frozen=True)
class _Origin:
    """Where one setting was set: an environment variable, a config file, or an override."""

    env_var: str | None = None
    file: Path | None = None


class _Sources:
    """Remembers which layer set each setting, so that an error can name it (never a value)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        # Insertion-ordered, a later layer's entry moved to the end: the last match wins.
        self._origins: dict[KeyPath, _Origin] = {}

    def add_layer(self, layer: Mapping[str, Any], origin: _Origin) -> None:
        for path in _leaves(layer):
            self._set(path, origin)

    def add_env(self, names: Mapping[KeyPath, str]) -> None:
        for path, name in names.items():
            self._set(path, _Origin(env_var=name))

    def _set(self, path: KeyPath, origin: _Origin) -> None:
        self._origins.pop(path, None)
        self._origins[path] = origin

    def origin(self, path: KeyPath) -> tuple[KeyPath, _Origin] | None:
        """The origin of ``path``, or of the last-set setting under it (for a table)."""
        if path in self._origins:
            return path, self._origins[path]
        found = None
        for leaf, origin in self._origins.items():
            if leaf[: len(path)] == path:
                found = (leaf, origin)
        return found

    def describe(self, path: KeyPath) -> str:
        """``from the environment variable IMAGINE_X__Y``, ``in FILE: [x] y``, or ``""`` for a
        default: names only, never a value."""
        found = self.origin(path)
        if found is None:
            return ""
        leaf, origin = found
        if origin.env_var is not None:
            return f"from the environment variable {origin.env_var}"
        if origin.file is not None:
            table, key = ".".join(leaf[:-1]), leaf[-1]
            return f"in {origin.file}: " + (f"[{table}] {key}" if table else f"top-level {key}")
        return "from a command-line option or program override"

    def where(self, path: KeyPath, *before: str) -> str:
        """`` (got 5, from the environment variable ...)``: the details in one parenthesis."""
        parts = [p for p in (*before, self.describe(path)) if p]
        return f" ({', '.join(parts)})" if parts else ""

    def env_text(self, path: KeyPath) -> str | None:
        """The raw text of the environment variable that set ``path``, if one did."""
        found = self._origins.get(path)
        if found is None or found.env_var is None:
            return None
        return self._env.get(found.env_var)


def _leaves(tree: Mapping[str, Any], prefix: KeyPath = ()) -> Iterator[KeyPath]:
    """Every setting's path in a nested mapping; an empty table counts as one."""
    if prefix and not tree:
        yield prefix
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key)


def _env_name(path: KeyPath) -> str:
    return ENV_PREFIX + "__".join(p.upper() for p in path)


def _unknown(
    kind: str, path: KeyPath, known: Iterable[str], sources: _Sources, known_label: str
) -> ConfigError:
    """``Unknown setting quota.user_dayly (from ...). Did you mean quota.user_daily? ...``"""
    known = sorted(known)
    dotted = ".".join(path)
    if kind == "section":
        head = f"Unknown config section [{dotted}]"
    else:
        head = f"Unknown setting {dotted}"
    message = head + sources.where(path) + "."
    close = _suggest(path[-1], known)
    if close is not None:
        real = (*path[:-1], close)
        shown = f"[{'.'.join(real)}]" if kind == "section" else ".".join(real)
        found = sources.origin(path)
        if found is not None and found[1].env_var is not None:
            leaf = found[0]  # the variable as it should have been spelt
            shown += f" ({_env_name((*real, *leaf[len(path) :]))})"
        message += f" Did you mean {shown}?"
    return ConfigError(f"{message} {known_label}: {', '.join(known)}.")


def _build(section: str, cls: type[Any], raw: Mapping[str, Any], sources: _Sources) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        path = (section, key)
        if key not in fields:
            raise _unknown("setting", path, fields, sources, f"Known keys in [{section}]")
        hint = hints[key]
        text = sources.env_text(path)
        if text is not None and is_text(hint) and not isinstance(value, str):
            value = text  # IMAGINE_WEB__ACCESS_TOKEN=123456 is text, not a number
        try:
            kwargs[key] = coerce(value, hint)
        except BadValue as exc:
            # A field kept out of repr (a token) is never echoed back.
            got = f"got {value!r}" if fields[key].repr else ""
            raise ConfigError(f"Setting {section}.{key} {exc}{sources.where(path, got)}.") from None
    return cls(**kwargs)


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _env_layer(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[KeyPath, str]]:
    """The ``IMAGINE_<SECTION>__<KEY>`` variables as a nested table, and which variable set
    each path."""
    layer: dict[str, Any] = {}
    names: dict[KeyPath, str] = {}
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = tuple(p.lower() for p in name[len(ENV_PREFIX) :].split("__"))
        if not all(path):
            raise ConfigError(
                f"Environment variable {name} is not IMAGINE_<SECTION>__<KEY> "
                "(e.g. IMAGINE_QUOTA__USER_DAILY)."
            )
        try:
            value: Any = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # plain text such as a path
        node = layer
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):  # IMAGINE_WEB=1 beside IMAGINE_WEB__PORT=2
                child = node[part] = {}
            node = child
        node[path[-1]] = value
        names[path] = name
    return layer, names


def _provider_keys(name: str) -> frozenset[str] | None:
    """The keys a provider's table takes, read from its module (imported only when its table
    is present, as building it would); ``None`` where the module does not list them."""
    if name == "offline":
        from bot.providers.offline import OfflineSettings

        return frozenset(f.name for f in dataclasses.fields(OfflineSettings))
    try:
        module = importlib.import_module(f"bot.providers.{name}")
        from bot.providers.http import POLICY_KEYS
    except ImportError:
        return None
    keys = getattr(module, "SETTING_KEYS", None)
    if not isinstance(keys, frozenset):
        return None
    # api_key is refused by the provider itself, with a message naming its variable.
    return frozenset(str(k) for k in keys) | POLICY_KEYS | {"api_key"}


def _build_providers(raw: Mapping[str, Any], sources: _Sources) -> ProviderSettings:
    from bot.providers.registry import PROVIDER_NAMES

    prov_raw = dict(raw)
    default = prov_raw.pop("default", "auto")
    fallback = prov_raw.pop("fallback", "")
    for key, value in (("default", default), ("fallback", fallback)):
        if not isinstance(value, str):
            raise ConfigError(
                f"Setting providers.{key} must be text{sources.where(('providers', key))}."
            )
    top_keys = ("default", "fallback", *PROVIDER_NAMES)
    for name, section in prov_raw.items():
        path = ("providers", name)
        if not isinstance(section, Mapping):
            if name in PROVIDER_NAMES:
                raise ConfigError(f"Setting providers.{name} must be a table{sources.where(path)}.")
            raise _unknown("setting", path, top_keys, sources, "Known keys in [providers]")
        if name not in PROVIDER_NAMES:
            raise _unknown("section", path, PROVIDER_NAMES, sources, "Known providers")
        keys = _provider_keys(name)
        if keys is None:
            continue  # the provider checks its own table when it is built
        for key in section:
            if key not in keys:
                raise _unknown(
                    "setting",
                    (*path, key),
                    keys - {"api_key"},
                    sources,
                    f"Known keys in [providers.{name}]",
                )
    return ProviderSettings(default=default, fallback=fallback, sections=prov_raw)


def load_settings(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read and validate settings; raise :class:`ConfigError` naming the bad key and where it
    was set (the environment variable, or the file and its table)."""
    env = dict(os.environ if env is None else env)
    sources = _Sources(env)
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"Config file {path} does not exist.") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"Config file {path} is not valid TOML: {exc}") from None
        sources.add_layer(raw, _Origin(file=Path(path)))
    env_layer, env_names = _env_layer(env)
    raw = _merge(raw, env_layer)
    sources.add_env(env_names)
    if overrides:
        raw = _merge(raw, overrides)
        sources.add_layer(overrides, _Origin())

    top = {*_SECTIONS, "providers", "styles"}
    for name in raw:
        if name not in top:
            raise _unknown("section", (name,), top, sources, "Known sections")
        if not isinstance(raw[name], Mapping):
            raise ConfigError(f"Setting {name} must be a table{sources.where((name,))}.")
    built: dict[str, Any] = {
        name: _build(name, cls, raw.get(name, {}), sources) for name, cls in _SECTIONS.items()
    }
    built["providers"] = _build_providers(raw.get("providers", {}), sources)
    styles = raw.get("styles", {})
    if not all(isinstance(v, str) for v in styles.values()):
        bad = next(k for k, v in styles.items() if not isinstance(v, str))
        raise ConfigError(
            'Settings under [styles] must be name = "template with {prompt}"'
            f"{sources.where(('styles', bad))}."
        )
    built["styles"] = dict(styles)
    web: WebSettings = built["web"]
    if web.access_token is None and env.get("WEB_ACCESS_TOKEN"):
        built["web"] = dataclasses.replace(web, access_token=env["WEB_ACCESS_TOKEN"])
    settings = Settings(**built, env=env)
    _validate(settings, sources)
    return settings


def _validate(s: Settings, sources: _Sources) -> None:
    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise ConfigError(f"Setting {key} {what}{sources.where(tuple(key.split('.')))}.")

    g = s.grammar
    need(1 <= g.max_images <= 10, "grammar.max_images", "must be 1..10")
    need(1 <= g.default_n <= g.max_images, "grammar.default_n", "must be 1..grammar.max_images")
    need(1 <= g.max_prompt_chars <= 10000, "grammar.max_prompt_chars", "must be 1..10000")
    need(1 <= g.max_permutations <= 64, "grammar.max_permutations", "must be 1..64")
    need(1 <= g.confirm_over <= 64, "grammar.confirm_over", "must be 1..64")
    need(256 <= g.base_side <= 2048, "grammar.base_side", "must be 256..2048")
    q = s.quota
    try:
        zoneinfo.ZoneInfo(q.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"Setting quota.timezone: unknown time zone {q.timezone!r}"
            f"{sources.where(('quota', 'timezone'))}."
        ) from None
    for key in ("user_daily", "user_monthly", "workspace_daily", "workspace_monthly"):
        need(getattr(q, key) >= 0, f"quota.{key}", "must be 0 (unlimited) or more")
    for role, limits in q.roles.items():
        for k, v in limits.items():
            need(
                k in ("daily", "monthly"), f"quota.roles.{role}.{k}", "is unknown (daily, monthly)"
            )
            need(isinstance(v, int) and v >= 0, f"quota.roles.{role}.{k}", "must be a whole number")
    j = s.jobs
    need(j.max_running_per_user >= 1, "jobs.max_running_per_user", "must be at least 1")
    need(j.max_queued_per_user >= 1, "jobs.max_queued_per_user", "must be at least 1")
    need(j.max_queue >= 1, "jobs.max_queue", "must be at least 1")
    need(j.retry_interrupted >= 0, "jobs.retry_interrupted", "must be 0 or more")
    need(j.job_timeout_s > 0, "jobs.job_timeout_s", "must be positive")
    need(0.2 <= j.lease_s <= 600, "jobs.lease_s", "must be 0.2..600 seconds")
    need(0.05 <= j.claim_poll_s <= 60, "jobs.claim_poll_s", "must be 0.05..60 seconds")
    a = s.actions
    need(0 < a.refine_strength <= 1, "actions.refine_strength", "must be in (0, 1]")
    need(0 < a.vary_strength <= 1, "actions.vary_strength", "must be in (0, 1]")
    need(0 < a.vary_strong_strength <= 1, "actions.vary_strong_strength", "must be in (0, 1]")
    need(1 < a.upscale_factor <= 4, "actions.upscale_factor", "must be in (1, 4]")
    need(0 < a.pan_fraction <= 1, "actions.pan_fraction", "must be in (0, 1]")
    need(
        all(
            isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 100
            for v in a.upscale_cost.values()
        ),
        "actions.upscale_cost",
        "must map provider names to whole numbers 1..100",
    )
    need(1 <= s.web.port <= 65535, "web.port", "must be 1..65535")
    for name in ("slack", "discord"):
        p = getattr(s, name)
        need(p.status_edits_per_job >= 1, f"{name}.status_edits_per_job", "must be at least 1")
        need(
            p.status_edits_per_channel_per_min > 0,
            f"{name}.status_edits_per_channel_per_min",
            "must be positive",
        )
    need(
        s.slack.status_edits_per_workspace_per_min > 0,
        "slack.status_edits_per_workspace_per_min",
        "must be positive",
    )
    try:
        s.discord.shard_plan()
    except BadShards as exc:
        need(False, exc.key, exc.what)
    need(
        s.bot.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
        "bot.log_level",
        "must be DEBUG, INFO, WARNING or ERROR",
    )
    if s.store.url:
        from bot.storage.url import BadStoreUrl, parse

        try:
            parse(s.store.url)
        except BadStoreUrl as exc:
            need(False, "store.url", str(exc))
    for admin in s.bot.admins:
        need(":" in admin, "bot.admins", f"entries look like 'platform:user_id' (got {admin!r})")
