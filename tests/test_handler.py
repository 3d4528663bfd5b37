"""The handler, as people use it: commands in, replies out, through the real core and SQLite."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

from PIL import Image

from bot.quotas import ledger_balances
from tests.conftest import Chat, open_chat
from tests.fakes import make_png


def labels(reply) -> list[str]:  # type: ignore[no-untyped-def]
    return [b.label for b in reply.buttons]


async def imagine(chat: Chat, user: str, line: str, **kw) -> str:  # type: ignore[no-untyped-def]
    sent = await chat.say(user, f"/imagine {line}", **kw)
    jobs = [r.job_id for r in sent if r.job_id]
    assert jobs, [r.text for r in sent]
    await chat.settle()
    return jobs[-1]


async def test_imagine_posts_a_grid_with_buttons_and_the_quota_left(chat: Chat) -> None:
    sent = await chat.say(
        "alice", "/imagine a lighthouse at dusk --n 4 --style anime --ar 3:2 --seed 7 --no text"
    )
    assert len(sent) == 1 and sent[0].state == "queued" and not sent[0].ephemeral
    job_id = sent[0].job_id
    assert job_id is not None
    await chat.settle()
    result = chat.result(job_id)
    assert result.state == "done"
    assert len(result.images) == 1 and result.images[0].kind == "grid"
    assert result.images[0].path.is_file()
    assert labels(result) == (
        [f"Pick {i}" for i in range(1, 5)]
        + [f"Refine {i}" for i in range(1, 5)]
        + [f"Vary (Strong) {i}" for i in range(1, 5)]
        + ["Reroll", "Info", "Delete"]
    )
    assert all(len(b.action) <= 100 for b in result.buttons)
    assert "seeds 7, 8, 9, 10" in result.text
    assert "46 of 50 images left today" in result.text
    assert "not a diffusion model" in (result.notice or "")
    # progress was shown while it ran, and the status message was settled, not left running
    assert any(r.state == "running" for r in chat.channel.updated)
    last_status = [r for r in chat.channel.updated if r.job_id == job_id][-1]
    assert last_status.state == "done" and "done, see below" in last_status.text


PICK_LABELS = [
    "Upscale",
    "Refine",
    "Vary (Subtle)",
    "Vary (Strong)",
    "Zoom out 1.5x",
    "Zoom out 2x",
    "Pan left",
    "Pan right",
    "Pan up",
    "Pan down",
    "Info",
]


async def test_pick_posts_full_image_with_its_own_buttons(chat: Chat) -> None:
    job = await imagine(chat, "alice", "a red fox --n 2 --seed 3")
    [pick] = await chat.click("alice", f"pick:{job}:2")
    assert not pick.ephemeral and pick.parent_job_id == job
    assert labels(pick) == [*PICK_LABELS, "Lineage"]
    assert {
        b.action.rsplit(":", 1)[-1] for b in pick.buttons if b.label not in ("Info", "Lineage")
    } == {"2"}
    [img] = pick.images
    assert img.kind == "image" and img.path.suffix == ".png"
    with Image.open(img.path) as im:
        assert im.size == (1024, 1024)
        assert im.text["seed"] == "4"  # type: ignore[attr-defined]


async def test_refine_asks_for_a_prompt_then_runs_img2img_with_lineage(chat: Chat) -> None:
    job = await imagine(chat, "alice", "a castle on a hill --n 2")
    [form_reply] = await chat.click("bob", f"refine:{job}:2")
    assert form_reply.ephemeral and form_reply.form is not None
    assert [f.name for f in form_reply.form.fields] == ["prompt", "strength", "image"]
    assert form_reply.form.fields[2].kind == "image"  # optional: another picture to start from
    assert form_reply.form.fields[0].value == "a castle on a hill"
    sent = await chat.click(
        "bob",
        f"refine:{job}:2",
        fields={"prompt": "a castle on a hill in winter", "strength": "0.4"},
    )
    child = sent[-1].job_id
    assert child is not None
    await chat.settle()
    result = chat.result(child)
    assert result.state == "done" and result.parent_job_id == job
    assert result.text.startswith("Refinement: a castle on a hill in winter")
    row = await chat.app.store.fetchone(
        "SELECT kind, parent_job_id, parent_index, owner_id, request_json FROM jobs WHERE id = ?",
        (child,),
    )
    assert row is not None
    assert (row["kind"], row["parent_job_id"], row["parent_index"], row["owner_id"]) == (
        "refine",
        job,
        2,
        "bob",
    )
    assert '"strength": 0.4' in row["request_json"]
    # The clicker paid, not the owner.
    assert "48 of 50" in (await chat.say("alice", "/quota"))[0].text
    assert "48 of 50" in (await chat.say("bob", "/quota"))[0].text


async def test_a_refine_with_an_uploaded_picture_starts_from_it(chat: Chat) -> None:
    job = await imagine(chat, "alice", "a castle on a hill --n 2")
    picked = await chat.app.store.fetchone(
        "SELECT sha256 FROM images WHERE job_id = ? AND idx = 2", (job,)
    )
    assert picked is not None
    upload = make_png("bobs sketch", 320, 192)
    sent = await chat.click(
        "bob", f"refine:{job}:2", fields={"prompt": "a castle, sketched"}, init_image=upload
    )
    child = sent[-1].job_id
    await chat.settle()
    assert chat.result(child).state == "done"
    row = await chat.app.store.fetchone(
        "SELECT kind, parent_job_id, parent_index, owner_id, request_json FROM jobs WHERE id = ?",
        (child,),
    )
    assert row is not None
    # Same rule and cost as any refine (the clicker pays the parent's count); the lineage
    # still names the image refined; the start is the upload, gated and stored.
    assert (row["kind"], row["parent_job_id"], row["parent_index"], row["owner_id"]) == (
        "refine",
        job,
        2,
        "bob",
    )
    init = json.loads(row["request_json"])["init_sha"]
    assert init and init != picked["sha256"]
    assert "48 of 50" in (await chat.say("bob", "/quota"))[0].text
    # Bytes that are no picture: a friendly refusal, nothing charged, no job.
    [refused] = await chat.click(
        "bob", f"refine:{job}:2", fields={"prompt": "x"}, init_image=b"\x89PNG garbage"
    )
    assert refused.ephemeral and "Traceback" not in refused.text
    assert "48 of 50" in (await chat.say("bob", "/quota"))[0].text


async def test_bad_refine_strength_is_a_friendly_message(chat: Chat) -> None:
    job = await imagine(chat, "alice", "a boat --n 1")
    [reply] = await chat.click(
        "alice", f"refine:{job}:1", fields={"prompt": "a boat", "strength": "7"}
    )
    assert reply.ephemeral and "0 to 1" in reply.text


async def test_vary_and_reroll_make_children_with_new_seeds(chat: Chat) -> None:
    job = await imagine(chat, "alice", "a tree --n 2 --seed 11")
    vary = (await chat.click("alice", f"vary:{job}:1"))[-1].job_id
    reroll = (await chat.click("alice", f"reroll:{job}"))[-1].job_id
    await chat.settle()
    for child, kind in ((vary, "vary"), (reroll, "reroll")):
        assert child is not None
        row = await chat.app.store.fetchone(
            "SELECT kind, parent_job_id, seed, state FROM jobs WHERE id = ?", (child,)
        )
        assert row is not None
        assert (row["kind"], row["parent_job_id"], row["state"]) == (kind, job, "done")
        assert row["seed"] != 11


async def test_info_goes_to_the_clicker_only_and_lists_every_parameter(chat: Chat) -> None:
    job = await imagine(chat, "alice", "a lamp --n 2 --seed 5 --steps 20 --cfg 7 --no blur")
    [info] = await chat.click("bob", f"info:{job}")
    assert info.ephemeral
    for part in (
        "Prompt: a lamp",
        "Negative: blur",
        "Steps: 20",
        "CFG: 7",
        "Seeds: 1=5, 2=6",
        "Provider: offline",
        "Size: 1024x1024",
    ):
        assert part in info.text


async def test_delete_is_for_owner_and_admins(chat: Chat) -> None:
    job = await imagine(chat, "alice", "a cup --n 1")
    [denied] = await chat.click("bob", f"delete:{job}")
    assert denied.ephemeral and "Only the person" in denied.text
    [ok] = await chat.click("carol", f"delete:{job}", admin=True)
    assert ok.text == "Deleted."
    # both the status message and the result message were taken down
    assert len(chat.channel.deleted) == 2 and len(set(chat.channel.deleted)) == 2
    [gone] = await chat.click("alice", f"pick:{job}:1")
    assert "no longer available" in gone.text


async def test_private_channel_refuses_strangers_but_not_owner_or_admin(chat: Chat) -> None:
    [msg] = await chat.say("root", "/admin collab off", admin=True)
    assert "Only a result's owner" in msg.text
    job = await imagine(chat, "alice", "a kite --n 1")
    [denied] = await chat.click("bob", f"reroll:{job}")
    assert denied.ephemeral and "Only Alice can continue" in denied.text
    assert (await chat.click("alice", f"reroll:{job}"))[-1].job_id
    assert (await chat.click("root", f"reroll:{job}", admin=True))[-1].job_id
    await chat.settle()
    # the refused click changed nothing
    assert "50 of 50" in (await chat.say("bob", "/quota"))[0].text


async def test_buttons_from_another_workspace_or_forged_are_refused(chat: Chat) -> None:
    job = await imagine(chat, "alice", "a key --n 1")
    [other] = await chat.click("alice", f"reroll:{job}", tenant="other-team")
    assert "no longer available" in other.text
    for forged in (
        "reroll:",
        f"reroll:{job}x",
        "pick:../../etc:1",
        "x" * 101,
        f"pick:{job}:٣",
        f"explode:{job}",
    ):
        [reply] = await chat.click("alice", forged)
        assert reply.ephemeral and "not one of ours" in reply.text
    [out_of_range] = await chat.click("alice", f"pick:{job}:9")
    assert "images 1 to 1" in out_of_range.text


async def test_grammar_errors_and_help_are_ephemeral_and_charge_nothing(chat: Chat) -> None:
    [bad] = await chat.say("alice", "/imagine a fox --sytle anime")
    assert bad.ephemeral and "--style" in bad.text
    [help_] = await chat.say("alice", "/imagine help")
    assert help_.ephemeral and "--n" in help_.text
    assert "50 of 50" in (await chat.say("alice", "/quota"))[0].text


async def test_permutations_tell_the_cost_first_and_run_every_job(chat: Chat) -> None:
    sent = await chat.say("alice", "/imagine a {red, blue} car --n 2")
    assert sent[0].ephemeral and "2 jobs" in sent[0].text and "4 images" in sent[0].text
    jobs = [r.job_id for r in sent if r.job_id]
    assert len(jobs) == 2
    await chat.settle()
    prompts = sorted(chat.result(j).meta["prompt"] for j in jobs)  # type: ignore[arg-type]
    assert prompts == ["a blue car", "a red car"]


async def test_quota_exceeded_is_refused_whole_and_nothing_is_written(tmp_path: Path) -> None:
    async with open_chat(tmp_path, {"quota": {"user_daily": 5}}) as chat:
        await imagine(chat, "alice", "a fox --n 4")
        [refused] = await chat.say("alice", "/imagine a fox --n 2")
        assert refused.ephemeral
        assert "needs 2 images" in refused.text and "1 of 5 left" in refused.text
        assert "resets at 00:00 UTC" in refused.text
        rows = await chat.app.store.fetchall("SELECT id FROM jobs")
        assert len(rows) == 1
        assert await ledger_balances(chat.app.store)


async def test_admin_commands_change_limits_and_need_admin(chat: Chat) -> None:
    [denied] = await chat.say("bob", "/admin grant alice 10")
    assert "Only admins" in denied.text
    await chat.say("root", "/admin limit alice 3", admin=True)
    assert "3 of 3" in (await chat.say("alice", "/quota"))[0].text
    await chat.say("root", "/admin grant @alice 2", admin=True)
    assert "5 of 3" in (await chat.say("alice", "/quota"))[0].text
    await chat.say("root", "/admin block <@alice> spamming", admin=True)
    [blocked] = await chat.say("alice", "/imagine a fox --n 1")
    assert "blocked" in blocked.text and "spamming" in blocked.text
    await chat.say("root", "/admin unblock alice", admin=True)
    assert (await chat.say("alice", "/imagine a fox --n 1"))[-1].job_id
    [usage] = await chat.say("root", "/admin frobnicate", admin=True)
    assert "/admin limit" in usage.text
    await chat.settle()


async def test_admins_are_exempt_and_configured_admins_count(tmp_path: Path) -> None:
    async with open_chat(tmp_path, {"bot": {"admins": ["test:root"]}}) as chat:
        await imagine(chat, "root", "a fox --n 4")
        [q] = await chat.say("root", "/quota")
        assert "not counted" in q.text


async def test_attachment_is_normalised_and_used_as_init_image(chat: Chat) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 30, 30)).save(buf, "JPEG")
    job = await imagine(
        chat, "alice", "make it blue --n 1 --strength 0.2", init_image=buf.getvalue()
    )
    row = await chat.app.store.fetchone("SELECT request_json FROM jobs WHERE id = ?", (job,))
    assert row is not None and '"init_sha": "' in row["request_json"]
    assert chat.result(job).state == "done"
    [bad] = await chat.say("alice", "/imagine x --n 1", init_image=b"GIF89a" + b"\0" * 50)
    assert bad.ephemeral and "PNG, JPEG or WEBP" in bad.text


async def test_replayed_interaction_is_accepted_once(chat: Chat) -> None:
    first = await chat.say("alice", "/imagine a fox --n 1", interaction_id="evt-1")
    again = await chat.say("alice", "/imagine a fox --n 1", interaction_id="evt-1")
    assert [r.job_id for r in first if r.job_id] and not [r.job_id for r in again if r.job_id]
    await chat.settle()
    rows = await chat.app.store.fetchall("SELECT id FROM jobs")
    assert len(rows) == 1


async def test_history_lists_the_channel_in_order_with_lineage(chat: Chat) -> None:
    job = await imagine(chat, "alice", "a moon --n 1")
    await chat.click("bob", f"vary:{job}:1")
    await chat.settle()
    history = await chat.app.handler.history("test", "team", "general")
    assert next(h.job_id for h in history) == job
    assert history[1].parent_job_id == job
    assert await chat.app.handler.history("test", "team", "elsewhere") == []


async def test_image_path_only_serves_stored_hex_ids(chat: Chat) -> None:
    job = await imagine(chat, "alice", "a star --n 1")
    grid = chat.result(job).images[0]
    assert chat.app.handler.image_path(grid.sha256) == grid.path
    assert chat.app.handler.image_path("../" + grid.sha256[3:]) is None
    assert chat.app.handler.image_path("0" * 64) is None


async def test_double_click_on_reroll_makes_one_job_and_one_charge(tmp_path: Path) -> None:
    slow = {"providers": {"offline": {"latency_ms": 300}}}
    async with open_chat(tmp_path, slow) as chat:
        job = await imagine(chat, "alice", "a bell --n 1")
        clicks = await asyncio.gather(*(chat.click("alice", f"reroll:{job}") for _ in range(10)))
        started = [r.job_id for sent in clicks for r in sent if r.job_id]
        refused = [r.text for sent in clicks for r in sent if not r.job_id]
        assert len(started) == 1 and refused == ["That is already on its way."] * 9
        # someone else's click is their own wish
        assert (await chat.click("bob", f"reroll:{job}"))[-1].job_id
        await chat.settle()
        assert "48 of 50" in (await chat.say("alice", "/quota"))[0].text


async def test_avatar_preset_makes_square_portraits(chat: Chat) -> None:
    job = await imagine(
        chat, "alice", "a smiling engineer with glasses --avatar --n 2", channel="avatars"
    )
    row = await chat.app.store.fetchone("SELECT request_json FROM jobs WHERE id = ?", (job,))
    assert row is not None
    request = json.loads(row["request_json"])
    assert (request["width"], request["height"]) == (1024, 1024)
    assert "portrait" in request["prompt"] and "a smiling engineer" in request["prompt"]
    assert request["display_prompt"] == "a smiling engineer with glasses"
    [bad] = await chat.say("alice", "/imagine a cat --avatar --ar 16:9")
    assert bad.ephemeral and "--avatar" in bad.text


async def test_strength_typed_in_the_refine_prompt_wins_over_the_slider(chat: Chat) -> None:
    job = await imagine(chat, "alice", "a boat --n 1")
    sent = await chat.click(
        "alice",
        f"refine:{job}:1",
        fields={"prompt": "a boat at sea --strength 0.9", "strength": "0.6"},
    )
    child = next(r.job_id for r in sent if r.job_id)
    await chat.settle()
    row = await chat.app.store.fetchone("SELECT request_json FROM jobs WHERE id = ?", (child,))
    assert row is not None and json.loads(row["request_json"])["strength"] == 0.9
