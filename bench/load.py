"""Load: hundreds of people type /imagine at the same moment, on Slack and on the web playground.

The bot runs in a child process (so the clients' and the fakes' work is not counted against
it): the real App on a temporary data dir, slack-bolt's HTTP mode (its own aiohttp app, signed
requests, the real ``AsyncWebClient``) and the web playground, with a provider fake that takes
``--latency-s`` per call and ``--slots`` calls at once. This process plays the outside world:
the Slack fake of ``tests/fakes/slack_api.py`` (the Web API the bot calls), the people sending
signed slash commands to ``/slack/events`` and POSTs to the playground's ``/api/command``, and
one open playground page that watches the results arrive. Everything is on loopback and the run
stops by itself (``--timeout``, by default twice the ideal plus a minute).

"At once" is a crowd answering an announcement: the commands arrive evenly over
``--spread-s`` (5 s: 100 a second), Slack and playground interleaved; ``--spread-s 0`` sends
them all in the same instant. A warm-up command goes first, as a bot that has been up a while
has bolt's ``auth.test`` answer cached.

Printed:

- ack latency: sending the slash command -> bolt's HTTP answer (Slack's 3 s window); for the
  playground the answer itself carries the queued job, so it is its "queued" reply too;
- "queued" reply latency: sending the slash command -> the fake receiving the bot's first
  chat.postMessage in that person's channel (the status message with its place in line);
- event-loop lag in the bot (a 10 ms ticker: how late it woke; max and p99), from the first
  command to the last result;
- completion: the first command -> the last result at the fakes, against the ideal: the
  provider's slots busy from the moment a job is there for them and nothing else taking any
  time (for these arrivals; 500 / 8 x 2 s = 125 s and a little);
- the bot's CPU time (all its threads): unlike the latencies, other work on the machine does
  not change it, so it is the figure to compare runs on a busy machine by;
- the bot's peak RSS; the provider fake's peak concurrency and how busy its slots were;
- lost and duplicated results (each job's result message counted at the fakes: Slack
  chat.postMessage with the result's buttons; playground posts of a finished job), both must be
  0, and the ledger invariant (``bot.quotas.ledger_balances``), which must hold exactly; the
  Web API calls the bot made.

``--slack-session`` gives the bot's Slack client one long-lived HTTP session (slack_sdk opens
a new one per call unless given one), as ``imagine-bot serve`` now does: measure with it.

    python bench/load.py [--users 500] [--web-share 0.2] [--spread-s 5] [--latency-s 2]
                         [--slots 8] [--slack-session] [--profile FILE]
    python bench/load.py --users 64            # a quick run (~25 s)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from load_provider import LoadProvider  # bench/, the script's own directory

TOKEN = "xoxb-load-token"
SECRET = "load-signing-secret"
TEAM = "T0LOAD"
FINAL = ("done", "failed", "filtered")
RESULT_VERBS = re.compile(r"^(?!cancel:)[a-z]+:([a-z0-9]+)")


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# ============================================================================ the bot's side
class CountingCore:
    """The App as the playground sees it, with the playground's poster counted: how many times
    each finished job's result was posted (the playground has no fake in front of it)."""

    def __init__(self, app: Any, posts: Counter[str]) -> None:
        self._app, self._posts = app, posts

    def __getattr__(self, name: str) -> Any:
        return getattr(self._app, name)

    def register_poster(self, platform: str, poster: Any) -> None:
        posts = self._posts

        class Counted:
            async def post(self, target: Any, reply: Any, steps: Any = None) -> str | None:
                if reply.job_id and reply.state in FINAL and not reply.ephemeral:
                    posts[reply.job_id] += 1
                return await poster.post(target, reply, steps)  # type: ignore[no-any-return]

            def __getattr__(self, name: str) -> Any:
                return getattr(poster, name)

        self._app.register_poster(platform, Counted())


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of the bot process
    return usage.ru_utime + usage.ru_stime


async def lag_probe(lags: list[float], stop: asyncio.Event, every: float = 0.01) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(every)
        lags.append(loop.time() - t - every)


async def serve_only(args: argparse.Namespace) -> None:
    from aiohttp import web
    from slack_sdk.web.async_client import AsyncWebClient

    from adapters.slack.adapter import build_bolt_app
    from adapters.slack.adapter import create_web_app as slack_web_app
    from adapters.web.server import start as start_playground
    from bot.app import App
    from bot.config import load_settings
    from bot.quotas import ledger_balances

    provider = LoadProvider(args.latency_s, args.slots)
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            None,
            env={
                "SLACK_BOT_TOKEN": TOKEN,
                "SLACK_SIGNING_SECRET": SECRET,
                "SLACK_API_URL": args.slack_api_url,
            },
            overrides={
                "bot": {"data_dir": tmp, "log_level": "WARNING"},
                "grammar": {"base_side": 256},
                "quota": {
                    "user_daily": 50,
                    "user_monthly": 1000,
                    "workspace_daily": 0,
                    "workspace_monthly": 0,
                },
                "jobs": {"max_queue": max(500, args.users * 2), "max_queued_per_user": 10},
                "providers": {"default": "load"},
            },
        )
        async with App.open(settings, extra_providers={"load": provider}) as app:
            session = aiohttp.ClientSession() if args.slack_session else None
            # As the adapter builds it (a new HTTP session per Web API call), unless asked
            # to keep one session open.
            bolt = build_bolt_app(
                app,
                client=AsyncWebClient(token=TOKEN, base_url=args.slack_api_url, session=session)
                if session
                else None,
            )
            runner = web.AppRunner(slack_web_app(bolt), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0, backlog=2048).start()
            slack_url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
            web_posts: Counter[str] = Counter()
            playground = await start_playground(CountingCore(app, web_posts), "127.0.0.1", 0)
            lags: list[float] = []
            stop = asyncio.Event()
            probe = asyncio.create_task(lag_probe(lags, stop))
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(json.dumps({"slack": slack_url, "web": playground.url}), flush=True)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, sys.stdin.readline)  # "go": measure from now
            lags.clear()
            cpu_before = _cpu_s()
            await loop.run_in_executor(None, sys.stdin.readline)  # the parent saw it all
            stop.set()
            cpu = _cpu_s() - cpu_before
            await probe
            balanced = await ledger_balances(app.storage)
            totals = await app.storage.ledger.totals()
            states = {
                r["state"]: r["c"]
                for r in await app.store.fetchall(
                    "SELECT state, COUNT(*) AS c FROM jobs GROUP BY state"
                )
            }
            figures = {
                "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "rss_before_mib": rss_before,
                "cpu_s": cpu,
                "lag_max_ms": max(lags, default=0.0) * 1000,
                "lag_p99_ms": pct(lags, 0.99) * 1000,
                "ledger_balanced": balanced,
                "ledger": [totals.reserved, totals.refunded, totals.committed, totals.in_flight],
                "states": states,
                "provider": {
                    "calls": provider.calls,
                    "peak": provider.peak,
                    "over": provider.over,
                    "busy": provider.busy,
                    "span": provider.last - provider.first,
                },
                "web_posts": dict(web_posts),
            }
            await playground.close()
            await runner.cleanup()
            if session is not None:
                await session.close()
    print(json.dumps(figures), flush=True)


# ========================================================================= the world's side
def make_fake() -> Any:
    from tests.fakes.slack_api import SlackFake
    from tests.fakes.slack_limits import RateLimits

    class TimedSlack(SlackFake):
        """The Slack fake, noting when each channel's first message and results arrive."""

        def __init__(self) -> None:
            # No rate limits here: this bench measures the bot's own latency and CPU; Slack's
            # limits under a burst are bench/slack_budget.py's.
            super().__init__(token=TOKEN, team_id=TEAM, rate_limits=RateLimits({}))
            self.first_at: dict[str, float] = {}
            self.results: dict[str, list[str]] = {}  # channel -> job ids of result posts
            self.last_result_at = 0.0
            self.expected = 0
            self.all_in = asyncio.Event()

        async def post_message(self, p: dict[str, Any]) -> dict[str, Any]:
            now = time.perf_counter()
            answer: dict[str, Any] = await super().post_message(p)
            channel = str(p.get("channel"))
            self.first_at.setdefault(channel, now)
            jobs = {
                m.group(1)
                for b in p.get("blocks") or []
                if b.get("type") == "actions"
                for el in b.get("elements", [])
                if (m := RESULT_VERBS.match(str(el.get("action_id", ""))))
            }
            for job in jobs:
                self.results.setdefault(channel, []).append(job)
                self.last_result_at = now
                if len(self.results) >= self.expected:
                    self.all_in.set()
            return answer

    return TimedSlack()


async def watch_web(
    ws: aiohttp.ClientWebSocketResponse,
    seen: dict[str, float],
    all_in: asyncio.Event,
    expected: int,
) -> None:
    """One open page: notes when each job's card first shows its result. Reads both the
    playground's batched frames (cards whole, then deltas) and single reply messages."""
    cards: dict[str, dict[str, Any]] = {}  # ref -> what the page knows of the card

    def look(ref: str) -> None:
        card = cards[ref]
        job, state = card.get("job_id") or ref, card.get("state")
        if state in FINAL and (card.get("images") or state != "done"):
            seen.setdefault(str(job), time.perf_counter())
            if len(seen) >= expected:
                all_in.set()

    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        frame = json.loads(msg.data)
        if frame.get("type") == "reply":
            items = [{"op": "card", "reply": frame.get("reply") or {}}]
        else:
            items = frame.get("items") or []
        for item in items:
            if item.get("op") == "card":
                reply = item.get("reply") or {}
                ref = str(reply.get("ref") or reply.get("job_id") or "")
                if ref:
                    cards[ref] = dict(reply)
                    look(ref)
            elif item.get("op") == "delta" and str(item.get("ref")) in cards:
                cards[str(item["ref"])].update(item.get("set") or {})
                look(str(item["ref"]))


def slash_body(fake: Any, uid: str, channel: str, text: str) -> str:
    return urlencode(
        {
            "token": "legacy-unused",
            "team_id": TEAM,
            "team_domain": "load",
            "channel_id": channel,
            "channel_name": channel.lower(),
            "user_id": uid,
            "user_name": uid.lower(),
            "command": "/imagine",
            "text": text,
            "api_app_id": "A0IMAGINE",
            "is_enterprise_install": "false",
            "response_url": fake.response_url(uid),
            "trigger_id": fake.new_trigger(),
        }
    )


async def run(args: argparse.Namespace) -> None:
    from slack_sdk.signature import SignatureVerifier

    n_web = round(args.users * args.web_share)
    n_slack = args.users - n_web
    timeout = args.timeout or args.users / args.slots * args.latency_s * 2 + 60
    async with make_fake() as fake:
        fake.expected = n_slack
        if not n_slack:
            fake.all_in.set()
        slack_users = [f"U{i:04d}" for i in range(n_slack)]
        for uid in slack_users:
            fake.add_user(uid, uid.lower())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGINE_", "SLACK_"))}
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--serve-only",
            "--users",
            str(args.users),
            "--latency-s",
            str(args.latency_s),
            "--slots",
            str(args.slots),
            "--slack-api-url",
            fake.api_url,
            *(["--slack-session"] if args.slack_session else []),
            *(["--profile", args.profile] if args.profile else []),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        assert child.stdin is not None and child.stdout is not None
        urls = json.loads(await asyncio.wait_for(child.stdout.readline(), 60))
        signer = SignatureVerifier(SECRET)
        bodies = {
            uid: slash_body(fake, uid, "C" + uid[1:], f"a lighthouse for {uid.lower()} --n 1")
            for uid in slack_users
        }
        # Arrivals spread evenly over --spread-s, Slack and playground interleaved.
        everyone = [*slack_users, *(f"web{i:04d}" for i in range(n_web))]
        random.Random(8).shuffle(everyone)
        delays = {who: args.spread_s * i / len(everyone) for i, who in enumerate(everyone)}
        acks: dict[str, float] = {}
        web_acks: list[float] = []
        sent_at: dict[str, float] = {}
        web_sent: list[float] = []
        failures: list[str] = []
        web_seen: dict[str, float] = {}
        web_all_in = asyncio.Event()
        if not n_web:
            web_all_in.set()
        go = asyncio.Event()
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            watcher = await http.ws_connect(f"{urls['web']}/ws?channel=general&name=watcher")
            assert (await watcher.receive_json())["type"] == "history"
            watching = asyncio.create_task(watch_web(watcher, web_seen, web_all_in, n_web))

            async def slack_user(uid: str) -> None:
                body = bodies[uid]
                ts = str(int(time.time()))
                headers = {
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Slack-Request-Timestamp": ts,
                    "X-Slack-Signature": signer.generate_signature(timestamp=ts, body=body),
                }
                await go.wait()
                await asyncio.sleep(delays[uid])
                t0 = sent_at["C" + uid[1:]] = time.perf_counter()
                async with http.post(urls["slack"], data=body.encode(), headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        failures.append(f"slack {uid}: HTTP {r.status}")
                acks[uid] = time.perf_counter() - t0

            async def web_user(i: int) -> None:
                name = f"web{i:04d}"
                await go.wait()
                await asyncio.sleep(delays[name])
                t0 = time.perf_counter()
                web_sent.append(t0)
                async with http.post(
                    f"{urls['web']}/api/command",
                    json={
                        "name": name,
                        "channel": "general",
                        "text": f"/imagine a lighthouse for {name} --n 1",
                    },
                ) as r:
                    answer = await r.json()
                web_acks.append(time.perf_counter() - t0)
                if r.status != 200 or not any(m.get("job_id") for m in answer["replies"]):
                    failures.append(f"web {name}: {r.status} {str(answer)[:200]}")

            # A bot that has been up a while: bolt has its auth.test answer, the code paths
            # are warm. (A cold start answers the first burst with one auth.test per request.)
            fake.add_user("UWARM", "warm")
            warm = slash_body(fake, "UWARM", "CWARM", "").replace("%2Fimagine", "%2Fimagine-quota")
            ts = str(int(time.time()))
            async with http.post(
                urls["slack"],
                data=warm.encode(),
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Slack-Request-Timestamp": ts,
                    "X-Slack-Signature": signer.generate_signature(timestamp=ts, body=warm),
                },
            ) as r:
                assert r.status == 200, await r.text()
            await fake.wait_for("chat.postEphemeral", within=30)

            tasks = [asyncio.create_task(slack_user(u)) for u in slack_users]
            tasks += [asyncio.create_task(web_user(i)) for i in range(n_web)]
            await asyncio.sleep(0.2)  # every client is parked on the same event
            child.stdin.write(b"go\n")
            await child.stdin.drain()
            started = time.perf_counter()
            go.set()
            await asyncio.gather(*tasks)
            try:
                async with asyncio.timeout(timeout):
                    await fake.all_in.wait()
                    await web_all_in.wait()
                timed_out = False
            except TimeoutError:
                timed_out = True
            ends = [t for t in (fake.last_result_at, max(web_seen.values(), default=0.0)) if t]
            finished = max(ends, default=started) - started
            await asyncio.sleep(1.0)  # a late duplicate would land now
            await watcher.close()
            watching.cancel()
        child.stdin.write(b"done\n")
        await child.stdin.drain()
        server = json.loads(await asyncio.wait_for(child.stdout.readline(), 120))
        await child.wait()

    queued = [fake.first_at[c] - t for c, t in sent_at.items() if c in fake.first_at]
    results = Counter({c: len(jobs) for c, jobs in fake.results.items()})
    slack_lost = n_slack - len(results)
    slack_dup = sum(n - 1 for n in results.values() if n > 1)
    web_posts: dict[str, int] = server["web_posts"]
    web_lost = n_web - len(web_posts)
    web_dup = sum(n - 1 for n in web_posts.values() if n > 1)
    ms = [a * 1000 for a in acks.values()]
    wms = [a * 1000 for a in web_acks]
    qms = [q * 1000 for q in queued]
    # The ideal: every slot busy from the moment a job is there for it, nothing else taking
    # any time (first come, first served onto the earliest free slot, with these arrivals).
    free = [0.0] * args.slots
    for t in sorted(t - started for t in [*sent_at.values(), *web_sent]):
        i = min(range(args.slots), key=free.__getitem__)
        free[i] = max(free[i], t) + args.latency_s
    ideal = max(free)
    over = (finished / ideal - 1) * 100
    print(
        f"load: {args.users} users at once ({n_slack} Slack HTTP, {n_web} playground), "
        f"provider fake {args.latency_s:g} s per call, {args.slots} at once"
    )
    if failures:
        print(f"  REFUSED: {len(failures)}, e.g. {failures[0]}")
    if timed_out:
        print(f"  TIMED OUT after {timeout:.0f} s")
    print(
        f"  Slack ack:        p50 {pct(ms, 0.5):7.1f} ms   p99 {pct(ms, 0.99):7.1f} ms   "
        f"max {max(ms, default=0):7.1f} ms   (target p99 < 100 ms)"
    )
    print(
        f"  Slack 'queued':   p50 {pct(qms, 0.5):7.1f} ms   p99 {pct(qms, 0.99):7.1f} ms   "
        f"max {max(qms, default=0):7.1f} ms   (target p99 < 250 ms; {len(qms)} seen)"
    )
    if wms:
        print(
            f"  playground ack:   p50 {pct(wms, 0.5):7.1f} ms   p99 {pct(wms, 0.99):7.1f} ms   "
            f"max {max(wms):7.1f} ms   (its answer is the 'queued' reply)"
        )
    print(
        f"  event-loop lag:   max {server['lag_max_ms']:7.1f} ms   "
        f"p99 {server['lag_p99_ms']:7.1f} ms   (target max < 50 ms)"
    )
    print(
        f"  completion:       {finished:7.2f} s against the ideal {ideal:.2f} s "
        f"({over:+.1f}%; target within 5%)"
    )
    print(
        f"  bot CPU:          {server['cpu_s']:7.1f} s in all, "
        f"{server['cpu_s'] / max(1, args.users) * 1000:.1f} ms per job (user + system, all "
        "threads: the figure other load on the machine does not change)"
    )
    print(
        f"  peak RSS:         {server['rss_mib']:7.0f} MiB (bot process; "
        f"{server['rss_before_mib']:.0f} MiB before the load; target < 400 MiB)"
    )
    p = server["provider"]
    use = p["busy"] / (args.slots * p["span"]) * 100 if p["span"] else 0.0
    print(
        f"  provider:         {p['calls']} calls, peak {p['peak']} at once, "
        f"{p['over']} beyond {args.slots}; its slots busy {use:.1f}% of the time "
        "from the first call to the last"
    )
    print(
        f"  results:          lost {slack_lost + web_lost} (Slack {slack_lost}, playground "
        f"{web_lost}), duplicated {slack_dup + web_dup} (Slack {slack_dup}, playground "
        f"{web_dup}); job states {server['states']}"
    )
    calls = Counter(c.method for c in fake.calls)
    print(
        f"  Slack Web API:    {calls['chat.postMessage']} postMessage, {calls['chat.update']} "
        f"update, {calls['users.info']} users.info, "
        f"{calls['files.completeUploadExternal']} uploads"
    )
    r, f, c, i = server["ledger"]
    print(
        f"  ledger:           {'balanced' if server['ledger_balanced'] else 'NOT BALANCED'}"
        f" (reserved {r} - refunded {f} = committed {c} + in flight {i})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument(
        "--web-share",
        type=float,
        default=0.2,
        help="the share of users on the web playground (the rest on Slack)",
    )
    parser.add_argument(
        "--spread-s",
        type=float,
        default=5.0,
        help="the commands arrive evenly spread over this many seconds",
    )
    parser.add_argument("--latency-s", type=float, default=2.0)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument(
        "--timeout",
        type=float,
        default=0.0,
        help="give up after this many seconds (default: 2 x ideal + 60)",
    )
    parser.add_argument(
        "--slack-session",
        action="store_true",
        help="give the bot's Slack client one long-lived HTTP session",
    )
    parser.add_argument(
        "--profile", default="", help="write the bot process's cProfile statistics to this file"
    )
    parser.add_argument("--serve-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--slack-api-url", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_only and args.profile:
        import cProfile

        cProfile.runctx("asyncio.run(serve_only(args))", globals(), {"args": args}, args.profile)
    elif args.serve_only:
        asyncio.run(serve_only(args))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
