"""Platform adapters: one package per platform, each exporting one descriptor.

Every package here has the same shape: its ``__init__`` holds ``ADAPTER``, a
:class:`bot.core.AdapterSpec` (``name``, ``enabled(settings)``, ``serve(core, settings,
ready)``), and imports no platform library; the modules beside it do the translating and are
imported only when the adapter starts. So a missing ``discord.py`` stops nobody but Discord.

``imagine-bot serve`` imports each module named in :data:`REGISTRY`, asks its
``enabled(settings)`` (which may raise :class:`bot.errors.ConfigError` for a setup that must
not start, e.g. a playground exposed without a token: before any data is touched), and runs
the ``serve`` of every enabled one on one core. Adapters import :mod:`bot.core`,
:mod:`bot.types` and :mod:`bot.errors` and nothing else of ``bot`` (tests/test_architecture.py).

Adding a platform: a package with the same shape, and its module name here.
"""

from __future__ import annotations

REGISTRY: tuple[str, ...] = ("adapters.web", "adapters.discord", "adapters.slack")

__all__ = ["REGISTRY"]
