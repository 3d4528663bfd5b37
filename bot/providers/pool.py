"""A pool of GPU servers behind one provider: several AUTOMATIC1111/Forge or ComfyUI servers.

Configured in the provider's table with ``base_urls`` instead of ``base_url`` (one of the two)::

    [providers.automatic1111]
    max_concurrency = 1                      # the default for each server
    base_urls = ["http://gpu-a:7860", { url = "http://gpu-b:7860", max_concurrency = 2 }]
    health_interval_s = 5

Each server is one ordinary single-server provider (its own HTTP client, circuit breaker and
catalog), built by the provider module; :class:`PooledProvider` in front of them is what the
core sees. Its ``capabilities.max_concurrency`` is the pool's total slots, so the JobRunner's
per-provider limit (the fair queue and the call slots) lets exactly that many calls through.

- A call takes a free slot on the least busy server that is up (busy / slots, then the one
  used longest ago), so it never waits behind a busy server while another has room; when every
  server that is up is full, it waits for the first slot to come free.
- A server that refuses the connection (nothing was sent, so nothing ran and nothing is
  charged) is marked down at once and the call moves to another server. A member's circuit
  breaker pausing it moves the call too. Any other failure is the call's own, as before.
- One background health check per server (``health_interval_s``) on an endpoint the server
  really has (the webui's ``/sdapi/v1/progress``, ComfyUI's ``/system_stats``): an answer
  brings a down server back; a refused connection marks an idle one down before a job finds it.
- Every server down: the call fails at once with a clear message (the core refunds it).
- The result names the server that made it (``GenerationResult.server``): Info shows it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, cast

from bot.errors import ConfigError
from bot.providers.base import (
    Capabilities,
    CheckFailed,
    GenerationRequest,
    GenerationResult,
    NotSupported,
    Progress,
    ProgressCallback,
    ProviderError,
    ProviderUnavailable,
)
from bot.providers.http import ServerUnreachable, ServicePaused
from bot.providers.policy import get_float, get_url

log = logging.getLogger(__name__)

POOL_KEYS = frozenset({"base_urls", "health_interval_s"})
MAX_SLOTS = 16

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class ServerSpec:
    url: str
    max_concurrency: int = 1


def parse_servers(
    section: Mapping[str, object],
    prefix: str,
    env: Mapping[str, str],
    env_name: str,
    *,
    default_concurrency: int,
) -> tuple[ServerSpec, ...]:
    """The ``base_urls`` list: each entry a URL string or ``{url, max_concurrency}``; empty
    when the table uses ``base_url`` (a single server, no pool)."""
    raw = section.get("base_urls")
    if raw is None:
        return ()
    if "base_url" in section:
        raise ConfigError(f"{prefix}: set base_url or base_urls, not both")
    if env.get(env_name):
        raise ConfigError(
            f"{env_name} names one server but {prefix}.base_urls lists a pool: set one of the two"
        )
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{prefix}.base_urls must be a non-empty list of server URLs")
    servers: list[ServerSpec] = []
    for i, entry in enumerate(raw):
        key = f"base_urls[{i}]"
        slots = default_concurrency
        if isinstance(entry, Mapping):
            unknown = set(entry) - {"url", "max_concurrency"}
            if unknown:
                raise ConfigError(
                    f"{prefix}.{key}: unknown keys {sorted(unknown)} (known: url, max_concurrency)"
                )
            value = entry.get("url")
            if "max_concurrency" in entry:
                slots = entry["max_concurrency"]
                if (
                    not isinstance(slots, int)
                    or isinstance(slots, bool)
                    or not 1 <= slots <= MAX_SLOTS
                ):
                    raise ConfigError(
                        f"{prefix}.{key}.max_concurrency must be an integer 1..{MAX_SLOTS}"
                    )
        else:
            value = entry
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(
                f'{prefix}.{key} must be a URL or {{url = "...", max_concurrency = N}}'
            )
        url = get_url({key: value.strip()}, key, "", prefix, {}, None)
        if any(s.url == url for s in servers):
            raise ConfigError(f"{prefix}.{key}: {url} is listed twice")
        servers.append(ServerSpec(url, slots))
    return tuple(servers)


def parse_health_interval(section: Mapping[str, object], prefix: str) -> float:
    return get_float(section, "health_interval_s", 5.0, prefix, lo=0.05, hi=3600.0)


class PoolMember(Protocol):
    """One server's provider, as the provider module builds it for a pool."""

    name: str
    label: str

    @property
    def capabilities(self) -> Capabilities: ...

    async def generate(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult: ...

    async def check(self) -> dict[str, str]: ...

    async def ping(self) -> None:
        """One cheap request to a route the server always has; raises a ProviderError."""
        ...

    async def aclose(self) -> None: ...


class _Server:
    def __init__(self, spec: ServerSpec, member: PoolMember) -> None:
        self.url = spec.url
        self.slots = spec.max_concurrency
        self.member = member
        self.busy = 0
        self.up = True
        self.cause = ""
        self.turn = 0  # when it was last given a call

    def state(self) -> str:
        if self.up:
            return f"up, {self.busy}/{self.slots} busy"
        return f"down ({self.cause})" if self.cause else "down"


class PooledProvider:
    """Several servers of one provider as one :class:`bot.providers.base.Provider`."""

    def __init__(
        self,
        members: Sequence[tuple[ServerSpec, PoolMember]],
        *,
        health_interval_s: float = 5.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not members:
            raise ValueError("a pool needs at least one server")
        self._servers = [_Server(spec, member) for spec, member in members]
        first = self._servers[0].member
        self.name = first.name
        self.label = first.label
        self._interval = health_interval_s
        self._sleep = sleep
        self._turns = itertools.count(1)
        self._changed = asyncio.Event()
        self._watchers: list[asyncio.Task[None]] = []
        self._closed = False
        self.total_slots = sum(s.slots for s in self._servers)
        self._caps_of: Capabilities | None = None  # the member capabilities _caps was made from
        self._caps = first.capabilities

    # ------------------------------------------------------------------ the provider face
    @property
    def capabilities(self) -> Capabilities:
        # Read at every dispatch: made again only when the member's own capabilities change.
        base = next((s for s in self._servers if s.up), self._servers[0]).member.capabilities
        if base is not self._caps_of:
            self._caps_of, self._caps = base, replace(base, max_concurrency=self.total_slots)
        return self._caps

    def servers(self) -> list[tuple[str, str]]:
        """(url, state) of each server, in the configured order."""
        return [(s.url, s.state()) for s in self._servers]

    async def refresh(self) -> None:
        """Read each server's catalog (the webui's samplers and models); the pool offers the
        first one's. Fails only when no server answers."""
        self._watch()
        calls = [
            (s, refresh)
            for s in self._servers
            if (refresh := getattr(s.member, "refresh", None)) is not None
        ]
        results = await asyncio.gather(*(r() for _, r in calls), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        members = [s for s, _ in calls]
        for server, result in zip(members, results, strict=True):
            if isinstance(result, ServerUnreachable):
                self._mark_down(server, result)
        if members and len(errors) == len(members):
            raise errors[0]

    async def generate(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        return await self._on_a_server(lambda m: m.generate(req, progress), progress)

    async def upscale(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        """An image verb, on a free server like a generation (bot.providers.edits)."""
        return await self._on_a_server(lambda m: _editor(m, "upscale")(req, progress), progress)

    async def outpaint(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        return await self._on_a_server(lambda m: _editor(m, "outpaint")(req, progress), progress)

    async def _on_a_server(
        self,
        call: Callable[[PoolMember], Awaitable[GenerationResult]],
        progress: ProgressCallback | None,
    ) -> GenerationResult:
        self._watch()
        tried: set[str] = set()
        while True:
            server = await self._acquire(tried, progress)
            try:
                result = await call(server.member)
            except ServerUnreachable as exc:
                # Refused: nothing reached it, so nothing ran and nothing is charged.
                self._mark_down(server, exc)
                tried.add(server.url)
                continue
            except ServicePaused:
                # Its own breaker paused it (no request was sent): another server may serve.
                tried.add(server.url)
                continue
            finally:
                self._release(server)
            return replace(result, server=server.url)

    async def check(self) -> dict[str, str]:
        """Each server checked on its own; ``servers`` names each one and its state."""
        results = await asyncio.gather(
            *(s.member.check() for s in self._servers), return_exceptions=True
        )
        facts: dict[str, str] | None = None
        states: list[str] = []
        down: list[str] = []
        for server, result in zip(self._servers, results, strict=True):
            if isinstance(result, BaseException):
                cause = result.cause if isinstance(result, CheckFailed) else type(result).__name__
                states.append(f"{server.url} down ({cause})")
                down.append(server.url)
            else:
                states.append(f"{server.url} up ({server.slots} slots)")
                if facts is None:
                    facts = {k: v for k, v in result.items() if k not in ("base_url", "warning")}
                    if "warning" in result:
                        facts["warning"] = result["warning"]
        if facts is None:
            raise CheckFailed(
                ", ".join(s.url for s in self._servers),
                "no server of the pool answered: " + "; ".join(states),
            )
        facts["servers"] = "; ".join(states)
        facts["slots"] = str(self.total_slots)
        if down:
            note = f"{len(down)} of {len(self._servers)} servers down: {', '.join(down)}"
            facts["warning"] = f"{facts['warning']}; {note}" if "warning" in facts else note
        return facts

    async def aclose(self) -> None:
        self._closed = True
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        self._watchers.clear()
        for server in self._servers:
            await server.member.aclose()

    # ---------------------------------------------------------------------------- slots
    async def _acquire(self, tried: set[str], progress: ProgressCallback | None) -> _Server:
        told = False
        while True:
            candidates = [s for s in self._servers if s.up and s.url not in tried]
            if not candidates:
                raise self._all_down()
            free = [s for s in candidates if s.busy < s.slots]
            if free:
                server = min(free, key=lambda s: (s.busy / s.slots, s.turn))
                server.busy += 1
                server.turn = next(self._turns)
                return server
            if progress is not None and not told:
                told = True
                progress(Progress(0.0, f"waiting for a free {self.label} server"))
            await self._changed.wait()

    def _release(self, server: _Server) -> None:
        server.busy -= 1
        self._notify()

    def _notify(self) -> None:
        """Wake every waiting call; each looks at the pool again."""
        self._changed.set()
        self._changed = asyncio.Event()

    def _all_down(self) -> ProviderUnavailable:
        n = len(self._servers)
        states = "; ".join(f"{s.url} {s.state()}" for s in self._servers)
        return ProviderUnavailable(
            f"no {self.label} server of the pool is reachable: {states}",
            user_message=(
                f"None of the {n} {self.label} servers can be reached right now. Your quota "
                "was refunded; try again in a minute."
                if n > 1
                else f"The {self.label} server cannot be reached right now. Your quota was "
                "refunded; try again in a minute."
            ),
        )

    def _mark_down(self, server: _Server, exc: ProviderError) -> None:
        server.cause = exc.message[:200]
        if server.up:
            server.up = False
            log.warning(
                "%s server %s is down (%s); its jobs go to the other servers",
                self.label,
                server.url,
                server.cause,
            )
        self._notify()  # waiting calls must see it: they may have nowhere left to go

    def _mark_up(self, server: _Server) -> None:
        if not server.up:
            server.up = True
            server.cause = ""
            log.info("%s server %s answers again; back in the pool", self.label, server.url)
            self._notify()

    # --------------------------------------------------------------------- health checks
    def _watch(self) -> None:
        if self._watchers or self._closed:
            return
        self._watchers = [
            asyncio.create_task(self._health(s), name=f"pool-health {s.url}") for s in self._servers
        ]

    async def _health(self, server: _Server) -> None:
        while True:
            await self._sleep(self._interval)
            try:
                await server.member.ping()
            except ServerUnreachable as exc:
                self._mark_down(server, exc)
            except ProviderError as exc:
                # It answered with an error or too slowly: no verdict for a server that is
                # up (it may be busy); a down one stays down until it answers properly.
                if not server.up:
                    server.cause = exc.message[:200]
            except Exception:  # the watcher must outlive any surprise
                log.exception("%s health check of %s failed", self.label, server.url)
            else:
                self._mark_up(server)


def _editor(
    member: PoolMember, name: str
) -> Callable[[GenerationRequest, ProgressCallback | None], Awaitable[GenerationResult]]:
    method = getattr(member, name, None)
    if method is None:
        raise NotSupported(f"this server cannot {name}")
    return cast(
        "Callable[[GenerationRequest, ProgressCallback | None], Awaitable[GenerationResult]]",
        method,
    )


def build_pool(
    servers: Sequence[ServerSpec],
    member: Callable[[ServerSpec], PoolMember],
    *,
    health_interval_s: float,
) -> PooledProvider:
    return PooledProvider([(s, member(s)) for s in servers], health_interval_s=health_interval_s)


__all__ = [
    "POOL_KEYS",
    "PoolMember",
    "PooledProvider",
    "ServerSpec",
    "build_pool",
    "parse_health_interval",
    "parse_servers",
]
