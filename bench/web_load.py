"""Load on the web playground: many people press Enter at once.

Starts the real App and the playground on a free loopback port (in a child process, so the
clients' own work is not counted), with the offline renderer at a fixed latency standing in
for a provider, then has ``--users`` distinct people each POST one
``/imagine`` to ``/api/command`` (the endpoint the page uses) at the same moment, while each of
them also has the channel open on a WebSocket (as their page would). Prints:

- accept latency: from sending the POST to its answer carrying the queued job (median, p99, max)
- how long until every job was finished, as seen live on a socket
- what the open pages were sent: items (whole cards and deltas), frames and bytes
- the server's CPU time while it accepted the burst, all threads and its event loop's alone
  (steadier than the latency on a shared machine: other processes' load does not add to it)
- peak memory: the server process's peak RSS (ru_maxrss) and, with ``--tracemalloc``, the peak
  of its Python allocations (tracemalloc slows Python code down, so latency figures from such a run
  read high)

    python bench/web_load.py [--users 200] [--latency-ms 500] [--concurrency 16] [--sockets N]
    python bench/web_load.py --core-only     # the same burst into the core alone: the floor
    python bench/web_load.py --hub-only      # the live-update hub alone, in this process

``--hub-only`` times the playground's hub (adapters/web/live.py) doing what the burst asks of
it, without sockets: 200 new cards in front of 200 pages, then the line moving up 12 times
(a delta for every queued card), every frame built and taken. It does not depend on how busy
the machine is with other work the way the latencies do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.web.server import start
from bot.app import App
from bot.config import Settings, load_settings

FINAL = {"done", "failed", "filtered"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mib() -> float:
    # ru_maxrss is KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def watch(
    ws: aiohttp.ClientWebSocketResponse,
    finished: dict[str, str],
    all_done: asyncio.Event,
    expected: int,
) -> None:
    """A page that follows the cards (whole ones and deltas) until every job is final."""
    states: dict[str, str] = {}
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        data = json.loads(msg.data)
        for item in data.get("items", ()):
            if item["op"] == "card":
                ref, state = item["reply"]["ref"], item["reply"].get("state")
            elif item["op"] == "delta" and "state" in item["set"]:
                ref, state = item["ref"], item["set"]["state"]
            else:
                continue
            states[ref] = state or ""
            if state in FINAL:
                finished[ref] = state
        if len(finished) >= expected:
            all_done.set()


async def drain(ws: aiohttp.ClientWebSocketResponse) -> tuple[int, int, int]:
    """(frames, items, bytes) one open page received."""
    frames = items = size = 0
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        frames += 1
        size += len(msg.data)
        # Counted without parsing: the clients must not take the server's CPU (2 cores).
        items += msg.data.count('{"op":')
    return frames, items, size


def make_settings(args: argparse.Namespace, data_dir: str) -> Settings:
    return load_settings(
        env={},
        overrides={
            "bot": {"data_dir": data_dir, "log_level": "WARNING"},
            "grammar": {"base_side": 256},
            # Every one of the users must be accepted: room in the queue and the quota.
            "quota": {"user_daily": 50, "user_monthly": 1000, "workspace_daily": 0},
            "jobs": {"max_queue": max(500, args.users * 2), "max_queued_per_user": 10},
            "providers": {
                "default": "offline",
                "offline": {"latency_ms": args.latency_ms, "concurrency": args.concurrency},
            },
        },
    )


async def serve_only(args: argparse.Namespace) -> None:
    """The server side, in its own process so that the clients' work is not counted: prints
    its URL, serves until stdin closes, then prints its own memory figures as JSON."""
    if args.tracemalloc:
        tracemalloc.start()
    with tempfile.TemporaryDirectory() as tmp:
        async with App.open(make_settings(args, tmp)) as app:
            server = await start(app, "127.0.0.1", 0)
            rss_before = rss_mib()
            print(json.dumps({"url": server.url}), flush=True)
            loop = asyncio.get_running_loop()
            marks: list[tuple[float, float]] = []

            def mark() -> None:  # in the loop's thread: time.thread_time is the loop's CPU
                marks.append((cpu_s(), time.thread_time()))

            # "mark" lines from the parent (the burst begins, it is all answered), then EOF.
            while line := await loop.run_in_executor(None, sys.stdin.readline):
                if line.strip() == "mark":
                    loop.call_soon_threadsafe(mark)
            await server.close()
    peak = tracemalloc.get_traced_memory()[1] / 2**20 if args.tracemalloc else None
    burst = [b - a for a, b in zip(marks[0], marks[1], strict=True)] if len(marks) > 1 else None
    print(
        json.dumps(
            {
                "rss_mib": rss_mib(),
                "rss_before_mib": rss_before,
                "tracemalloc_peak_mib": peak,
                "cpu_s": cpu_s(),
                "burst_cpu_s": burst,
            }
        ),
        flush=True,
    )


async def run(args: argparse.Namespace) -> None:
    child_args = [
        sys.executable,
        __file__,
        "--serve-only",
        "--users",
        str(args.users),
        "--latency-ms",
        str(args.latency_ms),
        "--concurrency",
        str(args.concurrency),
    ]
    if args.tracemalloc:
        child_args.append("--tracemalloc")
    child = await asyncio.create_subprocess_exec(
        *child_args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdin is not None and child.stdout is not None
    url = json.loads(await asyncio.wait_for(child.stdout.readline(), 60))["url"]

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        names = [f"user{i:03d}" for i in range(args.users)]
        finished: dict[str, str] = {}
        all_done = asyncio.Event()
        sockets = []
        for name in names[: args.sockets]:
            ws = await http.ws_connect(f"{url}/ws?channel=general&name={name}")
            assert (await ws.receive_json())["type"] == "history"
            sockets.append(ws)
        watcher = await http.ws_connect(f"{url}/ws?channel=general&name=watcher")
        assert (await watcher.receive_json())["type"] == "history"
        watch_task = asyncio.create_task(watch(watcher, finished, all_done, args.users))
        drains = [asyncio.create_task(drain(ws)) for ws in sockets]

        go = asyncio.Event()
        latencies: list[float] = []
        rejected: list[str] = []

        async def submit(name: str) -> None:
            await go.wait()
            body = {
                "name": name,
                "channel": "general",
                "text": f"/imagine a lighthouse for {name} --n 1",
            }
            t0 = time.perf_counter()
            async with http.post(f"{url}/api/command", json=body) as resp:
                answer = await resp.json()
            latencies.append(time.perf_counter() - t0)
            if resp.status != 200 or not any(r["job_id"] for r in answer["replies"]):
                rejected.append(f"{name}: {resp.status} {answer}")

        tasks = [asyncio.create_task(submit(n)) for n in names]
        await asyncio.sleep(0.1)  # every task is parked on the same event
        child.stdin.write(b"mark\n")
        await child.stdin.drain()
        started = time.perf_counter()
        go.set()
        await asyncio.gather(*tasks)
        accepted_all = time.perf_counter() - started
        child.stdin.write(b"mark\n")
        await child.stdin.drain()
        if rejected:
            print(f"{len(rejected)} submissions were not accepted, e.g. {rejected[0]}")
        await asyncio.wait_for(all_done.wait(), args.timeout)
        all_finished = time.perf_counter() - started

        for ws in [*sockets, watcher]:
            await ws.close()
        per_page = await asyncio.gather(*drains)
        frames = sum(f for f, _, _ in per_page)
        delivered = sum(i for _, i, _ in per_page)
        sent_bytes = sum(b for _, _, b in per_page)
        watch_task.cancel()

    child.stdin.close()
    server_figures = json.loads(await asyncio.wait_for(child.stdout.readline(), 60))
    await child.wait()

    states = sorted(set(finished.values()))
    ms = [x * 1000 for x in latencies]
    print(
        f"web playground load: {args.users} users, offline renderer at {args.latency_ms} ms "
        f"per call, provider concurrency {args.concurrency}, {len(sockets)} open pages"
    )
    print(
        f"  accepted:          {len(latencies) - len(rejected)} of {args.users} "
        f"(all answered within {accepted_all * 1000:.0f} ms of the start)"
    )
    print(
        f"  accept latency:    median {statistics.median(ms):.1f} ms, "
        f"p99 {percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms"
    )
    print(
        f"  all jobs finished: {all_finished:.2f} s (final states: {', '.join(states)}; "
        f"ideal {args.users / args.concurrency * args.latency_ms / 1000:.2f} s)"
    )
    print(
        f"  live updates:      {delivered} items in {frames} frames "
        f"({sent_bytes / 2**20:.1f} MiB) delivered to the open pages"
    )
    if server_figures["burst_cpu_s"] is not None:
        process, loop = server_figures["burst_cpu_s"]
        print(
            f"  server CPU, burst: {process * 1000:.0f} ms (all threads), "
            f"{loop * 1000:.0f} ms of it the event loop's, until all {args.users} were answered"
        )
    print(f"  server CPU time:   {server_figures['cpu_s']:.1f} s (user + system, the whole run)")
    print(
        f"  server peak RSS:   {server_figures['rss_mib']:.0f} MiB "
        f"(was {server_figures['rss_before_mib']:.0f} MiB before the load)"
    )
    if server_figures["tracemalloc_peak_mib"] is not None:
        print(
            f"  tracemalloc peak:  {server_figures['tracemalloc_peak_mib']:.1f} MiB "
            "of the server's Python allocations"
        )


class _Quiet:
    """A Responder that only keeps the job id (the core-only floor)."""

    def __init__(self) -> None:
        self.job_id: str | None = None

    async def send(self, reply: Any) -> str | None:
        self.job_id = self.job_id or reply.job_id
        return reply.job_id or "m"

    async def edit(self, ref: str, reply: Any) -> None:
        return None


async def core_only(args: argparse.Namespace) -> None:
    """The same burst straight into the core: no HTTP, no sockets, no playground. The floor the
    playground's own figure stands on."""
    from bot.types import Actor, Invocation

    with tempfile.TemporaryDirectory() as tmp:
        async with App.open(make_settings(args, tmp)) as app:
            go = asyncio.Event()
            latencies: list[float] = []

            async def submit(i: int) -> None:
                await go.wait()
                out = _Quiet()
                inv = Invocation(
                    Actor("web", "local", f"user{i:03d}"),
                    "general",
                    text=f"a lighthouse for user{i:03d} --n 1",
                )
                t0 = time.perf_counter()
                await app.handle(inv, out)
                latencies.append(time.perf_counter() - t0)
                assert out.job_id, "not accepted"

            tasks = [asyncio.create_task(submit(i)) for i in range(args.users)]
            await asyncio.sleep(0.1)
            before = (cpu_s(), time.thread_time())
            go.set()
            await asyncio.gather(*tasks)
            process, loop = cpu_s() - before[0], time.thread_time() - before[1]
            ms = [x * 1000 for x in latencies]
            print(f"core alone: {args.users} submissions at once, no HTTP, no sockets")
            print(
                f"  accept latency:    median {statistics.median(ms):.1f} ms, "
                f"p99 {percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms"
            )
            print(
                f"  CPU, burst:        {process * 1000:.0f} ms (all threads), "
                f"{loop * 1000:.0f} ms of it the event loop's"
            )
            await app.runner.wait_idle(args.timeout)


def _hub_card(i: int, seq: int, place: int) -> dict[str, Any]:
    """A queued card as the playground renders it (the fields the hub diffs)."""
    ref, name = f"job{i:04d}", f"user{i:03d}"
    return {
        "seq": seq,
        "ref": ref,
        "owner": name,
        "text": f"a lighthouse for {name} - queued #{place} in line (asked by {name})",
        "images": [],
        "tiles": [],
        "buttons": [{"label": "Cancel", "action": f"cancel:{ref}", "style": "danger"}],
        "ephemeral": False,
        "form": None,
        "job_id": ref,
        "parent_job_id": None,
        "state": "queued",
        "outcome": "queued",
        "position": place,
        "progress": None,
        "notice": "Offline preview: a procedural picture, not a diffusion model.",
        "meta": {"owner": name, "owner_name": name, "prompt": f"a lighthouse for {name}"},
    }


async def hub_only(args: argparse.Namespace) -> None:
    from adapters.web.live import Hub, Subscriber

    async def take_all(hub: Hub, pages: list[Subscriber]) -> int:
        hub.flush()
        size = 0
        for page in pages:
            while page.frames:
                size += len(await page.take() or "")
        return size

    async def once() -> tuple[float, int, int]:
        hub = Hub()
        pages = [Subscriber(f"user{i:03d}") for i in range(args.users)]
        for page in pages:
            hub.subscribe("general", page)
        seq = size = frames = 0
        t0 = time.perf_counter()
        for i in range(args.users):  # the burst, a frame every 40 new cards (a tick)
            seq += 1
            hub.publish("general", _hub_card(i, seq, i + 1))
            if i % 40 == 39 or i == args.users - 1:
                size += await take_all(hub, pages)
                frames += len(pages)
        for moved in range(1, 13):  # the line moves up by the 16 slots, 12 times
            for i in range(16 * moved, args.users):
                seq += 1
                hub.publish("general", _hub_card(i, seq, i + 1 - 16 * moved))
            size += await take_all(hub, pages)
            frames += len(pages)
        return time.perf_counter() - t0, size, frames

    runs = [await once() for _ in range(7)]
    ms = [t * 1000 for t, _, _ in runs]
    print(
        f"live-update hub alone: {args.users} pages, {args.users} new cards, then 12 moves of "
        "the line (7 runs)"
    )
    print(
        f"  CPU:               median {statistics.median(ms):.0f} ms, min {min(ms):.0f} ms "
        f"({runs[0][2]} frames, {runs[0][1] / 2**20:.1f} MiB built and taken per run)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--latency-ms", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16, help="offline provider slots")
    parser.add_argument(
        "--sockets",
        type=int,
        default=None,
        help="open pages (WebSockets) during the load; default: one per user",
    )
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument(
        "--core-only",
        action="store_true",
        help="the same burst straight into the core (the floor), then exit",
    )
    parser.add_argument(
        "--hub-only",
        action="store_true",
        help="the live-update hub alone: the pages' frames for such a burst, then exit",
    )
    parser.add_argument("--serve-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_only:
        asyncio.run(serve_only(args))
        return
    if args.core_only:
        asyncio.run(core_only(args))
        return
    if args.hub_only:
        asyncio.run(hub_only(args))
        return
    if args.sockets is None:
        args.sockets = args.users
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
