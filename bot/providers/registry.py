"""Provider names and the one place that turns a config section into a provider.

Provider modules are imported lazily, so a deployment that only uses the offline renderer
never imports (or validates) the remote ones.
"""

from __future__ import annotations

from collections.abc import Mapping

from bot.errors import ConfigError
from bot.providers.base import Provider

PROVIDER_NAMES: tuple[str, ...] = (
    "offline", "stability", "automatic1111", "cerebrium", "openai", "comfyui", "horde",
)


def default_provider_name(env: Mapping[str, str], configured: str) -> str:
    """``auto`` means Stability when its key is present, else the offline renderer."""
    if configured and configured != "auto":
        return configured
    return "stability" if env.get("STABILITY_API_KEY", "").strip() else "offline"


def build_provider(name: str, section: Mapping[str, object],
                   env: Mapping[str, str]) -> Provider:
    if name == "offline":
        from bot.providers.offline import OfflineProvider, OfflineSettings

        return OfflineProvider(OfflineSettings.from_mapping(section))
    if name == "stability":
        from bot.providers.stability import StabilityProvider, StabilitySettings

        return StabilityProvider(StabilitySettings.from_mapping(section, env))
    if name == "automatic1111":
        from bot.providers.automatic1111 import Automatic1111Provider, Automatic1111Settings

        return Automatic1111Provider(Automatic1111Settings.from_mapping(section, env))
    if name == "cerebrium":
        from bot.providers.cerebrium import CerebriumProvider, CerebriumSettings

        return CerebriumProvider(CerebriumSettings.from_mapping(section, env))
    if name == "openai":
        from bot.providers.openai import OpenAIProvider, OpenAISettings

        return OpenAIProvider(OpenAISettings.from_mapping(section, env))
    if name == "comfyui":
        from bot.providers.comfyui import ComfyUIProvider, ComfyUISettings

        return ComfyUIProvider(ComfyUISettings.from_mapping(section, env))
    if name == "horde":
        from bot.providers.horde import HordeProvider, HordeSettings

        return HordeProvider(HordeSettings.from_mapping(section, env))
    raise ConfigError(f"unknown provider {name!r}; known: {', '.join(PROVIDER_NAMES)}")
