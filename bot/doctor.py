"""``imagine-bot doctor``: checks the config, the data dir, the database, each provider and
each configured platform's tokens (through the adapter's ``check``, so the platform's own SDK
does the asking; the core compares the scopes Slack reports with what the bot asks for).

Split out of :mod:`bot.cli`, which still re-exports :func:`cmd_doctor` and
:func:`secret_env_names`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace

from bot import setup
from bot.adapter_registry import registered_adapters
from bot.app import App
from bot.config import SECRET_ENV, ProviderSettings, Settings
from bot.core import AdapterSpec
from bot.errors import ConfigError, StoreUnavailable
from bot.providers.base import CheckFailed, ProviderError
from bot.providers.registry import (
    ENV_SETTINGS,
    PROVIDER_NAMES,
    build_each,
    default_provider_name,
    wanted_names,
)
from bot.storage.url import masked

log = logging.getLogger("bot")

PLATFORM_TIMEOUT_S = 30.0


def secret_env_names() -> list[str]:
    """Every secret the bot reads: the platforms' (``SECRET_ENV``) and each provider's."""
    names = list(SECRET_ENV)
    names += [
        n for envs in ENV_SETTINGS.values() for n, secret in envs if secret and n not in names
    ]
    return names


async def cmd_doctor(settings: Settings, args: argparse.Namespace) -> int:
    ok = True

    def line(good: bool, text: str) -> None:
        nonlocal ok
        ok = ok and good
        print(f"[{'ok' if good else 'FAIL'}] {text}")

    line(True, f"config valid (providers.default = {settings.providers.default})")
    prov = settings.providers
    default = default_provider_name(settings.env, prov.default)
    used = wanted_names(default, prov.fallback or None, prov.sections)
    for name in secret_env_names():
        print(f"     {name}: {'set' if settings.env.get(name) else 'not set'}")
    for provider_name in used:  # addresses are no secret: the value itself helps
        for name, secret in ENV_SETTINGS.get(provider_name, ()):
            if not secret:
                print(f"     {name}: {settings.env.get(name) or 'not set (the default)'}")
    data_dir = settings.data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / ".doctor-probe"
        probe.write_text("ok")
        probe.unlink()
        line(True, f"data dir {data_dir.resolve()} is writable")
    except OSError as exc:
        line(False, f"data dir {data_dir} is not writable ({exc.strerror})")
        return 1
    # The providers are built and checked one by one below, so that a missing key or a dead
    # service in one is a failed line, not the end of the report.
    app_settings = replace(settings, providers=ProviderSettings(default="offline"))
    if settings.store.url:  # the password never: masked() is the only form shown
        print(f"     store.url: {masked(settings.store.url)}")
    try:
        async with App.open(app_settings, start=False) as app:
            await _check_database(app, line)
    except StoreUnavailable as exc:
        line(False, f"database: {exc}")
    for name in (default, prov.fallback, *prov.sections):
        if name and name not in PROVIDER_NAMES:
            line(False, f"provider {name}: unknown; known: {', '.join(PROVIDER_NAMES)}")
    for name, built in build_each(default, prov.fallback or None, prov.sections, settings.env):
        if isinstance(built, ConfigError):
            line(False, f"provider {name}: {built}")
            continue
        try:
            async with asyncio.timeout(30):
                facts = await built.check()
            warning = facts.pop("warning", None)
            detail = ", ".join(f"{k}={v}" for k, v in facts.items())
            line(True, f"provider {name} ({built.label}) reachable: {detail}")
            if warning:
                print(f"[warn] provider {name}: {warning}")
        except CheckFailed as exc:  # the URL it tried and why
            line(False, f"provider {name} ({built.label}): {exc.url}: {exc.cause}")
        except ProviderError as exc:
            line(False, f"provider {name} ({built.label}): {type(exc).__name__}: {exc.message}")
        except TimeoutError:
            line(False, f"provider {name} ({built.label}): no answer within 30 s")
        except Exception as exc:  # report, never crash the doctor
            log.debug("doctor: %s check failed", name, exc_info=True)
            line(False, f"provider {name} ({built.label}): {type(exc).__name__}")
        finally:
            await built.aclose()
    for spec in registered_adapters():
        for good, text in await check_platform(spec, settings):
            line(good, text)
    return 0 if ok else 1


async def check_platform(spec: AdapterSpec, settings: Settings) -> list[tuple[bool, str]]:
    """The lines for one adapter's tokens: none when it is not configured or has no check."""
    if spec.check is None:
        return []
    try:
        if not spec.enabled(settings):
            return []
    except ConfigError as exc:
        return [(False, f"{spec.name}: {exc}")]
    try:
        async with asyncio.timeout(PLATFORM_TIMEOUT_S):
            results = await spec.check(settings)
    except TimeoutError:
        return [(False, f"{spec.name}: no answer within {PLATFORM_TIMEOUT_S:.0f} s")]
    except Exception as exc:  # report, never crash the doctor
        log.debug("doctor: %s check failed", spec.name, exc_info=True)
        return [(False, f"{spec.name}: the check failed ({type(exc).__name__})")]
    lines: list[tuple[bool, str]] = []
    for r in results:
        lines.append((r.ok, f"{spec.name} {r.name}: {r.detail}"))
        wanted = setup.required_scopes(spec.name, r.name)
        if r.ok and r.scopes is not None and wanted:
            missing = [s for s in wanted if s not in r.scopes]
            if missing:
                lines.append(
                    (
                        False,
                        f"{spec.name} {r.name} is missing the scopes {', '.join(missing)}: add "
                        "them under OAuth & Permissions > Bot Token Scopes (or paste the "
                        "manifest from imagine-bot setup slack), then reinstall the app",
                    )
                )
    return lines


async def _check_database(app: App, line: Callable[[bool, str], None]) -> None:
    good, what = await app.store.health()
    line(good, f"database ok: {what}" if good else f"database: {what}")
    undelivered = await app.storage.outbox.undelivered()
    line(
        not undelivered,
        "every posted result delivered"
        if not undelivered
        else f"{len(undelivered)} undelivered (the outbox gave up on them):",
    )
    for gone in undelivered[:5]:
        print(
            f"     {gone.kind} of job {gone.job_id} to {gone.target.platform} channel "
            f"{gone.target.channel_id}: {gone.last_error}"
        )
