"""The ``imagine-bot`` command line's arguments: every subcommand, its flags and their help.

Split out of :mod:`bot.cli` (which runs the commands and re-exports :func:`build_parser`), so
that the parser, the help texts and the exit-code table read as one page.
"""

from __future__ import annotations

import argparse
import importlib.metadata
from pathlib import Path

EXIT_HELP = """exit codes:
  0    done
  1    a job failed, or doctor found a problem
  2    a mistake in the command, the prompt or the settings (also: nothing to serve)
  66   --image is missing, a folder, or unreadable
  70   a bug (the traceback is in the log)
  73   the data dir, the database or --out cannot be written
  75   another imagine-bot is running on this data dir
  130  interrupted
  141  the output was closed early (e.g. piped into head)"""


PLATFORM_HELP = (
    "where the user is: cli (default), web, slack:TEAM_ID (a Slack workspace) or "
    "discord:SERVER_ID (a Discord server)"
)


def _version() -> str:
    try:
        return importlib.metadata.version("imagine-bot")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "(not installed)"


DESCRIPTION = """A self-hosted /imagine bot: the web playground, Discord and Slack on one core.

With no command, serve starts the web playground on 127.0.0.1:8080 with the offline
renderer, plus Discord and Slack when their tokens are in the environment."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="imagine-bot",
        description=DESCRIPTION,
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"imagine-bot {_version()}")
    p.add_argument("--config", type=Path, help="TOML settings file (see config/default.toml)")
    p.add_argument("--data-dir", help="where the database and images live (default ./data)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    g = sub.add_parser("generate", help="run one /imagine from the shell")
    g.add_argument("prompt", help='prompt and flags, e.g. "a lighthouse --n 2 --ar 3:2"')
    g.add_argument("--out", default="out", help="folder for the images")
    g.add_argument(
        "--json", action="store_true", help='print JSON for scripts (an error is {"error": {...}})'
    )
    g.add_argument("--user", help="whose quota pays (default: your login name)")
    g.add_argument("--image", help="an input image to refine (img2img)")
    g.add_argument(
        "--yes", action="store_true", help="run a prompt that expands to many jobs without asking"
    )
    q = sub.add_parser("quota", help="show what is left")
    q.add_argument("--user", help="whose quota (default: your login name)")
    q.add_argument("--platform", default="cli", help=PLATFORM_HELP)
    sub.add_parser("doctor", help="check config, data dir, database and providers")
    s = sub.add_parser("serve", help="start the enabled adapters (the web playground by default)")
    s.add_argument("--host", help="web playground address (web.host)")
    s.add_argument("--port", type=int, help="web playground port (web.port)")
    w = sub.add_parser("web-link", help="print a personal link into the web playground")
    w.add_argument("name", help="who the link is for; the playground reserves this name")
    w.add_argument("--admin", action="store_true", help="the link's holder is an admin")
    w.add_argument("--days", type=int, default=30, help="how long the link works (default 30)")
    w.add_argument(
        "--base-url",
        help="the playground's address as its people reach it "
        "(default: from web.host and web.port)",
    )
    _add_setup(sub)
    return p


def _add_setup(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    setup = sub.add_parser(
        "setup",
        help="print what to paste into Slack's or Discord's app settings, and the steps",
        description="Print a Slack app manifest or a Discord invite URL, then the steps that "
        "remain. Nothing is sent anywhere; see adapters/slack/README.md and "
        "adapters/discord/README.md for the whole walk-through.",
    )
    platforms = setup.add_subparsers(dest="platform", metavar="{slack,discord}", required=True)
    slack = platforms.add_parser(
        "slack", help="a ready app manifest (Socket Mode, or HTTP with --http-url)"
    )
    slack.add_argument(
        "--http-url",
        metavar="URL",
        help="the bot's public https address, for HTTP mode (e.g. https://bot.example.com; "
        "/slack/events is added). Without it: Socket Mode, no public address needed",
    )
    discord = platforms.add_parser(
        "discord",
        help="the invite URL (DISCORD_APPLICATION_ID, or read from DISCORD_TOKEN)",
    )
    discord.add_argument(
        "--threads",
        action="store_true",
        help="also ask for Create Public Threads (implied by the discord.threads setting)",
    )
