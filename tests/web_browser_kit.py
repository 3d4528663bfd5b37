"""What the browser tests share: Debian's Chromium through Playwright on the real App.

The fixtures (``server``, ``browser``), opening a page as someone, typing a line, finding a
card's parts, the provider that fails and filters on cue, and where screenshots go
(``test-output/``). Importing it skips the importing module when Chromium is not installed.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from adapters.web.server import RunningServer, start
from bot.app import App
from bot.config import load_settings
from bot.providers.base import (
    Capabilities,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    InvalidRequest,
    ProgressCallback,
)

CHROMIUM = Path("/usr/bin/chromium")
OUT = Path(__file__).resolve().parent.parent / "test-output"
SCREENSHOT = OUT / "grid.png"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TIMEOUT_MS = 30_000
PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "has_touch": True,
    "is_mobile": True,
    "device_scale_factor": 2,
}
# Script errors and native dialogs seen per page (keyed by id(page)); filled by open_page.
PAGE_ERRORS: dict[int, list[str]] = {}

if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed at /usr/bin/chromium", allow_module_level=True)

from playwright.async_api import (  # noqa: E402
    Browser,
    Dialog,
    Locator,
    Page,
    async_playwright,
    expect,
)


def settings_for(tmp_path: Path, **overrides: Any) -> Any:
    base: dict[str, Any] = {
        "bot": {"data_dir": str(tmp_path / "data")},
        "grammar": {"base_side": 256},
        "providers": {"default": "offline", "offline": {"latency_ms": 300}},
    }
    for key, value in overrides.items():
        base[key] = {**base.get(key, {}), **value}
    return load_settings(env={}, overrides=base)


@asynccontextmanager
async def serving(settings: Any, **extra: Any) -> AsyncIterator[RunningServer]:
    async with App.open(settings, **extra) as app:
        running = await start(app, "127.0.0.1", 0)
        try:
            yield running
        finally:
            await running.close()


@pytest.fixture(name="server")
async def server_fixture(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with serving(settings_for(tmp_path)) as running:
        yield running


@pytest.fixture(name="browser")
async def browser_fixture() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


async def open_page(
    browser: Browser,
    server: RunningServer,
    name: str | None = None,
    *,
    path: str = "/",
    scheme: str = "light",
    **context: Any,
) -> Page:
    """A fresh browser context (its own storage); ``name`` typed in the name box, else the
    suggested guest name is kept."""
    options: dict[str, Any] = {"viewport": {"width": 1280, "height": 900}, **context}
    ctx = await browser.new_context(color_scheme=scheme, **options)  # type: ignore[arg-type]
    ctx.set_default_timeout(TIMEOUT_MS)
    page = await ctx.new_page()
    errors: list[str] = []
    PAGE_ERRORS[id(page)] = errors

    async def on_dialog(dialog: Dialog) -> None:
        # An alert() from injected markup would open a native dialog.
        errors.append(f"native dialog: {dialog.message}")
        await dialog.dismiss()

    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", on_dialog)
    await page.goto(f"{server.url}{path}")
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")
    if name is not None:
        await page.fill("#name", name)
        await page.press("#name", "Tab")  # "change" reconnects the socket under this name
        await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")
    return page


async def imagine(page: Page, line: str) -> None:
    await page.fill("#line", line)
    await page.press("#line", "Enter")


def card(page: Page, job_id: str) -> Locator:
    return page.locator(f'[data-testid="job-card"][data-job-id="{job_id}"]')


def own(card_: Locator, testid: str) -> Locator:
    """An element of this card itself, not of a child card nested in it."""
    return card_.locator(
        f':scope > .card-head [data-testid="{testid}"], :scope > [data-testid="{testid}"]'
    )


async def menu(card_: Locator, verb: str) -> None:
    """Open the card's menu and press ``verb`` (reroll, info, delete) or Lineage."""
    await card_.locator(':scope > .card-head [data-testid="card-menu-button"]').click()
    items = card_.locator(':scope > .card-head [data-testid="card-menu"]')
    if verb == "lineage":
        await items.get_by_test_id("menu-lineage").click()
    else:
        await items.locator(f'button[data-action^="{verb}:"]').click()


async def done_job(page: Page, line: str) -> tuple[Locator, str]:
    before = await page.get_by_test_id("job-card").count()
    await imagine(page, line)
    cards = page.locator('#feed > [data-testid="job-card"]')
    await expect(cards).to_have_count(before + 1)
    job = cards.last
    await expect(job).to_have_attribute("data-state", "done")
    job_id = await job.get_attribute("data-job-id")
    assert job_id
    return job, job_id


async def scroll_to_end(gallery: Locator) -> None:
    await gallery.get_by_test_id("gallery-grid").evaluate(
        "g => g.lastElementChild.scrollIntoView()"
    )


def no_errors(*pages: Page) -> None:
    for page in pages:
        assert PAGE_ERRORS[id(page)] == []


def png_bytes(size: tuple[int, int] = (200, 140), color: str = "teal") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


class Moody:
    """A provider that fails and filters on cue: "broken" is refused, "forbidden" comes back
    removed by its content filter. "a kite" is held until ``release`` is set, so that a second
    job surely waits in line (a fixed delay was outrun on a busy machine)."""

    name = "moody"
    label = "Moody"

    def __init__(self) -> None:
        self._png = png_bytes((64, 64), "purple")
        self.release = asyncio.Event()

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(max_n_per_call=4, max_concurrency=1, min_side=64)

    async def generate(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        if req.prompt.startswith("a kite"):
            await asyncio.wait_for(self.release.wait(), 60)
        if "forbidden" in req.prompt:
            return GenerationResult(
                tuple(GeneratedImage(self._png, req.seed + i, filtered=True) for i in range(req.n))
            )
        if "broken" in req.prompt:
            raise InvalidRequest("refused by the test")
        return GenerationResult(
            tuple(GeneratedImage(self._png, req.seed + i) for i in range(req.n))
        )

    async def check(self) -> dict[str, str]:
        return {}

    async def aclose(self) -> None:
        return None


__all__ = [
    "OUT",
    "PHONE",
    "SCREENSHOT",
    "Browser",
    "Locator",
    "Moody",
    "Page",
    "browser_fixture",
    "card",
    "done_job",
    "expect",
    "imagine",
    "menu",
    "no_errors",
    "open_page",
    "own",
    "png_bytes",
    "scroll_to_end",
    "server_fixture",
    "serving",
    "settings_for",
]
