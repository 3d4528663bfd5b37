"""Slack calls per job under a burst, with Slack's documented rate limits in force.

The real App, slack-bolt's HTTP mode and slack_sdk against the Slack fake, which enforces
Slack's documented limits (``tests/fakes/slack_limits.py``: ``chat.update`` 50 a minute per
workspace, ``chat.postMessage`` about one a second per channel, uploads 100 a minute) run
``--time-scale`` times faster, the bot's own budgets scaled alike. Prints the calls each job
cost (median and max, with and without the 429s), the calls by method, the 429s answered and
any ``Retry-After`` not honoured.

    .venv/bin/python bench/slack_budget.py [--jobs 500] [--users 100] [--channels 5]
                                           [--time-scale 60]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.slack_burst import run_burst


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        figures = await run_burst(
            Path(tmp),
            args.jobs,
            users=args.users,
            channels=args.channels,
            time_scale=args.time_scale,
        )
    print("\n".join(figures.lines()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--channels", type=int, default=5)
    parser.add_argument("--time-scale", type=float, default=60.0)
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main(parser.parse_args()))
