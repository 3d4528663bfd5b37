"""The image verbs through the handler, on the offline renderer: Vary (Subtle) and Vary
(Strong), Remix, Upscale (a labelled resize here: the renderer has no upscaler), Zoom out and
Pan (the renderer extends its picture). Each is a child job charged to the clicker through the
ledger, gated by capabilities, and a button that survives a restart."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageChops

from bot.types import Reply
from tests.conftest import Chat, open_chat


async def _done(chat: Chat, user: str, line: str) -> str:
    [status] = await chat.say(user, f"/imagine {line}")
    assert status.job_id, status.text
    await chat.settle()
    return status.job_id


async def _child(chat: Chat, user: str, action: str, **kw: object) -> str:
    sent = await chat.click(user, action, **kw)  # type: ignore[arg-type]
    child = sent[-1].job_id
    assert child is not None, [r.text for r in sent]
    await chat.settle()
    return child


async def _row(chat: Chat, job: str) -> dict[str, object]:
    row = await chat.app.store.fetchone(
        "SELECT kind, parent_job_id, parent_index, owner_id, state, request_json FROM jobs "
        "WHERE id = ?",
        (job,),
    )
    assert row is not None
    return {**dict(row), "request": json.loads(row["request_json"])}


def _image(reply: Reply) -> Image.Image:
    [img] = reply.images
    with Image.open(img.path) as im:
        im.load()
        return im.convert("RGB")


async def _left(chat: Chat, user: str) -> str:
    return (await chat.say(user, "/quota"))[0].text


async def test_vary_subtle_and_strong_use_their_configured_strengths(tmp_path: Path) -> None:
    cfg = {"actions": {"vary_strength": 0.25, "vary_strong_strength": 0.8}}
    async with open_chat(tmp_path, cfg) as chat:
        job = await _done(chat, "alice", "a tree --n 2 --seed 11")
        strong = await _child(chat, "bob", f"vary-strong:{job}:1")
        subtle = await _child(chat, "bob", f"vary-subtle:{job}:2")
        for child, kind, strength, index in (
            (strong, "vary-strong", 0.8, 1),
            (subtle, "vary-subtle", 0.25, 2),
        ):
            row = await _row(chat, child)
            assert (row["kind"], row["parent_job_id"], row["parent_index"], row["state"]) == (
                kind,
                job,
                index,
                "done",
            )
            assert row["request"]["strength"] == strength  # type: ignore[index]
            assert row["request"]["init_sha"]  # type: ignore[index]
        assert chat.result(strong).text.startswith("Variation (strong): a tree")
        # A Vary button posted by an older version still works, as Vary (Subtle).
        legacy = await _child(chat, "bob", f"vary:{job}:1")
        row = await _row(chat, legacy)
        assert (row["kind"], row["request"]["strength"]) == ("vary", 0.25)  # type: ignore[index]
        # Bob paid for three varies of two images each; Alice only for her own job.
        assert "44 of 50" in await _left(chat, "bob")
        assert "48 of 50" in await _left(chat, "alice")


async def test_subtle_then_strong_on_one_image_are_two_jobs_not_a_double_click(
    chat: Chat,
) -> None:
    job = await _done(chat, "alice", "a pond --n 1")
    a = await chat.click("alice", f"vary-subtle:{job}:1")
    b = await chat.click("alice", f"vary-strong:{job}:1")
    again = await chat.click("alice", f"vary-strong:{job}:1")
    assert a[-1].job_id and b[-1].job_id and a[-1].job_id != b[-1].job_id
    assert again[-1].text == "That is already on its way." and again[-1].ephemeral
    await chat.settle()


async def test_remix_opens_the_prompt_before_a_vary_or_a_reroll(chat: Chat) -> None:
    job = await _done(chat, "alice", "a castle on a hill --n 2 --remix")
    assert (await _row(chat, job))["request"]["remix"] is True  # type: ignore[index]
    [form] = await chat.click("bob", f"vary-strong:{job}:2")
    assert form.ephemeral and form.form is not None
    assert form.form.action == f"vary-strong:{job}:2"
    assert [(f.name, f.value) for f in form.form.fields] == [("prompt", "a castle on a hill")]
    assert "50 of 50" in await _left(chat, "bob")  # a form costs nothing
    child = await _child(
        chat, "bob", f"vary-strong:{job}:2", fields={"prompt": "a castle on a hill at night"}
    )
    row = await _row(chat, child)
    assert row["kind"] == "vary-strong" and row["parent_index"] == 2
    assert row["request"]["display_prompt"] == "a castle on a hill at night"  # type: ignore[index]
    assert row["request"]["strength"] == 0.75  # type: ignore[index]
    assert row["request"]["remix"] is True  # type: ignore[index]  (remix stays on)
    # Reroll too, and an edited --n wins over the parent's.
    [form] = await chat.click("bob", f"reroll:{job}")
    assert form.form is not None and form.form.action == f"reroll:{job}"
    rerolled = await _child(
        chat, "bob", f"reroll:{job}", fields={"prompt": "a castle in the snow --n 1"}
    )
    row = await _row(chat, rerolled)
    assert row["kind"] == "reroll" and row["request"]["n"] == 1  # type: ignore[index]
    assert row["request"]["display_prompt"] == "a castle in the snow"  # type: ignore[index]
    # Without --remix a Vary starts at once.
    plain = await _done(chat, "alice", "a moat --n 1")
    sent = await chat.click("alice", f"vary-subtle:{plain}:1")
    assert sent[-1].form is None and sent[-1].job_id


async def test_upscale_without_an_upscaler_is_a_labelled_resize_at_its_cost(
    tmp_path: Path,
) -> None:
    async with open_chat(tmp_path, {"actions": {"upscale_cost": {"offline": 3}}}) as chat:
        job = await _done(chat, "alice", "a lighthouse --n 2 --size 512x384 --seed 4")
        [pick] = await chat.click("bob", f"pick:{job}:2")
        assert pick.buttons[0].action == f"upscale:{job}:2"
        child = await _child(chat, "bob", f"upscale:{job}:2")
        result = chat.result(child)
        assert result.state == "done"
        assert result.notice and "Resized, not generated" in result.notice
        assert result.text.startswith("Upscale: a lighthouse")
        [pick_up] = await chat.click("bob", f"pick:{child}:1")
        up = _image(pick_up)
        assert up.size == (1024, 768)
        original = _image(pick)
        assert ImageChops.difference(up.resize(original.size), original).getbbox() is not None
        row = await _row(chat, child)
        assert (row["kind"], row["parent_job_id"], row["parent_index"]) == ("upscale", job, 2)
        assert row["request"]["edit"] == {"op": "upscale", "scale": 2.0, "pad": [0, 0, 0, 0]}  # type: ignore[index]
        assert "47 of 50" in await _left(chat, "bob")  # the configured 3 units


async def test_upscale_is_hidden_where_no_upscaler_and_resizing_is_off(tmp_path: Path) -> None:
    async with open_chat(tmp_path, {"actions": {"upscale_resize": False}}) as chat:
        job = await _done(chat, "alice", "a kite --n 1")
        [pick] = await chat.click("alice", f"pick:{job}:1")
        assert "Upscale" not in [b.label for b in pick.buttons]
        [refused] = await chat.click("alice", f"upscale:{job}:1")  # an old button
        assert refused.ephemeral and "no upscale" in refused.text
        assert "49 of 50" in await _left(chat, "alice")  # nothing charged


async def test_zoom_out_and_pan_extend_the_picture_around_the_original(chat: Chat) -> None:
    job = await _done(chat, "alice", "a valley at dawn --n 1 --size 512x512 --seed 9")
    [pick] = await chat.click("alice", f"pick:{job}:1")
    original = _image(pick)
    for action, size, offset in (
        (f"zoom-out:{job}:1", (768, 768), (128, 128)),
        (f"zoom-out-double:{job}:1", (1024, 1024), (256, 256)),
        (f"pan-left:{job}:1", (768, 512), (256, 0)),
        (f"pan-down:{job}:1", (512, 768), (0, 0)),
    ):
        child = await _child(chat, "alice", action)
        assert chat.result(child).state == "done", chat.result(child).text
        [picked] = await chat.click("alice", f"pick:{child}:1")
        grown = _image(picked)
        assert grown.size == size, action
        # The original sits where it was, untouched away from the seam.
        x, y = offset
        inner = (x + 48, y + 48, x + 464, y + 464)  # the seam is feathered
        diff = ImageChops.difference(grown.crop(inner), original.crop((48, 48, 464, 464)))
        assert max(diff.getextrema()[c][1] for c in range(3)) <= 2, action
        row = await _row(chat, child)
        assert row["kind"] == ("zoom" if "zoom" in action else "pan")
    assert "45 of 50" in await _left(chat, "alice")  # one unit each, plus the first job


async def test_image_verb_buttons_survive_a_restart(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat:
        job = await _done(chat, "alice", "a harbour --n 1 --size 256x256")
        [pick] = await chat.click("alice", f"pick:{job}:1")
        actions = [b.action for b in pick.buttons]
    async with open_chat(tmp_path) as chat:  # a new process, the same data dir
        for action in (a for a in actions if a.startswith(("upscale", "pan-up"))):
            child = await _child(chat, "alice", action)
            assert chat.result(child).state == "done"


async def test_help_lists_the_verbs(chat: Chat) -> None:
    [reply] = await chat.say("alice", "/imagine help")
    for word in ("Upscale", "Vary (Subtle/Strong)", "Zoom out 1.5x/2x", "Pan left", "--remix"):
        assert word in reply.text, word
