"""``imagine-bot``: generate, quota, doctor, serve."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import importlib
import json
import logging
import re
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bot.app import App
from bot.config import SECRET_ENV, Settings, load_settings
from bot.core import AdapterSpec
from bot.errors import ConfigError
from bot.types import Actor, Invocation, Reply, Target

log = logging.getLogger("bot")

# Adapters are found through the registry in the ``adapters`` package and imported by name at
# serve time: the core never imports a platform library, and never names one here.
ADAPTERS_PACKAGE = "adapters"


class RedactSecrets(logging.Filter):
    """Replaces every configured secret value in a log record with ``***``."""

    def __init__(self, env: Mapping[str, str]) -> None:
        super().__init__()
        values = sorted({env[k] for k in SECRET_ENV if env.get(k) and len(env[k]) >= 6},
                        key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, values))) if values else None

    def filter(self, record: logging.LogRecord) -> bool:
        if self._pattern is not None:
            message = record.getMessage()
            redacted = self._pattern.sub("***", message)
            if redacted != message:
                record.msg, record.args = redacted, None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = self._pattern.sub(
                    "***", logging.Formatter().formatException(record.exc_info))
        return True


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(settings.env))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.bot.log_level.upper())
    # httpx logs full URLs at INFO; keep it quiet so nothing sensitive lands in the log.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


class _Collector:
    """Responder and poster for the CLI: remembers every reply."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []

    async def send(self, reply: Reply) -> str | None:
        self.replies.append(reply)
        return reply.job_id

    async def edit(self, ref: str, reply: Reply) -> None:
        self.replies.append(reply)

    async def post(self, target: Target, reply: Reply) -> str | None:
        self.replies.append(reply)
        return reply.job_id

    async def update(self, target: Target, ref: str, reply: Reply) -> None:
        self.replies.append(reply)


def _local_actor(user: str | None) -> Actor:
    name = user or getpass.getuser() or "local"
    return Actor(platform="cli", tenant="local", user_id=name, display_name=name)


async def cmd_generate(settings: Settings, args: argparse.Namespace) -> int:
    out = Path(args.out)
    async with App.open(settings) as app:
        # The channel (results, also of earlier interrupted runs) and this command's own
        # replies are kept apart: only the jobs this command started are reported.
        app.handler.register_poster("cli", _Collector())
        collector = _Collector()
        actor = _local_actor(args.user)
        init = await asyncio.to_thread(Path(args.image).read_bytes) if args.image else None
        await app.handler.handle(
            Invocation(actor=actor, channel_id="cli", command="imagine", text=args.prompt,
                       init_image=init),
            collector,
        )
        job_ids = list(dict.fromkeys(r.job_id for r in collector.replies if r.job_id))
        if not job_ids:
            for reply in collector.replies:
                print(reply.text, file=sys.stderr)
            return 2
        await app.runner.wait_idle()
        await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
        results: list[dict[str, Any]] = []
        for job_id in job_ids:
            job = await app.runner.load(job_id)
            assert job is not None
            files = []
            for img in await app.runner.load_images(job_id):
                src = app.handler.image_path(img.sha256)
                assert src is not None
                dest = out / f"{job_id}-{img.index}.{img.ext}"
                await asyncio.to_thread(shutil.copyfile, src, dest)
                files.append({"index": img.index, "path": str(dest), "seed": img.seed,
                              "width": img.width, "height": img.height})
            results.append({"job_id": job_id, "state": job.state, "provider": job.provider,
                            "prompt": job.prompt, "error": job.error, "notice": job.notice,
                            "images": files})
        quota = await app.handler.quota_badge(actor)
        if args.json:
            print(json.dumps({"jobs": results, "quota": quota}, indent=2))
        else:
            for res in results:
                print(f"job {res['job_id']}: {res['state']} ({res['provider']})")
                if res["error"]:
                    print(f"  {res['error']}")
                if res["notice"]:
                    print(f"  note: {res['notice']}")
                for f in res["images"]:
                    print(f"  {f['path']}  seed {f['seed']}  {f['width']}x{f['height']}")
            if any(r["provider"] == "offline" for r in results):
                print("Offline preview: procedural pictures, not a diffusion model.")
            print(f"Quota: {quota}")
        return 0 if all(r["state"] == "done" for r in results) else 1


async def cmd_quota(settings: Settings, args: argparse.Namespace) -> int:
    async with App.open(settings, start=False) as app:
        collector = _Collector()
        await app.handler.handle(
            Invocation(actor=_local_actor(args.user), channel_id="cli", command="quota"),
            collector)
        for reply in collector.replies:
            print(reply.text)
    return 0


async def cmd_doctor(settings: Settings, args: argparse.Namespace) -> int:
    ok = True

    def line(good: bool, text: str) -> None:
        nonlocal ok
        ok = ok and good
        print(f"[{'ok' if good else 'FAIL'}] {text}")

    line(True, f"config valid (providers.default = {settings.providers.default})")
    for name in SECRET_ENV:
        print(f"     {name}: {'set' if settings.env.get(name) else 'not set'}")
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
    async with App.open(settings, start=False) as app:
        row = await app.store.fetchone("PRAGMA integrity_check")
        version = await app.store.fetchone("PRAGMA user_version")
        line(row is not None and row[0] == "ok",
             f"database ok (schema version {version[0] if version else '?'})")
        for name, provider in app.providers.items():
            try:
                async with asyncio.timeout(15):
                    facts = await provider.check()
                detail = ", ".join(f"{k}={v}" for k, v in facts.items())
                line(True, f"provider {name} ({provider.label}) reachable: {detail}")
            except Exception as exc:  # report, never crash the doctor
                line(False, f"provider {name} ({provider.label}): {type(exc).__name__}: "
                     f"{getattr(exc, 'user_message', '')}".rstrip(": "))
    return 0 if ok else 1


def enabled_adapters(settings: Settings) -> list[AdapterSpec]:
    """The registry's adapters whose ``enabled(settings)`` is true, in registry order.

    An adapter may refuse a setup here (ConfigError), before any data is touched. A package
    that cannot even be imported is reported and skipped: the others still run."""
    registry: Sequence[str] = importlib.import_module(ADAPTERS_PACKAGE).REGISTRY
    specs = []
    for module_name in registry:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            log.warning("adapter %s cannot be loaded (%s); the others still start",
                        module_name, exc)
            continue
        spec = getattr(module, "ADAPTER", None)
        if not isinstance(spec, AdapterSpec):
            raise ConfigError(f"{module_name} is in the adapter registry but has no ADAPTER.")
        if spec.enabled(settings):
            specs.append(spec)
    return specs


def _say(line: str) -> None:
    """One line for the operator on stdout (logs go to stderr)."""
    print(line, flush=True)


async def _run_adapter(spec: AdapterSpec, app: App, settings: Settings) -> None:
    def ready(line: str) -> None:
        _say(f"{spec.name}: {line}")

    log.info("%s adapter starting", spec.name)
    try:
        await spec.serve(app, settings, ready)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"The {spec.name} adapter needs the Python package {exc.name!r}, "
                          "which is not installed.") from None


async def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    specs = enabled_adapters(settings)  # refuses a bad setup before touching any data
    if not specs:
        raise ConfigError(
            "Nothing to serve: web.enabled is false and no chat adapter is configured. Set "
            "DISCORD_TOKEN or the SLACK_* tokens, or turn the web playground back on.")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with App.open(settings) as app:
        _say(provider_line(app))
        servers = {asyncio.create_task(_run_adapter(spec, app, settings), name=spec.name)
                   for spec in specs}
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({*servers, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in (*servers, stopper):
            task.cancel()
        await asyncio.gather(*servers, stopper, return_exceptions=True)
        for task in done & servers:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error
        log.info("stopped; queued jobs stay queued and resume at the next start")
    return 0


def provider_line(app: App) -> str:
    """Which provider draws: the offline renderer says it is a procedural picture."""
    name = app.providers.default
    line = f"provider {name}: {app.providers.get(name).label}"
    fallback = app.providers.fallback
    if fallback:
        line += f"; fallback {fallback}: {app.providers.get(fallback).label}"
    return line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imagine-bot", description=__doc__)
    p.add_argument("--config", type=Path, help="TOML settings file (see config/default.toml)")
    p.add_argument("--data-dir", help="where the database and images live (default ./data)")
    sub = p.add_subparsers(dest="command")
    g = sub.add_parser("generate", help="run one /imagine from the shell")
    g.add_argument("prompt", help='prompt and flags, e.g. "a lighthouse --n 2 --ar 3:2"')
    g.add_argument("--out", default="out", help="folder for the images")
    g.add_argument("--json", action="store_true", help="print JSON for scripts")
    g.add_argument("--user", help="whose quota pays (default: your login name)")
    g.add_argument("--image", help="an input image to refine (img2img)")
    q = sub.add_parser("quota", help="show what is left")
    q.add_argument("--user")
    sub.add_parser("doctor", help="check config, data dir, database and providers")
    s = sub.add_parser("serve", help="start the enabled adapters (the web playground by default)")
    s.add_argument("--host", help="web playground address (web.host)")
    s.add_argument("--port", type=int, help="web playground port (web.port)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.data_dir:
        overrides["bot"] = {"data_dir": args.data_dir}
    web = {k: v for k in ("host", "port") if (v := getattr(args, k, None)) is not None}
    if web:
        overrides["web"] = web
    try:
        settings = load_settings(args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"imagine-bot: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings)
    command = args.command or "serve"
    runner = {"generate": cmd_generate, "quota": cmd_quota, "doctor": cmd_doctor,
              "serve": cmd_serve}[command]
    try:
        return asyncio.run(runner(settings, args))
    except ConfigError as exc:
        print(f"imagine-bot: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
