"""The Docker HEALTHCHECK of imagine-bot: it follows the configured port, and it passes a
container that runs with the web playground off.

It finds the running ``imagine-bot`` process, reads the options it was started with
(``--config``, ``--data-dir``, ``serve --host/--port``) and the container's environment
(``IMAGINE_WEB__PORT`` and the rest), loads the settings the way the bot did, and then:

- web playground on: ``GET /healthz`` on the bot's port must answer 200 (``/healthz`` needs no
  access token);
- web playground off (``web.enabled = false``, e.g. a Discord-only container): the bot must
  hold its runner lock in the data dir (``serve`` takes it at start and keeps it while it
  runs). The lock is looked up in ``/proc/locks``, never taken, so a probe cannot race the
  bot's start.

Exit 0 when healthy, 1 when not, with one line saying why (``docker inspect`` shows it).
It prints no setting values, so no secret.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
LOCK_NAME = "runner.lock"  # bot.app.LOCK_NAME, not imported: bot.app pulls in the whole bot
# The options of ``imagine-bot`` that change where the bot listens or keeps its data.
OPTIONS = ("--config", "--data-dir", "--host", "--port")


@dataclass(frozen=True)
class BotProcess:
    pid: int
    options: Mapping[str, str]


def parse_options(args: Sequence[str]) -> dict[str, str]:
    """``["--config", "a.toml", "serve", "--port=9000"]`` -> ``{"--config": "a.toml", ...}``."""
    found: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if name in OPTIONS:
            if eq:
                found[name] = value
            elif i + 1 < len(args):
                found[name] = args[i + 1]
                i += 1
        i += 1
    return found


def _bot_args(argv: Sequence[str]) -> list[str] | None:
    """The arguments after the program, if ``argv`` is an imagine-bot command line."""
    for i, arg in enumerate(argv):
        if Path(arg).name == "imagine-bot":
            return list(argv[i + 1 :])
        if arg == "-m" and i + 1 < len(argv) and argv[i + 1] in ("bot", "bot.cli"):
            return list(argv[i + 2 :])
    return None


def find_bot(proc: Path = PROC) -> BotProcess | None:
    """The imagine-bot process with the lowest pid (PID 1 in a plain ``docker run``)."""
    me = os.getpid()
    pids = sorted(int(p.name) for p in proc.iterdir() if p.name.isdigit())
    for pid in pids:
        if pid == me:
            continue
        try:
            raw = (proc / str(pid) / "cmdline").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        args = _bot_args([a.decode(errors="replace") for a in raw.split(b"\0") if a])
        if args is not None:
            return BotProcess(pid, parse_options(args))
    return None


def lock_is_held(lock: Path, proc: Path = PROC) -> bool | None:
    """Whether some process holds a ``flock`` on ``lock``; ``None`` when this kernel does not
    say (no ``/proc/locks``)."""
    try:
        inode = lock.stat().st_ino
    except FileNotFoundError:
        return False
    try:
        table = (proc / "locks").read_text()
    except OSError:
        return None
    for line in table.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 1234 00:2f:131090 0 EOF"; waiters have "->" after the id.
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        if fields[5].rsplit(":", 1)[-1] == str(inode):
            return True
    return False


def probe_url(host: str, port: int) -> str:
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def check(env: Mapping[str, str], proc: Path = PROC, timeout: float = 3.0) -> tuple[bool, str]:
    bot = find_bot(proc)
    if bot is None:
        return False, "no imagine-bot process is running"
    from bot.config import load_settings  # here: only once there is a bot to check
    from bot.errors import ConfigError

    options = bot.options
    overrides = {"bot": {"data_dir": options["--data-dir"]}} if "--data-dir" in options else None
    config = Path(options["--config"]) if "--config" in options else None
    if config is not None and not config.is_absolute():
        config = proc / str(bot.pid) / "cwd" / config  # the bot's working directory, not ours
    try:
        settings = load_settings(config, env=env, overrides=overrides)
    except ConfigError as exc:
        return False, f"configuration error: {exc}"
    if not settings.web.enabled:
        lock = settings.data_dir / LOCK_NAME
        if not lock.is_absolute():
            lock = proc / str(bot.pid) / "cwd" / lock
        held = lock_is_held(lock, proc)
        if held is None:
            return True, f"web playground off; imagine-bot is running (pid {bot.pid})"
        if held:
            return True, f"web playground off; imagine-bot holds {settings.data_dir / LOCK_NAME}"
        return False, f"web playground off and nothing holds {settings.data_dir / LOCK_NAME} yet"
    try:
        port = int(options.get("--port") or settings.web.port)
    except ValueError:
        return False, f"imagine-bot was started with --port {options['--port']!r}"
    url = probe_url(options.get("--host") or settings.web.host, port)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        return False, f"{url}: {type(exc).__name__}: {getattr(exc, 'reason', exc)}"
    return status == 200, f"{url}: HTTP {status}"


def main() -> int:
    ok, why = check(os.environ)
    print(("healthy: " if ok else "unhealthy: ") + why)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
