"""The configured providers, built once at start and closed at shutdown."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from bot.config import ProviderSettings
from bot.errors import ConfigError
from bot.providers.base import Provider
from bot.providers.registry import PROVIDER_NAMES, build_provider, default_provider_name

log = logging.getLogger(__name__)


class ProviderHub:
    def __init__(self, providers: Mapping[str, Provider], default: str, fallback: str | None):
        self._providers = dict(providers)
        self.default = default
        self.fallback = fallback

    def get(self, name: str) -> Provider:
        try:
            return self._providers[name]
        except KeyError:
            raise ConfigError(f"Provider {name!r} is not configured.") from None

    def names(self) -> list[str]:
        return list(self._providers)

    def items(self) -> list[tuple[str, Provider]]:
        return list(self._providers.items())

    def warnings(self) -> list[str]:
        """What the providers found at start-up that an admin should act on before it breaks
        (e.g. OpenAI's announced shutdown of the configured model), as "name: text"."""
        return [
            f"{name}: {text}"
            for name, provider in self._providers.items()
            for text in getattr(provider, "warnings", ())
        ]

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        settings: ProviderSettings,
        env: Mapping[str, str],
        extra: Mapping[str, Provider] | None = None,
    ) -> AsyncIterator[ProviderHub]:
        """Build the configured providers. ``extra`` adds ready-made providers by name (an
        embedding application's own, or a benchmark's instant one)."""
        extra = dict(extra or {})
        default = default_provider_name(env, settings.default)
        fallback = settings.fallback or None
        for key, name in (("providers.default", default), ("providers.fallback", fallback)):
            if name is not None and name not in PROVIDER_NAMES and name not in extra:
                raise ConfigError(
                    f"Setting {key}: unknown provider {name!r}. Known: {', '.join(PROVIDER_NAMES)}"
                )
        wanted = {default, *(n for n in settings.sections if n in PROVIDER_NAMES)} - set(extra)
        if fallback:
            wanted.add(fallback)
        for name in settings.sections:
            if name not in PROVIDER_NAMES:
                raise ConfigError(
                    f"Unknown config section [providers.{name}]. Known: {', '.join(PROVIDER_NAMES)}"
                )
        built: dict[str, Provider] = dict(extra)
        try:
            for name in sorted(wanted - set(extra)):
                built[name] = build_provider(name, settings.sections.get(name, {}), env)
            hub = cls(built, default, fallback)
            for name, provider in built.items():
                refresh = getattr(provider, "refresh", None)
                # The default and the fallback are the ones that serve jobs: read what they
                # offer (and what they warn about, e.g. an announced model shutdown) now.
                if refresh is not None and name in (default, fallback):
                    try:
                        await refresh()
                    except Exception as exc:  # a dead service must not stop the bot starting
                        log.warning(
                            "provider %s: could not read its capabilities (%s)",
                            name,
                            type(exc).__name__,
                        )
            yield hub
        finally:
            for provider in built.values():
                await provider.aclose()
