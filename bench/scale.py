"""Scale across GPU servers: one pool of one-at-a-time webui servers, many users at once.

Four fake AUTOMATIC1111 servers (``tests/fakes/automatic1111.py``, which runs one generation
at a time behind a lock, as the webui does), each taking ``--work-s`` (2.0 s) per image, in one
``[providers.automatic1111] base_urls`` pool; eight users each send ``/imagine ... --n 1`` in the
same instant through the real core (handler, fair queue, SQLite ledger, image store, posting).

The floor is the servers' own time with every slot busy from the start:
ceil(users / servers) x work_s = ceil(8 / 4) x 2.0 s = 4.0 s (the issue's target: at most
4.5 s). Printed per run: the time from the first command to the last result posted, that floor
and the overhead over it, the images each server made, the most generation requests any
server had waiting behind its lock (0: no job ever queued behind a busy server), and the
ledger check. ``--down 1`` starts with that many servers off (refused connections): their jobs
move to the others and the floor grows accordingly.

    python bench/scale.py [--servers 4] [--users 8] [--work-s 2.0] [--runs 3] [--down 0]

The two-process half (``--part procs``, ``bench/scale_procs.py``): a throwaway PostgreSQL
cluster, real bot processes on one database, ``--jobs`` (200) jobs; one process alone, two,
and two with one SIGKILLed mid-run (``--no-kill`` to skip it).

    python bench/scale.py --part procs [--jobs 200] [--latency-ms 500] [--concurrency 4]
    python bench/scale.py --part all     # both halves (the default: --part pool)
"""

from __future__ import annotations

import argparse
import asyncio
import math
import socket
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import scale_procs
from bot.quotas import ledger_balances
from tests.conftest import open_chat
from tests.fakes.automatic1111 import Automatic1111Fake


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    return f"http://127.0.0.1:{port}"


class Watch:
    """The most requests any fake had waiting behind its lock, sampled every 5 ms."""

    def __init__(self, fakes: list[Automatic1111Fake]) -> None:
        self.fakes = fakes
        self.most_waiting = 0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.most_waiting = max([self.most_waiting, *(f.waiting for f in self.fakes)])
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def one_run(args: argparse.Namespace, data: Path) -> dict[str, object]:
    async with AsyncExitStack() as stack:
        fakes = [
            await stack.enter_async_context(Automatic1111Fake())
            for _ in range(args.servers - args.down)
        ]
        for fake in fakes:
            fake.work_s = args.work_s
        urls = [dead_url() for _ in range(args.down)] + [f.base_url for f in fakes]
        section = {
            "base_urls": urls,
            "progress_interval_s": 0,
            "health_interval_s": 60,
            "deadline_s": 60.0,
        }
        overrides = {"providers": {"default": "automatic1111", "automatic1111": section}}
        chat = await stack.enter_async_context(open_chat(data, overrides, {}))
        watch = Watch(fakes)
        users = [f"user{i}" for i in range(args.users)]
        started = time.perf_counter()
        sent = await asyncio.gather(
            *(
                chat.say(u, f"/imagine a lighthouse at dusk, take {i} --n 1")
                for i, u in enumerate(users)
            )
        )
        accepted = time.perf_counter() - started
        jobs = [r.job_id for replies in sent for r in replies if r.job_id]
        await chat.settle()
        took = time.perf_counter() - started
        await watch.stop()
        posted = {r.job_id for r in chat.channel.posted if r.job_id and r.images}
        rows = await chat.app.store.fetchall("SELECT state, server FROM jobs")
        return {
            "took": took,
            "accepted": accepted,
            "per_server": [f.generated for f in fakes],
            "most_waiting": watch.most_waiting,
            "done": sum(1 for r in rows if r["state"] == "done"),
            "results": len(posted & set(jobs)),
            "jobs": len(jobs),
            "servers_named": len({r["server"] for r in rows if r["server"]}),
            "ledger": await ledger_balances(chat.app.store),
        }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--servers", type=int, default=4)
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--work-s", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--down", type=int, default=0, help="servers that refuse connections")
    ap.add_argument("--part", choices=("pool", "procs", "all"), default="pool")
    scale_procs.add_arguments(ap)
    args = ap.parse_args()
    if args.part in ("pool", "all"):
        await run_pool(args)
    if args.part in ("procs", "all"):
        await scale_procs.run_procs(args)


async def run_pool(args: argparse.Namespace) -> None:
    live = args.servers - args.down
    floor = math.ceil(args.users / live) * args.work_s
    print(
        f"{args.servers} one-at-a-time servers ({args.down} down) x {args.work_s:g} s per image, "
        f"{args.users} users at once: floor ceil({args.users}/{live}) x {args.work_s:g} s "
        f"= {floor:.1f} s, target <= {floor + 0.5:.1f} s"
    )
    times: list[float] = []
    for run in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory() as tmp:
            r = await one_run(args, Path(tmp))
        took = float(r["took"])  # type: ignore[arg-type]
        times.append(took)
        print(
            f"run {run}: {took:.2f} s (floor {floor:.1f} s, +{took - floor:.2f} s), "
            f"all accepted in {float(r['accepted']) * 1000:.0f} ms; "  # type: ignore[arg-type]
            f"images per server {r['per_server']}; most waiting at one server "
            f"{r['most_waiting']}; {r['done']}/{r['jobs']} done, {r['results']} results posted, "
            f"{r['servers_named']} servers named in the jobs; ledger exact: {r['ledger']}"
        )
    print(
        f"median {statistics.median(times):.2f} s, best {min(times):.2f} s, "
        f"worst {max(times):.2f} s against the floor {floor:.1f} s"
    )


if __name__ == "__main__":
    asyncio.run(main())
