"""The family tree as one picture, and team avatars: styles, members, sizes, round preview."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from bot.core import JobDetails
from bot.lineage_image import CARD_H, CARD_W, GAP_X, GAP_Y, MARGIN, layout
from tests.conftest import Chat, open_chat


async def _job(chat: Chat, user: str, line: str, **kw: object) -> str:
    sent = await chat.say(user, f"/imagine {line}", **kw)  # type: ignore[arg-type]
    ids = [r.job_id for r in sent if r.job_id]
    assert ids, [r.text for r in sent]
    await chat.settle()
    return ids[-1]


def _node(job_id: str, parent: str | None = None) -> JobDetails:
    return JobDetails(job_id, "done", "p", "o", "O", "vary" if parent else "imagine", "c", parent)


# ---------------------------------------------------------------------------- lineage
def test_layout_puts_parents_over_their_children_one_row_per_generation() -> None:
    nodes = [_node("r"), _node("a", "r"), _node("b", "r"), _node("c", "a"), _node("d", "a")]
    placed = layout(nodes)
    assert [placed[x].row for x in "rabcd"] == [0, 1, 1, 2, 2]
    assert (placed["c"].column, placed["d"].column, placed["b"].column) == (0, 1, 2)
    assert placed["a"].column == 0.5 and placed["r"].column == (0.5 + 2) / 2
    # A cycle (a corrupted row) cannot loop: every node is placed once.
    assert set(layout([_node("x", "y"), _node("y", "x")])) <= {"x", "y"}


async def test_tree_posts_one_picture_of_the_family_and_delete_takes_it_down(chat: Chat) -> None:
    root = await _job(chat, "alice", "a red fox --n 2 --seed 1")
    await chat.click("bob", f"vary:{root}:2")
    await chat.settle()
    await chat.click("carol", f"reroll:{root}")
    await chat.settle()
    [tree] = await chat.say("alice", f"/imagine tree {root}")
    assert not tree.ephemeral and tree.parent_job_id == root
    assert "3 jobs" in tree.text and "vary ×1" in tree.text and "reroll ×1" in tree.text
    [picture] = tree.images
    with Image.open(picture.path) as im:
        assert im.format == "PNG"
        # Three cards: the root's row over its two children's.
        assert (im.width, im.height) == (
            2 * MARGIN + 2 * CARD_W + GAP_X,
            2 * MARGIN + 2 * CARD_H + GAP_Y,
        )
        assert (im.width, im.height) == (picture.width, picture.height)
    # The button under a pick does the same, for anyone who may continue the result.
    [pick] = await chat.click("alice", f"pick:{root}:1")
    assert "Lineage" in [b.label for b in pick.buttons]
    [again] = await chat.click("alice", f"tree:{root}")
    assert again.images[0].sha256 == picture.sha256  # the same family, the same picture
    [elsewhere] = await chat.say("mallory", f"/imagine tree {root}", channel="random")
    assert elsewhere.ephemeral and "Only Alice" in elsewhere.text
    await chat.click("alice", f"delete:{root}")
    await chat.settle()
    assert len(chat.channel.deleted) >= 3  # the status, the result, the pick and the trees


async def test_tree_of_an_unknown_job_is_a_friendly_no_and_prose_is_a_prompt(
    chat: Chat,
) -> None:
    [reply] = await chat.say("alice", "/imagine tree n2suchjab234")
    assert reply.ephemeral and "I know no job" in reply.text
    for prompt in ("tree house", "info graphic", "tree construction"):
        [status] = await chat.say("alice", f"/imagine {prompt} --n 1")
        assert status.job_id and not status.ephemeral, prompt
    await chat.settle()


# ---------------------------------------------------------------------------- avatars
async def test_an_admin_sets_the_channels_avatar_style_and_portraits_use_it(chat: Chat) -> None:
    [refused] = await chat.say("bob", "/admin avatar-style channel anime seed=1000")
    assert "Only admins" in refused.text
    [ok] = await chat.say(
        "root", "/admin avatar-style channel anime seed=1000 soft studio light", admin=True
    )
    assert "style anime, base seed 1000, suffix 'soft studio light'" in ok.text
    job_id = await _job(chat, "bob", "avatar a fox in a scarf")
    job = await chat.app.runner.load(job_id)
    assert job is not None
    assert (job.request.width, job.request.height) == (1024, 1024)
    assert job.seed == 1000 and job.request.display.style == "anime"
    assert job.request.display.avatar
    assert "soft studio light" in job.request.prompt and "fox in a scarf" in job.prompt


async def test_one_avatar_per_member_with_consecutive_seeds(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat:
        await chat.say("root", "/admin avatar-style workspace pixel-art seed=41", admin=True)
    async with open_chat(tmp_path) as chat:  # the style is kept across a restart
        sent = await chat.say("alice", "/imagine avatar @alice @bob <@carol> smiling")
        assert sent[0].ephemeral and "3 avatars" in sent[0].text
        assert "(workspace)" in sent[0].text
        ids = [r.job_id for r in sent if r.job_id]
        await chat.settle()
        jobs = [await chat.app.runner.load(j) for j in ids]
        assert [j.seed for j in jobs if j] == [41, 42, 43]
        assert all(j and j.n == 1 and j.request.display.style == "pixel-art" for j in jobs)
        assert [j.notice.split(".")[0] for j in jobs if j] == [
            "Avatar 1 of 3, for user alice",
            "Avatar 2 of 3, for user bob",
            "Avatar 3 of 3, for user carol",
        ]
        assert (await chat.app.store.ledger.totals()).committed == 3


async def test_a_plain_name_on_slack_is_refused_with_how_to_mention(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat:
        chat.platform = "slack"
        chat.app.handler.register_poster("slack", chat.channel)
        [reply] = await chat.say("UALICE", "/imagine avatar @bob")
        assert reply.ephemeral and "Mention them" in reply.text
        assert await chat.app.store.fetchall("SELECT id FROM jobs") == []


async def test_a_picked_avatar_offers_sizes_and_a_round_preview(chat: Chat) -> None:
    job_id = await _job(chat, "alice", "avatar a cheerful robot")
    [pick] = await chat.click("alice", f"pick:{job_id}:1")
    assert "Sizes" in [b.label for b in pick.buttons]
    assert not any(b.label.startswith("Server icon") for b in pick.buttons)  # Discord only
    [sizes] = await chat.click("alice", f"sizes:{job_id}:1")
    assert not sizes.ephemeral and "1024, 512, 256, 128 px" in sizes.text
    got = []
    for f in sizes.images:
        with Image.open(f.path) as im:
            got.append((im.size, im.mode))
    assert got == [
        ((1024, 1024), "RGB"),
        ((512, 512), "RGB"),
        ((256, 256), "RGB"),
        ((128, 128), "RGB"),
        ((512, 512), "RGBA"),
    ]
    with Image.open(sizes.images[-1].path) as im:
        assert im.getpixel((0, 0))[3] == 0 and im.getpixel((256, 256))[3] == 255
    # An ordinary job's pick has no Sizes button.
    plain = await _job(chat, "alice", "a cheerful robot --n 1")
    [plain_pick] = await chat.click("alice", f"pick:{plain}:1")
    assert not any(b.label.startswith("Sizes") for b in plain_pick.buttons)


async def test_avatar_without_words_says_what_to_write(chat: Chat) -> None:
    [reply] = await chat.say("alice", "/imagine avatar")
    assert reply.ephemeral and "Describe the avatar" in reply.text
    [flags] = await chat.say("alice", "/imagine avatar a fox --n 9")
    assert flags.ephemeral and "no flags" in flags.text


async def test_avatar_style_none_off_and_bad_values(chat: Chat) -> None:
    [none] = await chat.say("root", "/admin avatar-style channel none seed=5", admin=True)
    assert "style none, base seed 5" in none.text
    job = await chat.app.runner.load(await _job(chat, "amy", "avatar a calm owl"))
    assert job is not None and job.seed == 5 and job.request.display.style == ""
    [bad] = await chat.say("root", "/admin avatar-style channel anme", admin=True)
    assert "Did you mean anime" in bad.text
    [seed] = await chat.say("root", "/admin avatar-style channel anime seed=x", admin=True)
    assert "seed must be a whole number" in seed.text
    [off] = await chat.say("root", "/admin avatar-style channel off", admin=True)
    assert "removed" in off.text
    assert await chat.app.store.fetchall("SELECT * FROM preferences WHERE kind = 'avatar'") == []
