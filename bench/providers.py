"""Our own time per provider call, around zero-latency fake services.

Each fake runs on its own event loop in a separate thread, so the client thread's CPU time
(``time.thread_time``) is *our* code only: request building, httpx, parsing, base64 decoding.
Wall time per call (loopback round trip included) is shown next to it.

    python bench/providers.py [--calls 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.providers.automatic1111 import Automatic1111Provider, Automatic1111Settings
from bot.providers.base import GenerationRequest, Provider
from bot.providers.cerebrium import CerebriumProvider, CerebriumSettings
from bot.providers.comfyui import ComfyUIProvider, ComfyUISettings
from bot.providers.openai import OpenAIProvider, OpenAISettings
from bot.providers.stability import StabilityProvider, StabilitySettings
from tests.fakes import FakeServer
from tests.fakes.automatic1111 import Automatic1111Fake
from tests.fakes.cerebrium import CerebriumFake
from tests.fakes.comfyui import TXT2IMG_WORKFLOW, ComfyUIFake
from tests.fakes.openai import OpenAIFake
from tests.fakes.stability import StabilityFake


class FakeThread:
    """Runs one fake server on its own loop in a daemon thread."""

    def __init__(self, fake: FakeServer) -> None:
        self.fake = fake
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.fake.__aenter__())
        self.ready.set()
        self.loop.run_forever()

    def __enter__(self) -> FakeServer:
        self.thread.start()
        self.ready.wait(10)
        return self.fake

    def __exit__(self, *exc: object) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.fake.__aexit__(None, None, None), self.loop)
        fut.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


async def measure(
    provider: Provider, req: GenerationRequest, calls: int
) -> tuple[list[float], list[float]]:
    for _ in range(5):  # warm the connection pool
        await provider.generate(req)
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(calls):
        w0, c0 = time.perf_counter(), time.thread_time()
        await provider.generate(req)
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    return wall, cpu


Case = tuple[str, Callable[[], FakeServer], Callable[[FakeServer], Provider], list[int], bool]


def cases(tmp: Path) -> list[Case]:
    wf = tmp / "wf.json"
    wf.write_text(json.dumps(TXT2IMG_WORKFLOW))

    def stab(model: str) -> Callable[[Any], Provider]:
        return lambda f: StabilityProvider(
            StabilitySettings.from_mapping(
                {"model": model}, {"STABILITY_API_KEY": "k", "STABILITY_API_BASE_URL": f.base_url}
            )
        )

    return [
        ("stability v2beta core", lambda: StabilityFake("k"), stab("core"), [1], False),
        (
            "stability v1 sdxl",
            lambda: StabilityFake("k"),
            stab("stable-diffusion-xl-1024-v1-0"),
            [1, 4],
            False,
        ),
        (
            "automatic1111",
            Automatic1111Fake,
            lambda f: Automatic1111Provider(
                Automatic1111Settings.from_mapping({}, {"AUTOMATIC1111_BASE_URL": f.base_url})
            ),
            [1, 4],
            False,
        ),
        (
            "cerebrium",
            lambda: CerebriumFake("k"),
            lambda f: CerebriumProvider(
                CerebriumSettings.from_mapping(
                    {"url": f.url},  # type: ignore[attr-defined]
                    {"CEREBRIUM_API_KEY": "k"},
                )
            ),
            [1, 4],
            False,
        ),
        (
            "openai gpt-image-1",
            lambda: OpenAIFake("k"),
            lambda f: OpenAIProvider(
                OpenAISettings.from_mapping(
                    {}, {"OPENAI_API_KEY": "k", "OPENAI_API_BASE_URL": f.base_url + "/v1"}
                )
            ),
            [1, 4],
            False,
        ),
        (
            "comfyui (1 poll)",
            lambda: ComfyUIFake(pending_polls=0),
            lambda f: ComfyUIProvider(
                ComfyUISettings.from_mapping(
                    {"workflow": str(wf), "poll_interval_s": 0.0}, {"COMFYUI_BASE_URL": f.base_url}
                )
            ),
            [1],
            False,
        ),
    ]


async def run_case(
    make: Callable[[FakeServer], Provider], fake: FakeServer, n: int, calls: int
) -> tuple[list[float], list[float]]:
    provider = make(fake)
    try:
        return await measure(
            provider, GenerationRequest(prompt="bench", n=n, seed=1, width=1024, height=1024), calls
        )
    finally:
        await provider.aclose()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args(argv)
    print(f"{args.calls} calls each, txt2img, fake with zero latency in another thread")
    print(
        f"{'provider':<24}{'n':>3} {'own CPU med':>12} {'own CPU p99':>12} "
        f"{'wall med':>10} {'wall p99':>10}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for label, new_fake, make, ns, _ in cases(Path(tmp)):
            for n in ns:
                with FakeThread(new_fake()) as fake:
                    wall, cpu = asyncio.run(run_case(make, fake, n, args.calls))
                    if fake.violations:
                        raise SystemExit(f"{label}: contract violations {fake.violations}")
                print(
                    f"{label:<24}{n:>3} {statistics.median(cpu) * 1e3:>10.2f}ms "
                    f"{pct(cpu, 0.99) * 1e3:>10.2f}ms {statistics.median(wall) * 1e3:>8.2f}ms "
                    f"{pct(wall, 0.99) * 1e3:>8.2f}ms"
                )


if __name__ == "__main__":
    main()
