"""One bot process for ``bench/scale.py --part procs``: the real App on a shared PostgreSQL store.

It opens ``App.open(settings)`` with ``IMAGINE_STORE__URL`` from its environment (so the
password never shows in ``ps``), the offline provider with a latency, and a poster for the
bench's platform that appends one line per posted result to ``--posts`` (``job_id images``),
flushed at once, so a SIGKILL loses nothing written. It prints ``{"ready": <pid>}`` when its
runner is up and runs until SIGTERM (a graceful stop) or SIGKILL.

    IMAGINE_STORE__URL=postgresql://... python bench/scale_worker.py --data DIR --posts FILE
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.app import App
from bot.config import load_settings
from bot.types import PostSteps, Reply, Target

PLATFORM = "bench"


def bench_overrides(
    data: Path, latency_ms: int, concurrency: int, lease_s: float
) -> dict[str, Any]:
    """The settings every process of the bench shares (the submitter too)."""
    return {
        "bot": {"data_dir": str(data)},
        "grammar": {"base_side": 256},
        "providers": {
            "default": "offline",
            "offline": {"latency_ms": latency_ms, "concurrency": concurrency},
        },
        "jobs": {
            "lease_s": lease_s,
            "claim_poll_s": 0.2,
            "max_running_per_user": 4,
            "max_queued_per_user": 100,
        },
        "quota": {"user_daily": 1000},
        "web": {"enabled": False},
    }


class FilePoster:
    """The bench platform's poster: each result appended to a file, one line, flushed."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.count = 0

    async def post(
        self, target: Target, reply: Reply, steps: PostSteps | None = None
    ) -> str | None:
        self.count += 1
        if reply.job_id and reply.images:
            self.out.write(f"{reply.job_id} {len(reply.images)}\n")
            self.out.flush()  # in the kernel: a SIGKILL loses nothing written
        return f"{os.getpid()}-{self.count}"

    async def update(self, target: Target, ref: str, reply: Reply) -> None:
        return None

    async def delete(self, target: Target, ref: str) -> None:
        return None


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--posts", type=Path, required=True)
    ap.add_argument("--latency-ms", type=int, default=600)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--lease-s", type=float, default=5.0)
    args = ap.parse_args()
    overrides = bench_overrides(args.data, args.latency_ms, args.concurrency, args.lease_s)
    env = {"IMAGINE_STORE__URL": os.environ["IMAGINE_STORE__URL"]}
    settings = load_settings(None, env=env, overrides=overrides)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    with args.posts.open("a", encoding="utf-8") as out:
        async with App.open(settings) as app:
            app.handler.register_poster(PLATFORM, FilePoster(out))
            print(json.dumps({"ready": os.getpid()}), flush=True)
            await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
