"""The ``imagine-bot`` command line: generate, quota, doctor, serve, web-link, setup.

Every mistake a person can make here (a bad flag, a missing input file, a data dir that
cannot be written, a second bot on the same data dir, a closed pipe) ends in one line on
stderr and an exit code from :class:`Exit`; with ``generate --json`` also a JSON error object
on stdout. A traceback means a bug.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import getpass
import importlib
import importlib.metadata
import json
import logging
import os
import secrets
import shutil
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bot import setup
from bot.adapter_registry import enabled_adapters  # re-exported: doctor uses it too
from bot.app import DB_NAME, App
from bot.cli_parser import PLATFORM_HELP, build_parser
from bot.config import Settings, load_settings
from bot.core import AdapterSpec
from bot.doctor import cmd_doctor  # re-exported: doctor has its own module
from bot.errors import AlreadyRunning, ConfigError
from bot.logs import RedactSecrets as RedactSecrets  # re-exported: tests import it here
from bot.logs import setup_logging
from bot.types import Actor, Invocation, PostSteps, Reply, Target

log = logging.getLogger("bot")

# Adapters are found through the registry in the ``adapters`` package (bot/adapter_registry.py)
# and imported by name at serve time: the core never imports a platform library here.
WEB_ACCESS = "adapters.web.access"  # the playground's user names, for quota --platform web
WEB_LINKS = "adapters.web.links"  # the playground's personal links, for web-link


class Exit(enum.IntEnum):
    """Exit codes. 2 is argparse's own for a bad command line; the I/O ones are sysexits.h's."""

    OK = 0
    FAILED = 1  # a job failed or was filtered; the doctor found a problem
    USAGE = 2  # a mistake in the command, the prompt or the settings
    NO_INPUT = 66  # EX_NOINPUT: --image names no readable file
    INTERNAL = 70  # EX_SOFTWARE: a bug; the log above has the traceback
    CANT_WRITE = 73  # EX_CANTCREAT: the data dir, the database or --out cannot be written
    BUSY = 75  # EX_TEMPFAIL: another imagine-bot runs on this data dir; try when it stops
    INTERRUPTED = 130  # 128 + SIGINT
    BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell shows for `yes | head`


class CliError(Exception):
    """A user's mistake found by the CLI itself: one line, one exit code, one JSON kind."""

    def __init__(self, message: str, code: Exit, kind: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.kind = kind


class _Collector:
    """Responder and poster for the CLI: remembers every reply."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []

    async def send(self, reply: Reply) -> str | None:
        self.replies.append(reply)
        return reply.job_id

    async def edit(self, ref: str, reply: Reply) -> None:
        self.replies.append(reply)

    async def post(
        self, target: Target, reply: Reply, steps: PostSteps | None = None
    ) -> str | None:
        self.replies.append(reply)
        return reply.job_id

    async def update(self, target: Target, ref: str, reply: Reply) -> None:
        self.replies.append(reply)

    async def delete(self, target: Target, ref: str) -> None:
        self.replies = [r for r in self.replies if r.job_id != ref]


def _local_actor(user: str | None) -> Actor:
    name = user or getpass.getuser() or "local"
    return Actor(platform="cli", tenant="local", user_id=name, display_name=name)


def check_data_dir(settings: Settings) -> None:
    """Before a command that writes: the data dir and its database must be writable, so that
    a read-only volume is one clear line rather than a failed job or a SQLite traceback."""
    data_dir = settings.data_dir.absolute()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(
            f"cannot create the data dir {data_dir}: {exc.strerror}. Choose another "
            "with --data-dir (or bot.data_dir).",
            Exit.CANT_WRITE,
            "data_dir",
        ) from None
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise CliError(
            f"the data dir {data_dir} is not writable. Make it writable, or choose "
            "another with --data-dir.",
            Exit.CANT_WRITE,
            "data_dir",
        )
    db = data_dir / DB_NAME
    if db.exists() and not os.access(db, os.W_OK):
        raise CliError(
            f"the database {db} is read-only. Make it writable, or point --data-dir "
            "at a writable copy of the data dir.",
            Exit.CANT_WRITE,
            "database",
        )


@asynccontextmanager
async def open_app(settings: Settings, *, start: bool = True) -> AsyncIterator[App]:
    """:meth:`App.open`, with what can go wrong opening the data dir said in one line."""
    async with contextlib.AsyncExitStack() as stack:
        try:
            app = await stack.enter_async_context(App.open(settings, start=start))
        except OSError as exc:
            where = exc.filename or settings.data_dir
            raise CliError(
                f"cannot use {where}: {exc.strerror}. Check the data dir's "
                "permissions, or choose another with --data-dir.",
                Exit.CANT_WRITE,
                "data_dir",
            ) from None
        except sqlite3.Error as exc:  # not a database, or read-only under us
            raise CliError(
                f"cannot open the database in {settings.data_dir.absolute()}: {exc}.",
                Exit.CANT_WRITE,
                "database",
            ) from None
        yield app


async def read_input_image(name: str) -> bytes:
    path = Path(name)
    try:
        return await asyncio.to_thread(path.read_bytes)
    except FileNotFoundError:
        why = "there is no such file"
    except IsADirectoryError:
        why = "that is a folder; give one image file"
    except OSError as exc:
        why = f"it cannot be read ({exc.strerror})"
    raise CliError(f"--image {name}: {why}.", Exit.NO_INPUT, "input")


async def cmd_generate(settings: Settings, args: argparse.Namespace) -> int:
    out = Path(args.out)
    # Read the input first: a typo in a file name must not take the lock or open the database.
    init = await read_input_image(args.image) if args.image else None
    check_data_dir(settings)
    async with open_app(settings) as app:
        # The channel (results, also of earlier interrupted runs) and this command's own
        # replies are kept apart: only the jobs this command started are reported.
        app.register_poster("cli", _Collector())
        collector = _Collector()
        actor = _local_actor(args.user)
        await app.handle(
            Invocation(
                actor=actor,
                channel_id="cli",
                command="imagine",
                text=args.prompt,
                init_image=init,
                confirmed=args.yes,
            ),
            collector,
        )
        job_ids = list(dict.fromkeys(r.job_id for r in collector.replies if r.job_id))
        if asked := next((r for r in collector.replies if "confirm" in r.meta), None):
            raise CliError(
                f"This prompt expands to {asked.meta['jobs']} jobs: {asked.meta['images']} "
                "images from your quota. Nothing was charged; add --yes to run them all.",
                Exit.USAGE,
                "confirm",
            )
        if not job_ids:  # refused: a bad flag, no quota left, a queue cap
            text = " ".join(r.text for r in collector.replies) or "nothing was started."
            raise CliError(text, Exit.USAGE, "refused")
        await app.runner.wait_finished(job_ids)
        results: list[dict[str, Any]] = []
        for job_id in job_ids:
            job = await app.runner.load(job_id)
            assert job is not None
            files = []
            for img in await app.runner.load_images(job_id):
                src = app.image_path(img.sha256)
                assert src is not None
                dest = out / f"{job_id}-{img.index}.{img.ext}"
                await _copy_out(src, dest, job_id)
                files.append(
                    {
                        "index": img.index,
                        "path": str(dest),
                        "seed": img.seed,
                        "width": img.width,
                        "height": img.height,
                    }
                )
            results.append(
                {
                    "job_id": job_id,
                    "state": job.state,
                    "provider": job.provider,
                    "prompt": job.prompt,
                    "error": job.error,
                    "notice": job.notice,
                    "images": files,
                }
            )
        quota = await app.quota_badge(actor)
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
        return Exit.OK if all(r["state"] == "done" for r in results) else Exit.FAILED


async def _copy_out(src: Path, dest: Path, job_id: str) -> None:
    try:
        await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(shutil.copyfile, src, dest)
    except OSError as exc:
        raise CliError(
            f"cannot write {exc.filename or dest}: {exc.strerror}. The images of job "
            f"{job_id} are kept in the data dir; choose another --out.",
            Exit.CANT_WRITE,
            "output",
        ) from None


def quota_actor(settings: Settings, user: str | None, platform: str) -> tuple[Actor, str]:
    """``--user`` on ``--platform``, with the tenant ids the adapters use, and where that is
    in words. Chat users are their platform ids (U0123, 80351110224678912)."""
    kind, _, tenant = platform.strip().partition(":")
    kind = kind.lower()
    if kind in ("cli", "web") and tenant:
        raise CliError(
            f"--platform {kind} has no workspaces; write just {kind}.", Exit.USAGE, "usage"
        )
    if kind == "cli":
        return _local_actor(user), "the command line"
    if not user:
        raise CliError(
            f"--platform {kind} needs --user (that platform's user id or name).",
            Exit.USAGE,
            "usage",
        )
    if kind == "web":
        # The playground's own rule turns a typed name into its user id ("Alice" -> "alice").
        access = importlib.import_module(WEB_ACCESS)
        try:
            actor: Actor = access.web_actor(user, access.web_admins(settings))
        except access.InputError as exc:
            raise CliError(f"--user {user!r}: {exc}", Exit.USAGE, "usage") from None
        return actor, "the web playground"
    names = {"slack": "Slack workspace", "discord": "Discord server"}
    if kind not in names:
        raise CliError(f"unknown --platform {platform!r}; {PLATFORM_HELP}.", Exit.USAGE, "usage")
    if not tenant:
        raise CliError(
            f"--platform {kind} needs its {names[kind]} id: {kind}:ID.", Exit.USAGE, "usage"
        )
    where = "Discord direct messages" if tenant.startswith("dm:") else f"{names[kind]} {tenant}"
    return Actor(platform=kind, tenant=tenant, user_id=user, display_name=user), where


async def cmd_quota(settings: Settings, args: argparse.Namespace) -> int:
    actor, where = quota_actor(settings, args.user, args.platform)
    async with open_app(settings, start=False) as app:
        collector = _Collector()
        await app.handle(Invocation(actor=actor, channel_id="cli", command="quota"), collector)
        text = " ".join(r.text for r in collector.replies)
    print(f"Quota of {actor.display_name or actor.user_id} on {where}: {text}")
    return Exit.OK


async def cmd_web_link(settings: Settings, args: argparse.Namespace) -> int:
    """Print a signed personal link for this data dir's playground."""
    links = importlib.import_module(WEB_LINKS)
    access = importlib.import_module(WEB_ACCESS)
    try:
        token, identity = await asyncio.to_thread(
            links.issue, settings.data_dir, args.name, admin=args.admin, days=args.days
        )
    except access.InputError as exc:
        raise CliError(f"{args.name!r}: {exc}", Exit.USAGE, "usage") from None
    except OSError as exc:
        raise CliError(
            f"cannot keep the link's secret in {settings.data_dir}: {exc.strerror or exc}",
            Exit.CANT_WRITE,
            "data_dir",
        ) from None
    base = args.base_url or _playground_url(settings)
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(identity.expires_at))
    print(links.link_url(base, token))
    role = (
        " (an admin)"
        if identity.admin
        or identity.user_id
        in {access.user_id_of(a, strict=False) for a in access.web_admins(settings)}
        else ""
    )
    print(
        f"Whoever opens it acts as {identity.display_name} (@{identity.user_id}){role} in the "
        f"playground until {until}; nobody else can take that name there. Send it to that "
        "person only. Deleting web-link.key in the data dir cancels every link.",
        file=sys.stderr,
    )
    return Exit.OK


def _playground_url(settings: Settings) -> str:
    host, port = settings.web.host, settings.web.port
    if host.strip("[]") in ("0.0.0.0", "::", ""):
        host = "localhost"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def _say(line: str) -> None:
    """One line for the operator on stdout (logs go to stderr). A reader that went away
    (``serve | head -3``) must not stop the bot."""
    try:
        print(line, flush=True)
    except (BrokenPipeError, ValueError):
        _silence_stdout()


async def _run_adapter(spec: AdapterSpec, app: App, settings: Settings) -> None:
    def ready(line: str) -> None:
        _say(f"{spec.name}: {line}")

    log.info("%s adapter starting", spec.name)
    try:
        await spec.serve(app, settings, ready)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"The {spec.name} adapter needs the Python package {exc.name!r}, "
            "which is not installed."
        ) from None


async def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    specs = enabled_adapters(settings)  # refuses a bad setup before touching any data
    if not specs:
        raise CliError(
            "nothing to serve: web.enabled is false and no chat adapter is configured. Set "
            "DISCORD_TOKEN or the SLACK_* tokens, or turn the web playground back on.",
            Exit.USAGE,
            "config",
        )
    check_data_dir(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with open_app(settings) as app:
        _say(provider_line(app))
        servers = {
            asyncio.create_task(_run_adapter(spec, app, settings), name=spec.name) for spec in specs
        }
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
    return Exit.OK


def provider_line(app: App) -> str:
    """Which provider draws: the offline renderer says it is a procedural picture."""
    name = app.providers.default
    line = f"provider {name}: {app.providers.get(name).label}"
    fallback = app.providers.fallback
    if fallback:
        line += f"; fallback {fallback}: {app.providers.get(fallback).label}"
    return line


async def cmd_setup(settings: Settings, args: argparse.Namespace) -> int:
    """Print the Slack manifest or the Discord invite URL, with the steps that remain."""
    if args.platform == "slack":
        manifest, steps = setup.slack_text(args.http_url)  # before printing: a bad URL is one line
        print(manifest, flush=True)
        print(steps, file=sys.stderr)
    else:
        # --threads, or the setting itself: a bot that opens threads must be invited able to.
        threads = args.threads or settings.discord.threads
        print(setup.discord_text(settings.env, threads=threads))
    return Exit.OK


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _fail(args: argparse.Namespace, message: str, code: Exit, kind: str) -> int:
    print(f"imagine-bot: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        error = {"kind": kind, "message": message, "exit_code": int(code)}
        with contextlib.suppress(BrokenPipeError):
            print(json.dumps({"error": error}), flush=True)
    return code


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
        return _fail(args, f"configuration error: {exc}", Exit.USAGE, "config")
    setup_logging(settings)
    command = args.command or "serve"
    runner = {
        "generate": cmd_generate,
        "quota": cmd_quota,
        "doctor": cmd_doctor,
        "serve": cmd_serve,
        "web-link": cmd_web_link,
        "setup": cmd_setup,
    }[command]
    try:
        code = asyncio.run(runner(settings, args))
        sys.stdout.flush()  # here, not at exit, so a closed pipe is handled below
        return code
    except BrokenPipeError:
        _silence_stdout()
        print(
            "imagine-bot: the output was closed before it was all written (broken pipe).",
            file=sys.stderr,
        )
        return Exit.BROKEN_PIPE
    except AlreadyRunning:
        what = (
            "Use that one instead (its playground or chat), stop it first, or"
            if command != "serve"
            else "Stop it first, or"
        )
        return _fail(
            args,
            "another imagine-bot is already running on "
            f"{settings.data_dir.absolute()}, "
            f"and only one may run jobs there. {what} give this one its own "
            "--data-dir (a separate database and quota).",
            Exit.BUSY,
            "already_running",
        )
    except ConfigError as exc:
        return _fail(args, f"configuration error: {exc}", Exit.USAGE, "config")
    except CliError as exc:
        return _fail(args, exc.message, exc.code, exc.kind)
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
    except Exception:
        ref = secrets.token_hex(4)
        log.exception("imagine-bot %s failed (ref %s)", command, ref)
        return _fail(
            args,
            f"sorry, that is a bug (ref {ref}); the log above has the details.",
            Exit.INTERNAL,
            "internal",
        )


if __name__ == "__main__":
    sys.exit(main())
