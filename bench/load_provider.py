"""bench/load.py's provider fake: an image service of fixed latency and a fixed number of slots."""

from __future__ import annotations

import asyncio
import time

from bot.providers.base import (
    Capabilities,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    ProgressCallback,
)
from tests.fakes import make_png


class LoadProvider:
    """The provider fake: ``latency`` seconds per call, built for ``slots`` calls at once (it
    counts calls beyond that as violations: the bot must never send more)."""

    name = "load"
    label = "load fake"

    def __init__(self, latency: float, slots: int) -> None:
        self.latency, self.slots = latency, slots
        self.in_flight = self.peak = self.calls = self.over = 0
        self.busy = 0.0  # seconds of calls, summed
        self.first = self.last = 0.0  # the first call's start, the last one's end

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(max_n_per_call=1, max_concurrency=self.slots, min_side=64)

    async def generate(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        self.in_flight += 1
        self.calls += 1
        self.peak = max(self.peak, self.in_flight)
        if self.in_flight > self.slots:
            self.over += 1
        start = time.monotonic()
        self.first = self.first or start
        try:
            await asyncio.sleep(self.latency)
            return GenerationResult(
                (GeneratedImage(make_png(f"{req.seed}", 64, 64), req.seed),), model="load-1"
            )
        finally:
            self.in_flight -= 1
            self.last = time.monotonic()
            self.busy += self.last - start

    async def check(self) -> dict[str, str]:
        return {"status": "ok"}

    async def aclose(self) -> None:
        return None


__all__ = ["LoadProvider"]
