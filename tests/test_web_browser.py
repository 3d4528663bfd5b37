"""The playground in Debian's Chromium, driven by Playwright, on the real App: the feed.

Two browser contexts are two people in #general: they see each other's jobs arrive and
continue each other's results, each on their own quota. The offline renderer runs with a small
latency so the queued and running states are visible on the page. Screenshots go to
``test-output/`` (a person looks at them). The helpers are in ``tests/web_browser_kit.py``; images
in, the gallery, lineage, links, dark mode, the phone and the README picture are in
``tests/test_web_browser_views.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from adapters.web.server import RunningServer
from tests.web_browser_kit import (
    OUT,
    SCREENSHOT,
    Browser,
    Moody,
    browser_fixture,  # noqa: F401 (a fixture: used by its name, browser)
    card,
    done_job,
    expect,
    imagine,
    menu,
    no_errors,
    open_page,
    own,
    server_fixture,  # noqa: F401 (a fixture: used by its name, server)
    serving,
    settings_for,
)

pytestmark = pytest.mark.browser


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
        assert labels == ["Pick", "Refine", "Vary (Strong)"]
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
    await bob_child.locator(f'button[data-action="vary-strong:{child_id}:1"]').click()
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
    await expect(actions.locator("button[data-action]")).to_have_text(
        ["Pick", "Refine", "Vary (Strong)"]
    )
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
