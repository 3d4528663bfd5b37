"""The playground in Debian's Chromium, driven by Playwright, on the real App.

Two browser contexts are two people in #general: they see each other's jobs arrive and
continue each other's results, each on their own quota. The offline renderer runs with a small
latency so the queued and running states are visible on the page. Screenshots go to
``test-output/`` (a person looks at them); one phone test runs at 390x844 with touch.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from adapters.web import links
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

pytestmark = pytest.mark.browser

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


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with serving(settings_for(tmp_path)) as running:
        yield running


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


# -- the first visit ---------------------------------------------------------------------------


async def test_the_first_command_just_works_and_two_people_iterate_together(
    server: RunningServer, browser: Browser
) -> None:
    # Alice types nothing but her command: the page suggested a guest name.
    alice = await open_page(browser, server)
    suggested = await alice.input_value("#name")
    assert re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+ \d\d", suggested), suggested
    bob = await open_page(browser, server, "Bob")
    await expect(alice.get_by_test_id("quota")).to_contain_text("left")
    quota_before = await alice.get_by_test_id("quota").text_content()

    await imagine(alice, "/imagine a red fox in snow --n 4")
    fox = alice.get_by_test_id("job-card").first
    await expect(fox).to_have_attribute("data-state", re.compile("queued|running"))
    await expect(own(fox, "state")).to_have_text(re.compile("Queued|Rendering"))
    await expect(fox).to_have_attribute("data-state", "done")
    await expect(own(fox, "state")).to_have_text("Done")
    fox_id = await fox.get_attribute("data-job-id")
    assert fox_id
    await expect(own(fox, "caption")).to_contain_text("a red fox in snow")
    await expect(own(fox, "card-notice")).to_contain_text(re.compile("offline", re.I))
    # Four images, each with its own actions; alt text is the prompt, not a file name.
    tiles = own(fox, "images").get_by_test_id("tile")
    await expect(tiles).to_have_count(4)
    for i in range(4):
        tile = tiles.nth(i)
        img = tile.get_by_test_id("tile-image")
        assert await img.evaluate("img => img.complete && img.naturalWidth > 0")
        await expect(img).to_have_attribute("alt", f"Image {i + 1} of 4: a red fox in snow")
        labels = await tile.get_by_test_id("tile-actions").locator("button").all_text_contents()
        assert labels == ["Pick", "Refine", "Vary"]
    # No row of fifteen buttons: the card's own actions are in its menu.
    await expect(own(fox, "buttons").locator("button")).to_have_count(0)
    await fox.locator(':scope > .card-head [data-testid="card-menu-button"]').click()
    menu_items = fox.locator(':scope > .card-head [data-testid="card-menu"] button')
    await expect(menu_items).to_have_text(["Reroll", "Info", "Delete", "Lineage"])
    await alice.keyboard.press("Escape")
    await alice.mouse.click(5, 880)
    # The badge followed the job without a reload.
    await expect(alice.get_by_test_id("quota")).not_to_have_text(quota_before or "")
    await tiles.nth(1).hover()
    OUT.mkdir(parents=True, exist_ok=True)
    await fox.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 1000

    # Bob's window saw the same job arrive, finished, with the same actions.
    await expect(card(bob, fox_id)).to_have_attribute("data-state", "done")
    await expect(own(card(bob, fox_id), "images").get_by_test_id("tile")).to_have_count(4)

    # Alice refines image 2 from the image itself: the child lands under its parent.
    await tiles.nth(1).hover()
    await tiles.nth(1).locator(f'button[data-action="refine:{fox_id}:2"]').click()
    dialog = alice.get_by_test_id("dialog")
    await expect(dialog).to_be_visible()
    prompt_field = dialog.locator("textarea").first
    await expect(prompt_field).to_have_value(re.compile("fox"))
    await prompt_field.fill("a red fox in snow, oil painting")
    await dialog.locator('input[type="range"]').fill("0.5")
    await alice.get_by_test_id("dialog-submit").click()
    await expect(dialog).to_be_hidden()
    child = fox.locator(':scope > [data-testid="children"] > [data-testid="job-card"]')
    await expect(child).to_have_attribute("data-state", "done")
    await expect(own(child, "caption")).to_contain_text("oil painting")
    await expect(child.locator(":scope > .card-head .kind")).to_have_text("Refinement of image 2")
    child_id = await child.get_attribute("data-job-id")
    assert child_id and child_id != fox_id

    # Bob continues Alice's refinement on his own quota; Alice watches it appear.
    bob_child = card(bob, fox_id).locator(
        f':scope > [data-testid="children"] > [data-job-id="{child_id}"]'
    )
    await expect(bob_child).to_have_attribute("data-state", "done")
    alice_quota = await alice.get_by_test_id("quota").text_content()
    bob_quota = await bob.get_by_test_id("quota").text_content()
    await bob_child.get_by_test_id("tile").first.hover()
    await bob_child.locator(f'button[data-action="vary:{child_id}:1"]').click()
    grandchild = bob_child.locator(':scope > [data-testid="children"] > [data-testid="job-card"]')
    await expect(grandchild).to_have_attribute("data-state", "done")
    await expect(grandchild.locator(":scope > .card-head .owner")).to_have_text("@bob")
    grandchild_id = await grandchild.get_attribute("data-job-id")
    await expect(child.locator(f'[data-job-id="{grandchild_id}"]')).to_have_attribute(
        "data-state", "done"
    )
    await expect(bob.get_by_test_id("quota")).not_to_have_text(bob_quota or "")
    await expect(alice.get_by_test_id("quota")).to_have_text(alice_quota or "")

    # After a reload the whole thread comes back from history, still nested, same name.
    await alice.reload()
    await expect(alice.get_by_test_id("connection")).to_have_attribute("data-state", "live")
    assert await alice.input_value("#name") == suggested
    await expect(
        alice.locator(
            f'[data-job-id="{fox_id}"] [data-job-id="{child_id}"] [data-job-id="{grandchild_id}"]'
        )
    ).to_have_count(1)
    await alice.screenshot(path=str(OUT / "desktop-thread.png"))
    no_errors(alice, bob)


async def test_a_pick_persists_and_the_lightbox_steps_through_the_images(
    server: RunningServer, browser: Browser
) -> None:
    alice = await open_page(browser, server, "alice")
    bob = await open_page(browser, server, "bob")
    job, job_id = await done_job(alice, "/imagine a lighthouse --n 3")
    tiles = own(job, "images").get_by_test_id("tile")

    # The lightbox: the image large, arrow keys, its caption, its actions, a download.
    await tiles.nth(0).get_by_test_id("tile-open").click()
    box = alice.get_by_test_id("lightbox")
    await expect(box).to_be_visible()
    image = alice.get_by_test_id("lightbox-image")
    await expect(image).to_have_attribute("alt", "Image 1 of 3: a lighthouse")
    await expect(alice.get_by_test_id("lightbox-caption")).to_contain_text("1 / 3")
    await alice.keyboard.press("ArrowRight")
    await expect(alice.get_by_test_id("lightbox-caption")).to_contain_text("2 / 3")
    await alice.keyboard.press("ArrowRight")
    await alice.keyboard.press("ArrowRight")
    await expect(alice.get_by_test_id("lightbox-caption")).to_contain_text("1 / 3")
    await alice.keyboard.press("ArrowLeft")
    await expect(alice.get_by_test_id("lightbox-caption")).to_contain_text("3 / 3")
    assert await image.evaluate("img => img.complete && img.naturalWidth > 0")
    actions = alice.get_by_test_id("lightbox-actions")
    await expect(actions.locator("button[data-action]")).to_have_text(["Pick", "Refine", "Vary"])
    await alice.screenshot(path=str(OUT / "lightbox.png"))
    async with alice.expect_download() as info:
        await alice.get_by_test_id("lightbox-download").click()
    saved = await (await info.value).path()
    assert saved is not None and saved.stat().st_size > 1000
    # Pick from the lightbox: the full image lands under the job, for everyone.
    await actions.locator(f'button[data-action="pick:{job_id}:3"]').click()
    await expect(box).to_be_hidden()
    picked = job.locator(':scope > .attachments > [data-testid="attachment"]')
    await expect(picked).to_have_count(1)
    await expect(picked.get_by_test_id("full-image")).to_be_visible()
    await expect(picked.get_by_test_id("full-image")).to_have_attribute(
        "alt", "Image 3 of 3: a lighthouse"
    )
    await expect(card(bob, job_id).locator('[data-testid="attachment"]')).to_have_count(1)

    # A pick is part of the channel's history: it is still there after a reload.
    for page in (alice, bob):
        await page.reload()
        await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")
        again = card(page, job_id).locator(':scope > .attachments > [data-testid="attachment"]')
        await expect(again).to_have_count(1)
        await expect(again).to_contain_text("Picked by alice")
        await expect(again.locator('button[data-action^="refine:"]')).to_have_count(1)
    no_errors(alice, bob)


async def test_prompt_and_name_with_html_are_shown_as_text(
    server: RunningServer, browser: Browser
) -> None:
    alice = await open_page(browser, server, "alice")
    hostile = "<img src=x onerror=alert(1)>"
    job, _ = await done_job(alice, f"/imagine {hostile} --n 1")
    await expect(own(job, "caption")).to_contain_text(hostile)
    assert await alice.locator('img[src="x"]').count() == 0
    await expect(own(job, "images").get_by_test_id("tile-image")).to_have_attribute("alt", hostile)
    mallory = await open_page(browser, server, "<b>mallory</b>")
    await imagine(mallory, "/imagine a teapot --n 1")
    await expect(mallory.get_by_test_id("job-card")).to_have_count(2)
    assert await mallory.locator("#feed b").count() == 0
    no_errors(alice, mallory)


async def test_a_bad_flag_is_shown_inline_and_the_notice_goes_away(
    server: RunningServer, browser: Browser
) -> None:
    alice = await open_page(browser, server, "alice")
    await imagine(alice, "/imagine a cat --bogus 3")
    notice = alice.locator("#composer").get_by_test_id("notice")
    await expect(notice).to_have_count(1)
    await expect(notice).to_contain_text("bogus")
    # The line is kept for fixing; no job was made.
    await expect(alice.locator("#line")).to_have_value("/imagine a cat --bogus 3")
    assert await alice.get_by_test_id("job-card").count() == 0
    # ... and the notice leaves by itself.
    await expect(notice).to_have_count(0, timeout=25_000)
    # ArrowUp brings back the last commands, newest first; ArrowDown goes back.
    await alice.fill("#line", "")
    await imagine(alice, "/quota")
    await alice.fill("#line", "")
    await alice.press("#line", "ArrowUp")
    await expect(alice.locator("#line")).to_have_value("/quota")
    await alice.press("#line", "ArrowUp")
    await expect(alice.locator("#line")).to_have_value("/imagine a cat --bogus 3")
    await alice.press("#line", "ArrowDown")
    await expect(alice.locator("#line")).to_have_value("/quota")
    await alice.reload()  # recalled across reloads too
    await expect(alice.get_by_test_id("connection")).to_have_attribute("data-state", "live")
    await alice.press("#line", "ArrowUp")
    await expect(alice.locator("#line")).to_have_value("/quota")
    no_errors(alice)


async def test_channels_are_separate(server: RunningServer, browser: Browser) -> None:
    alice = await open_page(browser, server, "alice")
    channels = alice.get_by_test_id("channels").locator("a")
    await expect(channels.first).to_have_text("#general")
    await done_job(alice, "/imagine a harbour --n 1")
    await alice.click('a[data-channel="sandbox"]')
    await expect(alice.locator("#channel-title")).to_have_text("#sandbox")
    await expect(alice.get_by_test_id("connection")).to_have_attribute("data-state", "live")
    await expect(alice.get_by_test_id("job-card")).to_have_count(0)
    await done_job(alice, "/imagine a sandcastle --n 1")
    await expect(alice.get_by_test_id("caption")).to_contain_text("sandcastle")
    await alice.click('a[data-channel="general"]')
    await expect(alice.get_by_test_id("job-card")).to_have_count(1)
    await expect(alice.get_by_test_id("caption")).to_contain_text("harbour")
    no_errors(alice)


async def test_info_is_private_and_delete_has_an_undo_window(
    server: RunningServer, browser: Browser
) -> None:
    alice = await open_page(browser, server, "alice")
    bob = await open_page(browser, server, "bob")
    job, job_id = await done_job(alice, "/imagine a windmill --n 2")
    await expect(card(bob, job_id)).to_have_attribute("data-state", "done")

    await menu(job, "info")
    await expect(alice.get_by_test_id("notice")).to_contain_text(f"Job {job_id}")
    assert await bob.get_by_test_id("notice").count() == 0

    # Delete, then Undo: nothing happened, for anyone.
    await menu(job, "delete")
    await expect(job).to_be_hidden()
    undo = alice.get_by_test_id("undo-notice")
    await expect(undo).to_contain_text("Deleted.")
    await alice.screenshot(path=str(OUT / "delete-undo.png"))
    await undo.get_by_test_id("undo").click()
    await expect(job).to_be_visible()
    await expect(undo).to_have_count(0)
    await alice.wait_for_timeout(6500)
    await expect(card(bob, job_id)).to_be_visible()

    # Delete for good: the card leaves every open page, and history.
    await menu(job, "delete")
    await expect(card(bob, job_id)).to_have_count(0, timeout=15_000)
    await expect(card(alice, job_id)).to_have_count(0)
    await bob.reload()
    await expect(bob.get_by_test_id("connection")).to_have_attribute("data-state", "live")
    await expect(bob.get_by_test_id("job-card")).to_have_count(0)
    no_errors(alice, bob)


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


async def test_states_say_what_happened(tmp_path: Path, browser: Browser) -> None:
    settings = settings_for(
        tmp_path, providers={"default": "moody"}, jobs={"max_running_per_user": 1}
    )
    moody = Moody()
    async with serving(settings, extra_providers={"moody": moody}) as server:
        alice = await open_page(browser, server, "alice")
        for line in (
            "/imagine a kite --n 1",
            "/imagine a second kite --n 1",
            "/imagine something forbidden --n 1",
            "/imagine something broken --n 1",
        ):
            await imagine(alice, line)
            await expect(alice.locator("#line")).to_have_value("")
        cards = alice.locator('#feed > [data-testid="job-card"]')
        await expect(cards).to_have_count(4)
        second = cards.nth(1)
        await expect(second).to_have_attribute("data-state", "queued")
        await expect(own(second, "status")).to_contain_text("in line")
        await own(second, "buttons").locator('button[data-action^="cancel:"]').click()
        await expect(second).to_have_attribute("data-outcome", "cancelled")
        moody.release.set()
        expected = {
            0: ("done", "Done"),
            1: ("cancelled", "Cancelled"),
            2: ("filtered", "Filtered"),
            3: ("failed", "Failed"),
        }
        for i, (outcome, label) in expected.items():
            await expect(cards.nth(i)).to_have_attribute("data-outcome", outcome, timeout=20_000)
            await expect(own(cards.nth(i), "state")).to_have_text(label)
        # A cancelled job is not a red failure.
        colors = [
            await own(cards.nth(i), "state").evaluate("e => getComputedStyle(e).color")
            for i in (1, 3)
        ]
        assert colors[0] != colors[1]
        await expect(own(cards.nth(1), "caption")).to_contain_text("Cancelled by alice")
        await expect(own(cards.nth(2), "caption")).to_contain_text("filter")
        await alice.screenshot(path=str(OUT / "states.png"))
        # Reloaded, the states are the same.
        await alice.reload()
        for i, (outcome, _) in expected.items():
            await expect(cards.nth(i)).to_have_attribute("data-outcome", outcome)
        no_errors(alice)


async def test_an_image_goes_in_by_picker_drop_or_paste(
    server: RunningServer, browser: Browser
) -> None:
    alice = await open_page(browser, server, "alice")
    data = png_bytes()
    # 1. The picker.
    await alice.get_by_test_id("file").set_input_files(
        {"name": "sketch.png", "mimeType": "image/png", "buffer": data}
    )
    chip = alice.get_by_test_id("attachment-chip")
    await expect(chip).to_be_visible()
    await expect(chip).to_contain_text("sketch.png")
    await alice.screenshot(path=str(OUT / "upload-chip.png"))
    job, _ = await done_job(alice, "/imagine as a watercolor --n 1")
    await expect(chip).to_be_hidden()
    await menu(job, "info")
    await expect(alice.get_by_test_id("notice").first).to_contain_text("Strength")

    encoded = base64.b64encode(data).decode()
    make_file = (
        "(b64) => { const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));"
        " const dt = new DataTransfer();"
        " dt.items.add(new File([bytes], 'dropped.png', {type: 'image/png'}));"
        " return dt; }"
    )
    # 2. Drag and drop anywhere on the page.
    await alice.evaluate(
        f"(b64) => {{ const dt = ({make_file})(b64);"
        " for (const type of ['dragenter', 'dragover', 'drop'])"
        "   window.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true,"
        "     cancelable: true})); }",
        encoded,
    )
    await expect(chip).to_contain_text("dropped.png")
    await expect(alice.get_by_test_id("drop-zone")).to_be_hidden()
    await done_job(alice, "/imagine as charcoal --n 1")
    # 3. Paste into the line.
    await alice.evaluate(
        f"(b64) => {{ const dt = ({make_file})(b64);"
        " document.getElementById('line').dispatchEvent(new ClipboardEvent('paste',"
        "   {clipboardData: dt, bubbles: true, cancelable: true})); }",
        encoded,
    )
    await expect(chip).to_be_visible()
    await alice.get_by_test_id("chip-remove").click()
    await expect(chip).to_be_hidden()
    # Something that is not an image is refused on the page, before any upload.
    await alice.get_by_test_id("file").set_input_files(
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}
    )
    await expect(alice.get_by_test_id("notice").first).to_contain_text("not a PNG")
    await expect(chip).to_be_hidden()
    assert await alice.locator('#feed > [data-testid="job-card"]').count() == 2
    no_errors(alice)


async def test_the_gallery_mine_the_channels_search_and_infinite_scroll(
    server: RunningServer, browser: Browser
) -> None:
    # A window small enough that one page of the gallery fills it.
    alice = await open_page(browser, server, "alice", viewport={"width": 800, "height": 600})
    bob = await open_page(browser, server, "bob")
    for line in (
        "/imagine a red barn --n 10",
        "/imagine a blue boat --n 10",
        "/imagine a red kite --n 10",
    ):
        await done_job(alice, line)
    await done_job(bob, "/imagine a green owl --n 2")
    await alice.get_by_test_id("gallery-open").click()
    gallery = alice.get_by_test_id("gallery")
    await expect(gallery).to_be_visible()
    items = gallery.get_by_test_id("gallery-item")
    await expect(items).to_have_count(24)  # the first page
    await scroll_to_end(gallery)
    await expect(items).to_have_count(32)  # scrolled: the rest, 30 of alice's and 2 of bob's
    await expect(gallery.get_by_test_id("gallery-status")).to_contain_text("32 images")
    await alice.screenshot(path=str(OUT / "gallery.png"))
    await gallery.get_by_test_id("gallery-mine").click()
    await expect(items).to_have_count(24)
    await scroll_to_end(gallery)
    await expect(items).to_have_count(30)
    await gallery.get_by_test_id("gallery-search").fill("RED")
    await expect(items).to_have_count(20)
    for title in await items.evaluate_all("els => els.map(e => e.title)"):
        assert "red" in title
    await gallery.get_by_test_id("gallery-search").fill("no such thing")
    await expect(items).to_have_count(0)
    await expect(gallery.get_by_test_id("gallery-status")).to_contain_text("No image")
    # An image opens in the lightbox, which steps through the gallery.
    await gallery.get_by_test_id("gallery-search").fill("kite")
    await expect(items).to_have_count(10)
    await items.first.click()
    await expect(alice.get_by_test_id("lightbox-caption")).to_contain_text("1 / 10")
    await alice.keyboard.press("ArrowRight")
    await expect(alice.get_by_test_id("lightbox-caption")).to_contain_text("2 / 10")
    no_errors(alice, bob)


async def test_lineage_shows_the_family_and_who_made_each(
    server: RunningServer, browser: Browser
) -> None:
    alice = await open_page(browser, server, "alice")
    bob = await open_page(browser, server, "bob")
    root, root_id = await done_job(alice, "/imagine a castle --n 2")
    bob_root = card(bob, root_id)
    await expect(bob_root).to_have_attribute("data-state", "done")
    await own(bob_root, "images").get_by_test_id("tile").nth(1).hover()
    await bob_root.locator(f'button[data-action="vary:{root_id}:2"]').click()
    first_child = root.locator(':scope > [data-testid="children"] > [data-testid="job-card"]')
    await expect(first_child).to_have_attribute("data-state", "done")
    child = card(alice, await first_child.get_attribute("data-job-id") or "")
    await menu(root, "reroll")
    await expect(
        root.locator(':scope > [data-testid="children"] > [data-testid="job-card"]')
    ).to_have_count(2)
    await expect(
        root.locator(':scope > [data-testid="children"] > [data-testid="job-card"]').nth(1)
    ).to_have_attribute("data-state", "done")

    await menu(child, "lineage")
    tree = alice.get_by_test_id("lineage")
    await expect(tree).to_be_visible()
    nodes = tree.get_by_test_id("lineage-node")
    await expect(nodes).to_have_count(3)
    await expect(nodes.nth(0)).to_contain_text("Imagined · @alice")
    await expect(tree.locator("li > ul > li").get_by_test_id("lineage-node")).to_have_count(2)
    await expect(tree).to_contain_text("Variation of image 2 · @bob")
    await expect(tree).to_contain_text("Reroll · @alice")
    await expect(tree.locator(".ln-node.focus")).to_contain_text("@bob")
    await alice.screenshot(path=str(OUT / "lineage.png"))
    # A node takes you to its card.
    await nodes.nth(0).click()
    await expect(tree).to_be_hidden()
    await expect(root).to_have_class(re.compile("flash"))
    no_errors(alice, bob)


async def test_a_personal_link_binds_the_browser_and_reserves_the_name(
    tmp_path: Path, browser: Browser
) -> None:
    settings = settings_for(tmp_path)
    token, _ = links.issue(settings.data_dir, "Alice", admin=True)
    async with serving(settings) as server:
        alice = await open_page(browser, server, path=f"/link?t={token}")
        assert alice.url == f"{server.url}/"  # the token left the address bar
        linked = alice.get_by_test_id("linked")
        await expect(linked).to_have_text(re.compile(r"^@alice"))
        await expect(linked).to_contain_text("admin")
        await expect(alice.locator("#name")).to_be_hidden()
        job, _ = await done_job(alice, "/imagine a crown --n 1")
        await expect(job.locator(":scope > .card-head .owner")).to_have_text("@alice")
        # Another browser cannot be alice, however it spells it.
        guest = await open_page(browser, server, "ALICE!")
        await imagine(guest, "/imagine a fake crown --n 1")
        await expect(guest.get_by_test_id("notice")).to_contain_text("personal link")
        await expect(guest.locator('#feed > [data-testid="job-card"]')).to_have_count(1)
        # A changed link is refused with a page that says so.
        refused = await open_page_raw(browser, f"{server.url}/link?t={token[:-4]}AAAA")
        await expect(refused.get_by_test_id("refusal")).to_contain_text("changed")
        await refused.screenshot(path=str(OUT / "link-refused.png"))
        no_errors(alice, guest)


async def open_page_raw(browser: Browser, url: str) -> Page:
    ctx = await browser.new_context(viewport={"width": 800, "height": 600})
    page = await ctx.new_page()
    await page.goto(url)
    return page


async def test_the_hint_lists_every_flag_with_its_help(
    server: RunningServer, browser: Browser
) -> None:
    alice = await open_page(browser, server, "alice")
    config = await (await alice.request.get(f"{server.url}/api/config")).json()
    hint = alice.get_by_test_id("hint")
    flags = hint.locator("code.flag")
    await expect(flags).to_have_count(len(config["flags"]))
    for i, flag in enumerate(config["flags"]):
        await expect(flags.nth(i)).to_have_text(f"{flag['name']} {flag['value']}".strip())
        await expect(flags.nth(i)).to_have_attribute("title", flag["help"])
    await expect(hint).to_contain_text("/imagine help")
    no_errors(alice)


async def test_dark_mode_follows_the_system(server: RunningServer, browser: Browser) -> None:
    light = await open_page(browser, server, "alice")
    dark = await open_page(browser, server, "bob", scheme="dark")
    await done_job(dark, "/imagine a night market --n 4")

    def luminance(rgb: str) -> float:
        r, g, b = (int(x) for x in re.findall(r"\d+", rgb)[:3])
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    backgrounds = [
        await p.evaluate("getComputedStyle(document.documentElement).backgroundColor")
        for p in (light, dark)
    ]
    assert luminance(backgrounds[0]) > 200 > 60 > luminance(backgrounds[1])
    ink = await dark.evaluate("getComputedStyle(document.body).color")
    assert luminance(ink) > 180
    await dark.screenshot(path=str(OUT / "dark.png"))
    no_errors(light, dark)


# -- a phone -------------------------------------------------------------------------------------


async def fits(page: Page, selector: str) -> None:
    """Every element matching ``selector`` is inside the 390 px viewport and not clipped."""
    boxes = await page.locator(selector).evaluate_all(
        "els => els.map(e => { const r = e.getBoundingClientRect();"
        " return [r.left, r.right, e.scrollWidth, e.clientWidth, e.offsetParent !== null]; })"
    )
    assert boxes, selector
    for left, right, scroll_w, client_w, shown in boxes:
        if not shown:
            continue
        assert left >= -0.5 and right <= 390.5, (selector, left, right)
        assert scroll_w <= client_w + 1, (selector, scroll_w, client_w)


async def test_on_a_phone_nothing_is_clipped_and_everything_is_a_tap_away(
    server: RunningServer, browser: Browser
) -> None:
    phone = await open_page(browser, server, **PHONE)
    await done_job(phone, "/imagine a red fox in snow --n 4")
    await done_job(phone, "/imagine a lighthouse at dusk, long exposure --n 10")
    await expect(phone.get_by_test_id("quota")).to_contain_text("left")
    assert await phone.evaluate("document.documentElement.scrollWidth") <= 390
    assert await phone.evaluate(
        "document.getElementById('feed').scrollWidth <= document.getElementById('feed').clientWidth"
    )
    for selector in (
        "#send",
        "#line",
        "#attach",
        '[data-testid="quota"]',
        '[data-testid="connection"]',
        '[data-testid="nav-toggle"]',
        '[data-testid="state"]',
        '[data-testid="tile-image"]',
        '[data-testid="tile-actions"]',
        '[data-testid="gallery-open"]',
    ):
        await fits(phone, selector)
    # The composer is full width; Send is on screen.
    line = await phone.locator("#composer").bounding_box()
    assert line is not None and line["width"] >= 389
    # On touch, the image actions are shown without hovering.
    actions = phone.get_by_test_id("tile-actions").first
    assert await actions.evaluate("e => getComputedStyle(e).opacity") == "1"
    await phone.screenshot(path=str(OUT / "phone.png"))

    # The channel list is a drawer.
    channels = phone.get_by_test_id("channels")
    assert not await channels.locator('a[data-channel="sandbox"]').is_visible() or (
        (await channels.bounding_box() or {"x": 0, "width": 0})["x"]
        + (await channels.bounding_box() or {"x": 0, "width": 0})["width"]
        <= 0
    )
    await phone.get_by_test_id("nav-toggle").tap()
    await expect(phone.get_by_test_id("nav-toggle")).to_have_attribute("aria-expanded", "true")
    await phone.wait_for_timeout(300)
    box = await channels.bounding_box()
    assert box is not None and box["x"] >= 0
    await phone.screenshot(path=str(OUT / "phone-channels.png"))
    await channels.locator('a[data-channel="sandbox"]').tap()
    await expect(phone.locator("#channel-title")).to_have_text("#sandbox")
    await expect(phone.get_by_test_id("nav-toggle")).to_have_attribute("aria-expanded", "false")
    await phone.locator('a[data-channel="general"]').evaluate("a => a.click()")
    await expect(phone.get_by_test_id("job-card")).to_have_count(2)

    # A tap opens the lightbox, which fits the screen; its actions are there.
    await phone.get_by_test_id("tile-open").first.tap()
    lightbox = phone.get_by_test_id("lightbox")
    await expect(lightbox).to_be_visible()
    image = await phone.get_by_test_id("lightbox-image").bounding_box()
    assert image is not None and image["x"] >= 0 and image["x"] + image["width"] <= 390.5
    await fits(phone, '[data-testid="lightbox-actions"] .btn')
    await phone.screenshot(path=str(OUT / "phone-lightbox.png"))
    await phone.get_by_test_id("lightbox-close").tap()

    # The gallery on a phone.
    await phone.get_by_test_id("gallery-open").tap()
    await expect(phone.get_by_test_id("gallery-item")).to_have_count(14)
    await fits(phone, '[data-testid="gallery-item"]')
    await phone.screenshot(path=str(OUT / "phone-gallery.png"))
    no_errors(phone)


async def test_the_readme_screenshot(tmp_path: Path, browser: Browser) -> None:
    """The picture in the README: two people on one thread, actions on a hovered image."""
    settings = settings_for(tmp_path, providers={"offline": {"latency_ms": 50}})
    token, _ = links.issue(settings.data_dir, "Alice")
    async with serving(settings) as server:
        bob = await open_page(browser, server, "Bob")
        alice = await open_page(
            browser, server, path=f"/link?t={token}", viewport={"width": 1200, "height": 860}
        )
        root, root_id = await done_job(alice, "/imagine a lighthouse at dusk, oil painting --n 4")
        bob_root = card(bob, root_id)
        await expect(bob_root).to_have_attribute("data-state", "done")
        await own(bob_root, "images").get_by_test_id("tile").nth(1).hover()
        await bob_root.locator(f'button[data-action="refine:{root_id}:2"]').click()
        await (
            bob.get_by_test_id("dialog")
            .locator("textarea")
            .first.fill("a lighthouse at dusk, oil painting, stormy sea")
        )
        await bob.get_by_test_id("dialog-submit").click()
        child = root.locator(':scope > [data-testid="children"] > [data-testid="job-card"]')
        await expect(child).to_have_attribute("data-state", "done")
        await alice.fill("#line", "/imagine a red fox in snow --n 4 --style anime")
        await root.evaluate("c => c.scrollIntoView({block: 'start'})")
        await own(root, "images").get_by_test_id("tile").nth(2).hover()
        await alice.wait_for_timeout(400)  # the actions fade in
        await alice.screenshot(path=str(OUT / "readme.png"))
        no_errors(alice, bob)
