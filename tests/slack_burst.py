"""A burst of jobs on Slack, end to end, counted call by call (the test and the bench share it).

The real App (a quick provider fake in place of a paid service), slack-bolt's HTTP mode on
loopback, signed ``/imagine`` commands from many users in a few channels at once, and the
Slack fake with its documented rate limits run ``time_scale`` times faster (the bot's status
budgets scaled the same), so 500 jobs take seconds instead of the ten minutes that Slack's
50-a-minute ``chat.update`` would need. Every Web API call, the 429s included, is put down to
the job it was for by a token in the job's prompt (``n0042z``).
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from adapters.slack.adapter import build_bolt_app, create_web_app
from adapters.slack.limits import HeldWebClient, MethodHolds
from bot.app import App
from bot.config import Settings, load_settings
from bot.providers.base import (
    Capabilities,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    ProgressCallback,
)
from tests.fakes import make_png
from tests.fakes.slack_api import TEAM_ID, ApiCall, SlackFake
from tests.fakes.slack_limits import RateLimits

TOKEN = "xoxb-burst-token"
SECRET = "burst-signing-secret"
JOB_TOKEN = re.compile(r"n(\d{4})z")


class QuickProvider:
    """An image service that answers after ``latency`` seconds, ``slots`` calls at once."""

    name = "quick"
    label = "quick fake"

    def __init__(self, latency: float = 0.01, slots: int = 8) -> None:
        self.latency, self.slots = latency, slots

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(max_n_per_call=1, max_concurrency=self.slots, min_side=64)

    async def generate(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        await asyncio.sleep(self.latency)
        return GenerationResult((GeneratedImage(make_png(f"{req.seed}", 64, 64), req.seed),))

    async def check(self) -> dict[str, str]:
        return {"status": "ok"}

    async def aclose(self) -> None:
        return None


@dataclass
class BurstFigures:
    jobs: int
    seconds: float
    per_job: list[int]  # every call for each job, 429s included
    accepted_per_job: list[int]  # the calls Slack accepted
    by_method: Counter[str]
    refused: Counter[str]
    overhead: Counter[str]  # calls for no one job (users.info, auth.test)
    unhonoured: list[str]  # the fake's view (a call arriving well inside a Retry-After)
    violations: list[str]
    results: int
    early: int = 0  # the client's own count of calls sent while it knew of a hold

    @property
    def median(self) -> float:
        return statistics.median(self.per_job)

    @property
    def worst(self) -> int:
        return max(self.per_job)

    def lines(self) -> list[str]:
        acc = self.accepted_per_job
        return [
            f"slack burst: {self.jobs} jobs, {self.results} results posted in {self.seconds:.1f} s",
            f"  calls per job:    median {self.median:g}, max {self.worst} "
            f"(accepted: median {statistics.median(acc):g}, max {max(acc)})",
            f"  by method:        {dict(sorted(self.by_method.items()))}",
            f"  429 answered:     {sum(self.refused.values())} {dict(self.refused)}; "
            f"unhonoured Retry-After: {len(self.unhonoured)} (sent inside a known hold: "
            f"{self.early})",
            f"  other calls:      {sum(self.overhead.values())} {dict(self.overhead)}",
        ]


def burst_settings(tmp: Path, fake: SlackFake, jobs: int, time_scale: float) -> Settings:
    slack = load_settings(None, env={}).slack
    return load_settings(
        None,
        env={
            "SLACK_BOT_TOKEN": TOKEN,
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_URL": fake.api_url,
        },
        overrides={
            "bot": {"data_dir": str(tmp), "log_level": "WARNING"},
            "grammar": {"base_side": 256},
            "quota": {
                "user_daily": 0,
                "user_monthly": 0,
                "workspace_daily": 0,
                "workspace_monthly": 0,
            },
            "jobs": {"max_queue": max(500, jobs), "max_queued_per_user": 10},
            "providers": {"default": "quick"},
            "slack": {
                "status_edits_per_job": slack.status_edits_per_job,
                "status_edits_per_channel_per_min": slack.status_edits_per_channel_per_min
                * time_scale,
                "status_edits_per_workspace_per_min": slack.status_edits_per_workspace_per_min
                * time_scale,
            },
        },
    )


def _job_of(call: ApiCall, fake: SlackFake) -> int | None:
    if call.method == "files.completeUploadExternal":
        ids = [str(f.get("id")) for f in call.params.get("files") or [] if isinstance(f, dict)]
        text = " ".join(fake.uploads[i].alt_txt for i in ids if i in fake.uploads)
    elif call.method == "chat.update" and str(call.params.get("ts")) in fake.messages:
        text = fake.messages[str(call.params["ts"])].text + json.dumps(call.params)
    else:
        text = json.dumps(call.params)
    found = JOB_TOKEN.search(text)
    return int(found.group(1)) if found else None


def count(fake: SlackFake, jobs: int, seconds: float) -> BurstFigures:
    per_job, accepted = [0] * jobs, [0] * jobs
    by_method: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    overhead: Counter[str] = Counter()
    for calls, ok in ((fake.calls, True), (fake.refused, False)):
        for call in calls:
            job = _job_of(call, fake)
            if job is None or job >= jobs:
                overhead[call.method] += 1
                continue
            by_method[call.method] += 1
            per_job[job] += 1
            if ok:
                accepted[job] += 1
            else:
                refused[call.method] += 1
    for up in fake.uploads.values():  # the raw upload of each file (not a Web API method)
        if up.data is not None and (found := JOB_TOKEN.search(up.alt_txt)):
            per_job[int(found.group(1))] += 1
            accepted[int(found.group(1))] += 1
            by_method["upload"] += 1
    results = sum(
        1 for c in fake.calls if c.method == "chat.postMessage" and c.params.get("metadata")
    )
    return BurstFigures(
        jobs,
        seconds,
        per_job,
        accepted,
        by_method,
        refused,
        overhead,
        list(fake.rate_limits.unhonoured),
        list(fake.violations),
        results,
    )


def _slash(uid: str, channel: str, text: str, trigger: str) -> str:
    return urlencode(
        {
            "team_id": TEAM_ID,
            "team_domain": "fake",
            "channel_id": channel,
            "channel_name": channel.lower(),
            "user_id": uid,
            "user_name": uid.lower(),
            "command": "/imagine",
            "text": text,
            "api_app_id": "A0IMAGINE",
            "trigger_id": trigger,
        }
    )


async def run_burst(
    tmp: Path,
    jobs: int = 500,
    *,
    users: int = 100,
    channels: int = 5,
    time_scale: float = 60.0,
    within: float = 300.0,
) -> BurstFigures:
    limits = RateLimits(time_scale=time_scale, in_flight_s=1.0)
    async with SlackFake(TOKEN, rate_limits=limits) as fake:
        uids = [f"U{i:04d}" for i in range(users)]
        for uid in uids:
            fake.add_user(uid, uid.lower())
        settings = burst_settings(tmp, fake, jobs, time_scale)
        async with App.open(settings, extra_providers={"quick": QuickProvider()}) as app:
            # The adapter's own client, its pacing run as much faster as the fake's limits.
            client = HeldWebClient(
                token=TOKEN, base_url=fake.api_url, holds=MethodHolds(time_scale=time_scale)
            )
            bolt = build_bolt_app(app, client=client)
            runner = web.AppRunner(create_web_app(bolt), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0, backlog=1024).start()
            url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
            signer = SignatureVerifier(SECRET)
            try:
                async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:

                    async def one(i: int) -> None:
                        body = _slash(
                            uids[i % users],
                            f"C{i % channels:04d}",
                            f"a red fox n{i:04d}z --n 1",
                            fake.new_trigger(),
                        )
                        ts = str(int(time.time()))
                        sig = signer.generate_signature(timestamp=ts, body=body)
                        async with http.post(
                            url,
                            data=body.encode(),
                            headers={
                                "Content-Type": "application/x-www-form-urlencoded",
                                "X-Slack-Request-Timestamp": ts,
                                "X-Slack-Signature": sig,
                            },
                        ) as resp:
                            await resp.read()

                    start = time.monotonic()
                    await asyncio.gather(*(one(i) for i in range(jobs)))

                    def delivered() -> bool:
                        return (
                            sum(
                                1
                                for c in fake.calls
                                if c.method == "chat.postMessage" and c.params.get("metadata")
                            )
                            >= jobs
                        )

                    await fake.wait_until(delivered, within)
                    seconds = time.monotonic() - start
                    await app.runner.wait_idle(within)
                    await asyncio.sleep(0.2)  # stragglers (a paced edit) would show up
            finally:
                await runner.cleanup()
        figures = count(fake, jobs, seconds)
        figures.early = client.holds.early
        return figures


__all__ = ["BurstFigures", "QuickProvider", "run_burst"]
