"""The bot's own cost per job, around a provider that answers instantly.

200 jobs of 4 images at 1024x1024 go through the real handler, job runner, SQLite ledger and
image storage, one after another. For each job we time:

- accept -> queued: from ``Handler.handle`` to the "queued" reply (the user's acknowledgement);
- own time: from ``handle`` to the posted result, minus the provider's own (near-zero) time.

The floor is what any bot must spend at least: encoding the same four images once as PNG,
measured in the same run on the same machine. Target: own time / floor <= 1.5, and
accept -> queued p99 < 20 ms.

    python bench/core_overhead.py [--jobs 200]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.app import App
from bot.config import load_settings
from bot.images import encode_png_sync
from bot.providers.base import (
    Capabilities,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    ProgressCallback,
)
from bot.providers.offline import render_sync
from bot.types import Actor, Invocation, PostSteps, Reply, Target

SIDE = 1024


class InstantProvider:
    """Answers at once with four ready-made 1024x1024 PNGs (as a fast provider would)."""

    name = "instant"
    label = "instant benchmark provider"

    def __init__(self, images: list[bytes]) -> None:
        self._images = images
        self.spent = 0.0

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(max_n_per_call=10, max_concurrency=4, seed_max=4294967295)

    async def generate(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        t = time.perf_counter()
        out = tuple(
            GeneratedImage(self._images[i % len(self._images)], seed=req.seed + i)
            for i in range(req.n)
        )
        self.spent += time.perf_counter() - t
        return GenerationResult(out, model="instant")

    async def check(self) -> dict[str, str]:
        return {"status": "ok"}

    async def aclose(self) -> None:
        return None


class Surface:
    """Responder and poster: records when the queued reply and the result arrive."""

    def __init__(self) -> None:
        self.queued_at: dict[str, float] = {}
        self.done: dict[str, asyncio.Future[float]] = {}

    async def send(self, reply: Reply) -> str | None:
        if reply.job_id and reply.job_id not in self.queued_at:
            self.queued_at[reply.job_id] = time.perf_counter()
        return reply.job_id

    async def edit(self, ref: str, reply: Reply) -> None:
        return None

    async def post(
        self, target: Target, reply: Reply, steps: PostSteps | None = None
    ) -> str | None:
        if reply.job_id and reply.state in ("done", "failed", "filtered"):
            fut = self.done.setdefault(reply.job_id, asyncio.get_running_loop().create_future())
            if not fut.done():
                fut.set_result(time.perf_counter())
        return reply.job_id

    async def update(self, target: Target, ref: str, reply: Reply) -> None:
        return None

    async def delete(self, target: Target, ref: str) -> None:
        return None


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(jobs: int) -> None:
    sources = [
        render_sync(
            f"a lighthouse at dusk, view {i}",
            seed=i,
            width=SIDE,
            height=SIDE,
            style="",
            negative="",
            init=None,
            strength=None,
        )
        for i in range(4)
    ]
    decoded = []
    for data in sources:
        with Image.open(io.BytesIO(data)) as im:
            decoded.append(im.convert("RGB"))

    def floor_once() -> float:
        t = time.perf_counter()
        for img in decoded:
            encode_png_sync(img)
        return time.perf_counter() - t

    provider = InstantProvider(sources)
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            None,
            env={},
            overrides={
                "bot": {"data_dir": tmp, "log_level": "WARNING"},
                "quota": {"user_daily": 0, "user_monthly": 0},
                "jobs": {"max_queued_per_user": 1000},
                "providers": {"default": "instant"},
            },
        )
        async with App.open(settings, extra_providers={"instant": provider}) as app:
            surface = Surface()
            app.handler.register_poster("bench", surface)
            actor = Actor("bench", "local", "bencher", "Bencher")
            accept: list[float] = []
            own: list[float] = []
            floors: list[float] = []
            for i in range(jobs):
                spent_before = provider.spent
                t0 = time.perf_counter()
                await app.handler.handle(
                    Invocation(
                        actor,
                        "general",
                        text=(f"a lighthouse at dusk --n 4 --seed {i} --size {SIDE}x{SIDE}"),
                    ),
                    surface,
                )
                job_id = next(j for j in surface.queued_at if j not in surface.done)
                fut = surface.done.setdefault(job_id, asyncio.get_running_loop().create_future())
                t_done = await asyncio.wait_for(fut, 60)
                accept.append(surface.queued_at[job_id] - t0)
                own.append(t_done - t0 - (provider.spent - spent_before))
                if i % 10 == 0:
                    floors.append(await asyncio.to_thread(floor_once))
            await app.runner.wait_idle(60)
            rows = await app.store.fetchall("SELECT state, COUNT(*) AS c FROM jobs GROUP BY state")
    floor = statistics.median(floors)
    med, p99 = statistics.median(own), pct(own, 0.99)
    print(f"core overhead: {jobs} jobs x 4 images at {SIDE}x{SIDE}, instant provider")
    print(f"  job states: {dict((r['state'], r['c']) for r in rows)}")
    print(
        f"  accept -> queued:   median {statistics.median(accept) * 1000:7.2f} ms   "
        f"p99 {pct(accept, 0.99) * 1000:7.2f} ms   (target p99 < 20 ms)"
    )
    print(f"  bot's own time/job: median {med * 1000:7.2f} ms   p99 {p99 * 1000:7.2f} ms")
    print(f"  floor (encode the 4 PNGs once): median {floor * 1000:7.2f} ms")
    print(
        f"  ratio own/floor:    median {med / floor:5.2f}   p99 {p99 / floor:5.2f}   "
        f"(target <= 1.5)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    asyncio.run(main(parser.parse_args().jobs))
