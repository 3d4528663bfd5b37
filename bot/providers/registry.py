"""Provider names and the one place that turns a config section into a provider.

Provider modules are imported lazily, so a deployment that only uses the offline renderer
never imports (or validates) the remote ones.
"""

from __future__ import annotations

from collections.abc import Mapping

from bot.errors import ConfigError
from bot.providers.base import Provider

PROVIDER_NAMES: tuple[str, ...] = (
    "offline",
    "stability",
    "automatic1111",
    "cerebrium",
    "openai",
    "comfyui",
    "horde",
)


# The environment variables each provider reads: (name, is_secret). doctor lists them for the
# providers a deployment uses: secrets as set/not set, addresses with their value.
ENV_SETTINGS: Mapping[str, tuple[tuple[str, bool], ...]] = {
    "offline": (),
    "stability": (("STABILITY_API_KEY", True), ("STABILITY_API_BASE_URL", False)),
    "automatic1111": (
        ("AUTOMATIC1111_BASE_URL", False),
        ("AUTOMATIC1111_USER", False),
        ("AUTOMATIC1111_PASSWORD", True),
    ),
    "cerebrium": (("CEREBRIUM_API_KEY", True), ("CEREBRIUM_API_BASE_URL", False)),
    "openai": (("OPENAI_API_KEY", True), ("OPENAI_API_BASE_URL", False)),
    "comfyui": (("COMFYUI_BASE_URL", False), ("COMFYUI_API_KEY", True)),
    "horde": (("AI_HORDE_API_KEY", True), ("AI_HORDE_BASE_URL", False)),
}


def wanted_names(default: str, fallback: str | None, sections: Mapping[str, object]) -> list[str]:
    """The providers a configuration uses: the default, the fallback and every table."""
    names = [default, *([fallback] if fallback else []), *sections]
    return [n for n in dict.fromkeys(names) if n in PROVIDER_NAMES]


def build_each(
    default: str,
    fallback: str | None,
    sections: Mapping[str, Mapping[str, object]],
    env: Mapping[str, str],
) -> list[tuple[str, Provider | ConfigError]]:
    """Every provider a configuration uses, each built on its own: a missing key or a bad
    setting in one is returned as its ``ConfigError`` instead of stopping the others (doctor
    reports each, then checks the rest)."""
    out: list[tuple[str, Provider | ConfigError]] = []
    for name in wanted_names(default, fallback, sections):
        try:
            out.append((name, build_provider(name, sections.get(name, {}), env)))
        except ConfigError as exc:
            out.append((name, exc))
    return out


def default_provider_name(env: Mapping[str, str], configured: str) -> str:
    """``auto`` means Stability when its key is present, else the offline renderer."""
    if configured and configured != "auto":
        return configured
    return "stability" if env.get("STABILITY_API_KEY", "").strip() else "offline"


def build_provider(name: str, section: Mapping[str, object], env: Mapping[str, str]) -> Provider:
    if name == "offline":
        from bot.providers.offline import OfflineProvider, OfflineSettings

        return OfflineProvider(OfflineSettings.from_mapping(section))
    if name == "stability":
        from bot.providers.stability import StabilityProvider, StabilitySettings

        return StabilityProvider(StabilitySettings.from_mapping(section, env))
    if name == "automatic1111":
        from bot.providers.automatic1111 import Automatic1111Provider, Automatic1111Settings

        a1111 = Automatic1111Settings.from_mapping(section, env)
        if a1111.servers:  # base_urls: a pool of webui servers
            from bot.providers.pool import build_pool

            return build_pool(
                a1111.servers,
                lambda s: Automatic1111Provider(a1111.for_server(s)),
                health_interval_s=a1111.health_interval_s,
            )
        return Automatic1111Provider(a1111)
    if name == "cerebrium":
        from bot.providers.cerebrium import CerebriumProvider, CerebriumSettings

        return CerebriumProvider(CerebriumSettings.from_mapping(section, env))
    if name == "openai":
        from bot.providers.openai import OpenAIProvider, OpenAISettings

        return OpenAIProvider(OpenAISettings.from_mapping(section, env))
    if name == "comfyui":
        from bot.providers.comfyui import ComfyUIProvider, ComfyUISettings

        comfy = ComfyUISettings.from_mapping(section, env)
        if comfy.servers:  # base_urls: a pool of ComfyUI servers
            from bot.providers.pool import build_pool

            return build_pool(
                comfy.servers,
                lambda s: ComfyUIProvider(comfy.for_server(s)),
                health_interval_s=comfy.health_interval_s,
            )
        return ComfyUIProvider(comfy)
    if name == "horde":
        from bot.providers.horde import HordeProvider, HordeSettings

        return HordeProvider(HordeSettings.from_mapping(section, env))
    raise ConfigError(f"unknown provider {name!r}; known: {', '.join(PROVIDER_NAMES)}")
