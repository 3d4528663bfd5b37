"""The adapters in ``adapters.REGISTRY``, imported by name: ``serve`` starts the enabled ones
and ``doctor`` runs their token checks. The core never imports a platform package statically
(tests/test_architecture.py); this is the one place that finds them.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence

from bot.config import Settings
from bot.core import AdapterSpec
from bot.errors import ConfigError

log = logging.getLogger("bot")

ADAPTERS_PACKAGE = "adapters"


def registered_adapters() -> list[AdapterSpec]:
    """Every adapter in the registry that can be imported, in registry order. A package that
    cannot even be imported is reported and skipped: the others still run."""
    registry: Sequence[str] = importlib.import_module(ADAPTERS_PACKAGE).REGISTRY
    specs = []
    for module_name in registry:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            log.warning(
                "adapter %s cannot be loaded (%s); the others still start", module_name, exc
            )
            continue
        spec = getattr(module, "ADAPTER", None)
        if not isinstance(spec, AdapterSpec):
            raise ConfigError(f"{module_name} is in the adapter registry but has no ADAPTER.")
        specs.append(spec)
    return specs


def enabled_adapters(settings: Settings) -> list[AdapterSpec]:
    """The registry's adapters whose ``enabled(settings)`` is true, in registry order.

    An adapter may refuse a setup here (ConfigError), before any data is touched."""
    return [spec for spec in registered_adapters() if spec.enabled(settings)]
