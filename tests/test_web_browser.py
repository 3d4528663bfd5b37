"""The playground in Debian's Chromium, driven by Playwright, on the real App.

Two browser contexts are two people in #general: they see each other's jobs arrive and
refine each other's results, each on their own quota. The offline renderer runs with a small
latency so the queued and running states are visible on the page.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.web.server import RunningServer, start
from bot.app import App
from bot.config import load_settings

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parent.parent / "test-output" / "grid.png"
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
# Script errors and native dialogs seen per page (keyed by id(page)); filled by open_as.
PAGE_ERRORS: dict[int, list[str]] = {}

if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed at /usr/bin/chromium", allow_module_level=True)

from playwright.async_api import Browser, Dialog, Locator, Page, async_playwright, expect  # noqa: E402


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    settings = load_settings(
        env={},
        overrides={
            "bot": {"data_dir": str(tmp_path / "data")},
            "grammar": {"base_side": 256},
            "providers": {"default": "offline", "offline": {"latency_ms": 300}},
        },
    )
    async with App.open(settings) as app:
        running = await start(app, "127.0.0.1", 0)
        try:
            yield running
        finally:
            await running.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


async def open_as(browser: Browser, server: RunningServer, name: str) -> Page:
    """A fresh browser context (its own storage) with ``name`` typed in the name box."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    errors: list[str] = []
    PAGE_ERRORS[id(page)] = errors

    async def on_dialog(dialog: Dialog) -> None:
        # An alert() from injected markup would open a native dialog.
        errors.append(f"native dialog: {dialog.message}")
        await dialog.dismiss()

    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", on_dialog)
    await page.goto(f"{server.url}/")
    await page.fill("#name", name)
    await page.press("#name", "Tab")  # "change" reconnects the socket under this name
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")
    return page


async def imagine(page: Page, line: str) -> None:
    await page.fill("#line", line)
    await page.press("#line", "Enter")


def card(page: Page, job_id: str) -> Locator:
    return page.locator(f'[data-testid="job-card"][data-job-id="{job_id}"]')


async def test_fox_grid_refine_and_a_second_person(
    server: RunningServer, browser: Browser
) -> None:
    alice = await open_as(browser, server, "Alice")
    bob = await open_as(browser, server, "Bob")
    await expect(alice.get_by_test_id("quota")).to_contain_text("left")
    alice_quota_before = await alice.get_by_test_id("quota").text_content()

    # Alice asks for four foxes: the card shows its way through the queue to a grid of four.
    await imagine(alice, "/imagine a red fox in snow --n 4")
    fox = alice.get_by_test_id("job-card").first
    await expect(fox).to_have_attribute("data-state", re.compile("queued|running"))
    await expect(fox).to_have_attribute("data-state", "done")
    fox_id = await fox.get_attribute("data-job-id")
    assert fox_id
    await expect(fox.get_by_test_id("caption")).to_contain_text("a red fox in snow")
    await expect(fox.get_by_test_id("card-notice")).to_contain_text(re.compile("offline", re.I))
    grid = fox.get_by_test_id("grid-image")
    await expect(grid).to_have_count(1)
    assert await grid.evaluate("img => img.complete && img.naturalWidth > 0")
    # Four images: one Pick per image of the grid, numbered 1..4.
    picks = fox.locator(':scope > [data-testid="buttons"] button[data-action^="pick:"]')
    await expect(picks).to_have_count(4)
    for verb in ("refine", "vary", "reroll", "info", "delete"):
        assert await fox.locator(f'button[data-action^="{verb}:"]').count() >= 1, verb
    await expect(alice.get_by_test_id("quota")).not_to_have_text(alice_quota_before or "")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    await fox.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 1000

    # Bob's window saw the same job arrive, finished, with the same buttons.
    await expect(card(bob, fox_id)).to_have_attribute("data-state", "done")

    # Alice refines image 2 with a new prompt: the child lands under its parent.
    await fox.locator(f'button[data-action^="refine:{fox_id}:2"]').click()
    dialog = alice.get_by_test_id("dialog")
    await expect(dialog).to_be_visible()
    prompt_field = dialog.locator("textarea").first
    await expect(prompt_field).to_have_value(re.compile("fox"))
    await expect(dialog.locator('input[type="range"]')).to_have_count(1)
    await prompt_field.fill("a red fox in snow, oil painting")
    await dialog.locator('input[type="range"]').fill("0.5")
    await alice.get_by_test_id("dialog-submit").click()
    await expect(dialog).to_be_hidden()
    child = fox.locator(':scope > [data-testid="children"] > [data-testid="job-card"]')
    await expect(child).to_have_count(1)
    await expect(child).to_have_attribute("data-state", "done")
    await expect(child.get_by_test_id("caption")).to_contain_text("oil painting")
    child_id = await child.get_attribute("data-job-id")
    assert child_id and child_id != fox_id

    # Bob sees both, nested the same way, and refines Alice's refinement on his own quota.
    bob_fox = card(bob, fox_id)
    bob_child = bob_fox.locator(
        f':scope > [data-testid="children"] > [data-job-id="{child_id}"]'
    )
    await expect(bob_child).to_have_attribute("data-state", "done")
    alice_quota = await alice.get_by_test_id("quota").text_content()
    bob_quota = await bob.get_by_test_id("quota").text_content()
    await bob_child.locator(f'button[data-action^="refine:{child_id}:1"]').click()
    bob_dialog = bob.get_by_test_id("dialog")
    await expect(bob_dialog).to_be_visible()
    await bob_dialog.locator("textarea").first.fill("a red fox in snow, oil painting, at dusk")
    await bob.get_by_test_id("dialog-submit").click()

    grandchild = bob_child.locator(':scope > [data-testid="children"] > [data-testid="job-card"]')
    await expect(grandchild).to_have_attribute("data-state", "done")
    grandchild_id = await grandchild.get_attribute("data-job-id")
    await expect(grandchild.locator(".owner")).to_have_text("@bob")
    # ... and Alice watches it appear under her own job.
    alice_grandchild = child.locator(f'[data-job-id="{grandchild_id}"]')
    await expect(alice_grandchild).to_have_attribute("data-state", "done")
    await expect(alice_grandchild.get_by_test_id("caption")).to_contain_text("at dusk")

    # Bob paid for it, not Alice.
    await expect(bob.get_by_test_id("quota")).not_to_have_text(bob_quota or "")
    await alice.reload()
    await expect(alice.get_by_test_id("connection")).to_have_attribute("data-state", "live")
    await expect(alice.get_by_test_id("quota")).to_have_text(alice_quota or "")
    # After a reload the whole thread comes back from history, still nested.
    await expect(
        alice.locator(
            f'[data-job-id="{fox_id}"] [data-job-id="{child_id}"] [data-job-id="{grandchild_id}"]'
        )
    ).to_have_count(1)

    for page in (alice, bob):
        assert PAGE_ERRORS[id(page)] == []


async def test_pick_shows_a_downloadable_full_image(
    server: RunningServer, browser: Browser
) -> None:
    alice = await open_as(browser, server, "alice")
    await imagine(alice, "/imagine a lighthouse --n 2")
    job = alice.get_by_test_id("job-card").first
    await expect(job).to_have_attribute("data-state", "done")
    job_id = await job.get_attribute("data-job-id")
    await job.locator(f'button[data-action^="pick:{job_id}:1"]').click()
    full = alice.get_by_test_id("full-image").first
    await expect(full).to_be_visible()
    assert await full.evaluate("img => img.complete && img.naturalWidth > 0")
    link = alice.locator('figure.image a[data-testid="download"]').first
    async with alice.expect_download() as info:
        await link.click()
    download = await info.value
    saved = await download.path()
    assert saved is not None and saved.stat().st_size > 1000


async def test_prompt_with_html_is_shown_as_text(
    server: RunningServer, browser: Browser
) -> None:
    alice = await open_as(browser, server, "alice")
    hostile = "<img src=x onerror=alert(1)>"
    await imagine(alice, f"/imagine {hostile} --n 1")
    job = alice.get_by_test_id("job-card").first
    await expect(job).to_have_attribute("data-state", "done")
    await expect(job.get_by_test_id("caption")).to_contain_text(hostile)
    assert await alice.locator('img[src="x"]').count() == 0
    assert PAGE_ERRORS[id(alice)] == []  # no alert() dialog, no page error

    # A hostile name is text too.
    mallory = await open_as(browser, server, "<b>mallory</b>")
    await imagine(mallory, "/imagine a teapot --n 1")
    await expect(mallory.get_by_test_id("job-card")).to_have_count(2)
    assert await mallory.locator("#feed b").count() == 0


async def test_bad_flag_shows_the_grammar_message_inline(
    server: RunningServer, browser: Browser
) -> None:
    alice = await open_as(browser, server, "alice")
    await imagine(alice, "/imagine a cat --bogus 3")
    notice = alice.get_by_test_id("notice")
    await expect(notice).to_have_count(1)
    await expect(notice).to_contain_text("bogus")
    # Shown beside the input, which keeps the line for fixing; no job was created.
    await expect(alice.locator("#composer").get_by_test_id("notice")).to_have_count(1)
    await expect(alice.locator("#line")).to_have_value("/imagine a cat --bogus 3")
    assert await alice.get_by_test_id("job-card").count() == 0


async def test_channels_are_separate(server: RunningServer, browser: Browser) -> None:
    alice = await open_as(browser, server, "alice")
    channels = alice.get_by_test_id("channels").locator("a")
    await expect(channels.first).to_have_text("#general")
    await imagine(alice, "/imagine a harbour --n 1")
    await expect(alice.get_by_test_id("job-card")).to_have_count(1)
    await alice.click('a[data-channel="sandbox"]')
    await expect(alice.get_by_test_id("connection")).to_have_attribute("data-state", "live")
    await expect(alice.get_by_test_id("job-card")).to_have_count(0)
    await imagine(alice, "/imagine a sandcastle --n 1")
    await expect(alice.get_by_test_id("job-card")).to_have_count(1)
    await expect(alice.get_by_test_id("caption")).to_contain_text("sandcastle")
    await alice.click('a[data-channel="general"]')
    await expect(alice.get_by_test_id("job-card")).to_have_count(1)
    await expect(alice.get_by_test_id("caption")).to_contain_text("harbour")


async def test_info_is_private_and_delete_clears_the_card(
    server: RunningServer, browser: Browser
) -> None:
    alice = await open_as(browser, server, "alice")
    bob = await open_as(browser, server, "bob")
    await imagine(alice, "/imagine a windmill --n 1")
    job = alice.get_by_test_id("job-card").first
    await expect(job).to_have_attribute("data-state", "done")
    job_id = await job.get_attribute("data-job-id")
    assert job_id
    await expect(card(bob, job_id)).to_have_attribute("data-state", "done")

    await job.locator(f'button[data-action="info:{job_id}"]').click()
    await expect(alice.get_by_test_id("notice")).to_contain_text(f"Job {job_id}")
    assert await bob.get_by_test_id("notice").count() == 0

    await job.locator(f'button[data-action="delete:{job_id}"]').click()
    for page in (alice, bob):
        gone = card(page, job_id)
        await expect(gone).to_have_attribute("data-state", "deleted")
        await expect(gone.get_by_test_id("grid-image")).to_have_count(0)
        await expect(gone.locator("button")).to_have_count(0)
    await bob.reload()
    await expect(bob.get_by_test_id("connection")).to_have_attribute("data-state", "live")
    await expect(bob.get_by_test_id("job-card")).to_have_count(0)


async def test_the_hint_lists_every_flag_with_its_help(
    server: RunningServer, browser: Browser
) -> None:
    alice = await open_as(browser, server, "alice")
    config = await (await alice.request.get(f"{server.url}/api/config")).json()
    hint = alice.get_by_test_id("hint")
    flags = hint.locator("code.flag")
    await expect(flags).to_have_count(len(config["flags"]))
    for i, flag in enumerate(config["flags"]):
        await expect(flags.nth(i)).to_have_text(f"{flag['name']} {flag['value']}".strip())
        await expect(flags.nth(i)).to_have_attribute("title", flag["help"])
    await expect(hint).to_contain_text("/imagine help")
    assert not PAGE_ERRORS[id(alice)]
