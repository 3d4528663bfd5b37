"""The playground in Chromium, continued: images in, the gallery, lineage, personal links, the
hint, dark mode, a 390x844 touch phone, and the README's screenshot (see test_web_browser.py).
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from adapters.web import links
from adapters.web.server import RunningServer
from tests.web_browser_kit import (
    OUT,
    PHONE,
    Browser,
    Page,
    browser_fixture,  # noqa: F401 (a fixture: used by its name, browser)
    card,
    done_job,
    expect,
    imagine,
    menu,
    no_errors,
    open_page,
    own,
    png_bytes,
    scroll_to_end,
    server_fixture,  # noqa: F401 (a fixture: used by its name, server)
    serving,
    settings_for,
)

pytestmark = pytest.mark.browser


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
    await bob_root.locator(f'button[data-action="vary-strong:{root_id}:2"]').click()
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
    await expect(tree).to_contain_text("Strong variation of image 2 · @bob")
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
