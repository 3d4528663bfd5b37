"""The two-process half of ``bench/scale.py``: bot processes sharing one PostgreSQL database.

A throwaway PostgreSQL cluster (``tests/pg_cluster.py``: Debian's binaries, a temp dir,
loopback) and, per run, a fresh database. Each bot process is ``bench/scale_worker.py``: the
real ``App.open`` on ``IMAGINE_STORE__URL``, the offline provider with ``--latency-ms`` per
call and ``--concurrency`` slots, and a poster that appends each posted result to a file. A
submitter in this process (``App.open(start=False)``: it writes jobs, runs none) sends
``--jobs`` commands from ``--users`` users round-robin through the real handler
(``/imagine ... --n N``); the bot processes take them by lease.

Runs: one process alone, then two, then two with the first SIGKILLed once a third of the jobs
are done. Printed per run: the time from the first command to the last result delivered,
throughput, and the checks read back from the database: the ledger invariant
(``bot.quotas.ledger_balances``) and per-user quota used == images made, every job done with
attempts == 1 (2 only for the jobs the killed process held), images per job == n, one result
outbox row per job, done, and the lines each process's poster wrote. For the kill run, the
take-over: from the SIGKILL to the last job the dead process held running again elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.scale_worker import PLATFORM, bench_overrides
from bot.app import App
from bot.config import load_settings
from bot.quotas import ledger_balances
from bot.storage.records import user_scope
from bot.types import Actor, Invocation, Reply
from tests import pg_cluster

REPO = Path(__file__).resolve().parent.parent
WORKER = REPO / "bench" / "scale_worker.py"


class _Replies:
    def __init__(self) -> None:
        self.sent: list[Reply] = []

    async def send(self, reply: Reply) -> str | None:
        self.sent.append(reply)
        return reply.job_id or f"r{len(self.sent)}"

    async def edit(self, ref: str, reply: Reply) -> None:
        self.sent.append(reply)


@dataclass
class Worker:
    proc: asyncio.subprocess.Process
    posts: Path
    killed_at: float | None = None

    @property
    def pid(self) -> int:
        return int(self.proc.pid)


@dataclass
class Result:
    label: str
    jobs: int
    took: float = 0.0
    accepted: float = 0.0
    checks: dict[str, Any] = field(default_factory=dict)
    takeover: float | None = None
    orphans: int = 0
    final_after_kill: float | None = None
    delivered: bool = True
    delivered_after_kill: float | None = None


async def start_worker(args: argparse.Namespace, url: str, data: Path, i: int) -> Worker:
    posts = data / f"posts-{i}.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO), "IMAGINE_STORE__URL": url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        "--data",
        str(data / "data"),
        "--posts",
        str(posts),
        "--latency-ms",
        str(args.latency_ms),
        "--concurrency",
        str(args.concurrency),
        "--lease-s",
        str(args.lease_s),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 120)
    if b"ready" not in line:
        raise RuntimeError(f"bot process {i} did not start: {line!r}")
    return Worker(proc, posts)


async def stop_worker(w: Worker) -> None:
    if w.proc.returncode is None:
        w.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(w.proc.wait(), 30)
        except TimeoutError:
            w.proc.kill()
            await w.proc.wait()


async def job_rows(app: App) -> list[dict[str, Any]]:
    rows = await app.store.fetchall(
        "SELECT id, owner_id, state, attempts, lease_owner, started_at FROM jobs"
    )
    return [dict(r) for r in rows]


async def check(app: App, job_ids: list[str], n: int, workers: list[Worker]) -> dict[str, Any]:
    """What the database and the posters say once everything is final."""
    rows = {r["id"]: r for r in await job_rows(app)}
    images = await app.store.fetchall("SELECT job_id, COUNT(*) AS c FROM images GROUP BY job_id")
    per_job = {r["job_id"]: int(r["c"]) for r in images}
    outbox = await app.store.fetchall(
        "SELECT job_id, state FROM outbox WHERE kind = 'result' AND platform = ?", (PLATFORM,)
    )
    done_rows = collections.Counter(r["job_id"] for r in outbox if r["state"] == "done")
    used = await app.store.fetchall("SELECT scope, used FROM quota_usage WHERE win LIKE 'd:%'")
    made: collections.Counter[str] = collections.Counter()
    for job_id, count in per_job.items():
        made[user_scope(PLATFORM, "team", str(rows[job_id]["owner_id"]))] += count
    lines: collections.Counter[str] = collections.Counter()
    for w in workers:
        if w.posts.exists():
            lines.update(line.split()[0] for line in w.posts.read_text().splitlines() if line)
    attempts = collections.Counter(int(rows[j]["attempts"]) for j in job_ids)
    return {
        "done": sum(1 for j in job_ids if rows[j]["state"] == "done"),
        "attempts": dict(sorted(attempts.items())),
        "images_ok": all(per_job.get(j) == n for j in job_ids),
        "ledger": await ledger_balances(app.storage),
        "quota_eq_images": {
            str(r["scope"]): int(r["used"]) for r in used if str(r["scope"]).startswith("user:")
        }
        == dict(made),
        "outbox_done_once": all(done_rows[j] == 1 for j in job_ids) and len(outbox) == len(job_ids),
        "no_row": sorted(j for j in job_ids if j not in {r["job_id"] for r in outbox}),
        "posted_once": sum(1 for j in job_ids if lines[j] == 1),
        "posted_twice": sum(1 for j in job_ids if lines[j] > 1),
        "by_process": collections.Counter(
            str(r["lease_owner"]).split(":")[1] if r["lease_owner"] else "-" for r in rows.values()
        ),
    }


async def all_final(app: App, within: float) -> None:
    deadline = time.monotonic() + within
    while any(r["state"] in ("queued", "running") for r in await job_rows(app)):
        if time.monotonic() > deadline:
            raise TimeoutError("jobs still queued or running")
        await asyncio.sleep(0.05)


async def all_delivered(app: App, count: int, within: float) -> bool:
    """Whether every result row is done within ``within`` s (longer than the outbox's own
    60 s lease, so a row a dead process held is retried in time); False leaves the rest to
    :func:`check` to name (a job without a row is never delivered by a running process)."""
    deadline = time.monotonic() + within
    while True:
        row = await app.store.fetchone(
            "SELECT COUNT(*) AS c FROM outbox WHERE kind = 'result' AND state = 'done'"
        )
        if row is not None and int(row["c"]) >= count:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)


async def one_run(
    args: argparse.Namespace, cluster: pg_cluster.Cluster, procs: int, kill: bool
) -> Result:
    label = f"{procs} process{'es' if procs > 1 else ''}" + (", one SIGKILLed" if kill else "")
    url = cluster.url(cluster.new_database())
    with tempfile.TemporaryDirectory(prefix="imagine-scale-") as tmp:
        data = Path(tmp)
        overrides = bench_overrides(data / "data", args.latency_ms, args.concurrency, args.lease_s)
        settings = load_settings(None, env={"IMAGINE_STORE__URL": url}, overrides=overrides)
        workers: list[Worker] = []
        async with AsyncExitStack() as stack:
            for i in range(procs):
                workers.append(await start_worker(args, url, data, i))
                stack.push_async_callback(stop_worker, workers[-1])
            submitter = await stack.enter_async_context(App.open(settings, start=False))
            users = [f"user{i}" for i in range(args.users_procs)]
            result = Result(label, args.jobs)
            started = time.perf_counter()
            job_ids: list[str] = []
            for i in range(args.jobs):
                user = users[i % len(users)]
                actor = Actor(PLATFORM, "team", user, user.title(), (), False)
                text = f"a lighthouse at dusk, take {i} --n {args.n}"
                out = _Replies()
                await submitter.handle(
                    Invocation(actor, "general", command="imagine", text=text), out
                )
                ids = [r.job_id for r in out.sent if r.job_id]
                if not ids:
                    raise RuntimeError(f"job {i} refused: {[r.text for r in out.sent]}")
                job_ids.append(ids[0])
            result.accepted = time.perf_counter() - started
            if kill:
                killed, result.takeover, result.orphans = await kill_mid_run(
                    submitter, workers[0], args
                )
                await all_final(submitter, within=600)
                result.final_after_kill = time.perf_counter() - killed
            await all_final(submitter, within=600)
            result.delivered = await all_delivered(submitter, len(job_ids), args.deliver_wait_s)
            result.took = time.perf_counter() - started
            if kill:
                result.delivered_after_kill = time.perf_counter() - killed
            result.checks = await check(submitter, job_ids, args.n, workers)
        return result


async def kill_mid_run(
    app: App, victim: Worker, args: argparse.Namespace
) -> tuple[float, float, int]:
    """SIGKILL ``victim`` once a third of the jobs are done while it runs some; then the time
    until the last job it held is running (or finished) under another process's lease."""
    mark = f":{victim.pid}:"
    while True:
        rows = await job_rows(app)
        done = sum(1 for r in rows if r["state"] == "done")
        held = [r for r in rows if r["state"] == "running" and mark in str(r["lease_owner"])]
        # --kill-at generating: while every job it holds is inside its provider call (started
        # a quarter of the latency ago or more), not while it is finishing one: the typical
        # crash. --kill-at any: at the first look (it may land while a result is being sent).
        clock = time.time()  # the App's clock, which started_at is on
        quiet = all(
            args.latency_ms / 4000
            <= clock - float(r["started_at"] or clock)
            <= args.latency_ms * 3 / 4000
            for r in held
        )
        if done >= args.jobs // 3 and held and (quiet or args.kill_at == "any"):
            break
        if not any(r["state"] in ("queued", "running") for r in rows):
            raise RuntimeError("every job finished before the kill: try more --jobs")
        await asyncio.sleep(0.02)
    victim.proc.send_signal(signal.SIGKILL)
    killed = time.perf_counter()
    await victim.proc.wait()
    orphans = {r["id"] for r in held}
    while True:
        now = {r["id"]: r for r in await job_rows(app)}
        left = [
            j
            for j in orphans
            if now[j]["state"] == "running" and mark in str(now[j]["lease_owner"])
        ]
        if not left:
            return killed, time.perf_counter() - killed, len(orphans)
        if time.perf_counter() - killed > 120:
            raise TimeoutError(f"{len(left)} jobs of the killed process never taken over")
        await asyncio.sleep(0.02)


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    base = next((r for r in results if r.label == "1 process"), None)
    print(
        f"{args.jobs} jobs x --n {args.n} from {args.users_procs} users; offline provider "
        f"{args.latency_ms} ms per call, {args.concurrency} slots per process; "
        f"jobs.lease_s = {args.lease_s:g}"
    )
    head = (
        f"{'run':<28} {'time':>7} {'jobs/s':>7} {'vs 1':>5} {'done':>8} {'attempts':>14} "
        f"{'ledger':>6} {'quota=img':>9} {'img/job':>7} {'outbox 1x':>9} {'posted 1x/2x':>12}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        c = r.checks
        ledger = "exact" if c["ledger"] else "WRONG"
        quota = "yes" if c["quota_eq_images"] else "NO"
        images = "== n" if c["images_ok"] else "WRONG"
        once = "yes" if c["outbox_done_once"] else "NO"
        rate = r.jobs / r.took
        speed = f"{(base.took / r.took):.2f}" if base else "-"
        print(
            f"{r.label:<28} {r.took:>6.1f}s {rate:>7.2f} {speed:>5} "
            f"{c['done']:>4}/{r.jobs:<3} {json.dumps(c['attempts']):>14} "
            f"{ledger:>6} {quota:>9} {images:>7} {once:>9} "
            f"{c['posted_once']:>7}/{c['posted_twice']:<4}"
        )
    for r in results:
        owners = ", ".join(f"pid {k}: {v}" for k, v in sorted(r.checks["by_process"].items()))
        print(f"  {r.label}: accepted in {r.accepted:.2f} s; last lease per job: {owners}")
        if not r.delivered:
            print(
                f"  {r.label}: NOT every result delivered within {args.deliver_wait_s:g} s of "
                f"the last job finishing; jobs done with no result row in the outbox: "
                f"{r.checks['no_row'] or 'none'}"
            )
        if r.takeover is not None:
            print(
                f"  {r.label}: {r.orphans} running jobs of the killed process taken over "
                f"{r.takeover:.1f} s after the SIGKILL (lease {args.lease_s:g} s); every job "
                f"final {r.final_after_kill:.1f} s after it, "
                + (
                    f"every result delivered {r.delivered_after_kill:.1f} s after it"
                    if r.delivered
                    else "NOT every result delivered"
                )
            )


async def run_procs(args: argparse.Namespace) -> None:
    bindir = pg_cluster.find_bindir()
    if bindir is None:
        print("two-process half skipped: PostgreSQL's server binaries (initdb) are not installed")
        return
    cluster = await asyncio.to_thread(pg_cluster.start, bindir)
    try:
        results = [await one_run(args, cluster, 1, kill=False)]
        results.append(await one_run(args, cluster, 2, kill=False))
        if args.kill:
            results.append(await one_run(args, cluster, 2, kill=True))
        print_table(results, args)
    finally:
        await asyncio.to_thread(cluster.stop)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("two processes on one PostgreSQL (--part procs)")
    g.add_argument("--jobs", type=int, default=200)
    g.add_argument("--n", type=int, default=1, help="images per job")
    g.add_argument("--procs-users", dest="users_procs", type=int, default=8)
    g.add_argument("--latency-ms", type=int, default=500, help="the offline provider's per call")
    g.add_argument("--concurrency", type=int, default=4, help="provider slots per process")
    g.add_argument("--lease-s", type=float, default=5.0, help="jobs.lease_s")
    g.add_argument("--kill", action=argparse.BooleanOptionalAction, default=True)
    g.add_argument("--kill-at", choices=("generating", "any"), default="generating")
    g.add_argument(
        "--deliver-wait-s",
        type=float,
        default=90.0,
        help="how long after the last job to wait for its result (the outbox lease is 60 s)",
    )
