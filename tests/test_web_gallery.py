"""The gallery, the lineage view and persisted picks, through the core (bot/gallery.py).

The conversation happens on the test platform; what the web playground shows is read back
through the same Core methods it uses (``job_details``, ``gallery``, ``lineage``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.gallery import decode_cursor, encode_cursor
from bot.storage.gallery import GalleryCursor
from tests.conftest import Chat, open_chat


@pytest.fixture
def chat(any_chat: Chat) -> Chat:
    """Each conversation on SQLite and on PostgreSQL (the gallery's own SQL on both)."""
    return any_chat


SLOW = {
    "providers": {"offline": {"latency_ms": 150, "concurrency": 1}},
    "jobs": {"max_running_per_user": 1},
}


async def imagine(chat: Chat, user: str, line: str, channel: str = "general") -> str:
    sent = await chat.say(user, f"/imagine {line}", channel=channel)
    jobs = [r.job_id for r in sent if r.job_id]
    assert jobs, [r.text for r in sent]
    await chat.settle()
    return jobs[-1]


async def child_of(chat: Chat, user: str, action: str, **fields: str) -> str:
    sent = await chat.click(user, action, fields=fields or None)
    job = sent[-1].job_id
    assert job is not None, [r.text for r in sent]
    await chat.settle()
    return job


async def test_a_pick_is_part_of_the_channels_history(chat: Chat) -> None:
    job = await imagine(chat, "alice", "a red fox --n 3 --seed 3")
    [pick] = await chat.click("bob", f"pick:{job}:2")
    details = (await chat.app.job_details("test", "team", [job]))[job]
    assert details.outcome == "done"
    assert [i.kind for i in details.images] == ["image"] * 3
    assert all(i.path.is_file() and len(i.sha256) == 64 for i in details.images)
    [again] = details.picks
    # The same message the click posted, plus who picked it.
    assert (again.text, again.images, again.buttons) == (pick.text, pick.images, pick.buttons)
    assert again.parent_job_id == job and again.meta["index"] == "2"
    assert again.meta["picked_by"] == "bob" and again.meta["picked_by_name"] == "Bob"
    # Picking it again is still one pick.
    await chat.click("alice", f"pick:{job}:2")
    assert len((await chat.app.job_details("test", "team", [job]))[job].picks) == 1


async def test_details_tell_cancelled_from_failed_and_keep_to_the_tenant(tmp_path: Path) -> None:
    async with open_chat(tmp_path, SLOW) as chat:
        first = next(r.job_id for r in await chat.say("alice", "/imagine one --n 1") if r.job_id)
        second = next(r.job_id for r in await chat.say("alice", "/imagine two --n 1") if r.job_id)
        assert first and second
        await chat.click("alice", f"cancel:{second}")
        await chat.settle()
        found = await chat.app.job_details("test", "team", [first, second, "nosuchjob123"])
        assert found[first].outcome == "done"
        assert found[second].outcome == "cancelled" and found[second].images == ()
        assert await chat.app.job_details("test", "other-team", [first]) == {}
        await chat.click("alice", f"delete:{first}")
        gone = (await chat.app.job_details("test", "team", [first]))[first]
        assert gone.outcome == "deleted" and gone.prompt == "" and gone.images == ()


async def test_gallery_mine_the_channels_search_and_pages(chat: Chat) -> None:
    a1 = await imagine(chat, "alice", "a Lighthouse at dusk --n 2")
    b1 = await imagine(chat, "bob", "a windmill --n 1")
    a2 = await imagine(chat, "alice", "100% _cotton_ lighthouse --n 1", channel="sandbox")
    await imagine(chat, "carol", "a lighthouse elsewhere --n 1", channel="general")
    gone = await imagine(chat, "alice", "a deleted lighthouse --n 1")
    await chat.click("alice", f"delete:{gone}")

    app = chat.app
    channel = await app.gallery("test", "team", channel_id="general")
    assert [(i.job_id, i.index) for i in channel.items][-3:] == [(b1, 1), (a1, 1), (a1, 2)]
    assert all(i.job_id != gone for i in channel.items)
    assert channel.next is None

    mine = await app.gallery("test", "team", owner_id="alice")
    assert [(i.job_id, i.index) for i in mine.items] == [(a2, 1), (a1, 1), (a1, 2)]
    assert {i.channel_id for i in mine.items} == {"general", "sandbox"}

    found = await app.gallery("test", "team", channel_id="general", query="LIGHTHOUSE")
    assert {i.job_id for i in found.items} == {a1} | {
        i.job_id for i in channel.items if "elsewhere" in i.prompt
    }
    literal = await app.gallery("test", "team", query="100% _cotton_")
    assert [i.job_id for i in literal.items] == [a2]
    assert (await app.gallery("test", "team", query="10% cotton")).items == ()
    assert (await app.gallery("test", "elsewhere", query="lighthouse")).items == ()

    # Infinite scroll: pages of two until the end, nothing twice, nothing left out.
    seen: list[tuple[str, int]] = []
    before = None
    while True:
        page = await app.gallery("test", "team", before=before, limit=2)
        seen += [(i.job_id, i.index) for i in page.items]
        if page.next is None:
            break
        before = page.next
    everything = await app.gallery("test", "team", limit=100)
    assert seen == [(i.job_id, i.index) for i in everything.items]
    assert len(seen) == len(set(seen)) == 5


async def test_a_search_page_continues_where_it_stopped(chat: Chat) -> None:
    jobs = [await imagine(chat, "alice", f"fox number {i} --n 1") for i in range(5)]
    await imagine(chat, "alice", "a hen --n 1")
    page = await chat.app.gallery("test", "team", query="fox", limit=3)
    rest = await chat.app.gallery("test", "team", query="fox", limit=3, before=page.next)
    assert [i.job_id for i in page.items + rest.items] == jobs[::-1]
    assert rest.next is None


def test_a_malformed_cursor_starts_from_the_top() -> None:
    cursor = GalleryCursor(1700000000.123456, "abcdefghijkm", 3)
    assert decode_cursor(encode_cursor(cursor)) == cursor
    for bad in ("", "x", "a~b", "1~abc~x", "nan~~~"):
        assert decode_cursor(bad) is None


async def test_lineage_is_the_whole_family_with_who_made_each(chat: Chat) -> None:
    root = await imagine(chat, "alice", "a castle --n 2")
    refine = await child_of(
        chat, "bob", f"refine:{root}:2", prompt="a castle in snow", strength="0.5"
    )
    vary = await child_of(chat, "carol", f"vary:{refine}:1")
    reroll = await child_of(chat, "alice", f"reroll:{root}")
    unrelated = await imagine(chat, "alice", "a boat --n 1")

    tree = await chat.app.lineage("test", "team", vary)
    assert tree is not None
    assert (tree.root_id, tree.focus_id, tree.truncated) == (root, vary, False)
    nodes = {n.job_id: n for n in tree.nodes}
    assert set(nodes) == {root, refine, vary, reroll} and unrelated not in nodes
    assert tree.nodes[0].job_id == root  # oldest first
    assert (
        nodes[refine].kind,
        nodes[refine].parent_job_id,
        nodes[refine].parent_index,
        nodes[refine].owner_id,
    ) == ("refine", root, 2, "bob")
    assert (nodes[vary].kind, nodes[vary].parent_job_id, nodes[vary].owner_name) == (
        "vary",
        refine,
        "Carol",
    )
    assert nodes[reroll].kind == "reroll" and nodes[reroll].parent_index is None
    assert nodes[refine].prompt == "a castle in snow" and len(nodes[root].images) == 2

    # The same family from any member; another tenant sees nothing.
    from_root = await chat.app.lineage("test", "team", root)
    assert from_root is not None and {n.job_id for n in from_root.nodes} == set(nodes)
    assert await chat.app.lineage("test", "other", root) is None
    assert await chat.app.lineage("test", "team", "nosuchjob123") is None

    # A deleted leaf leaves the tree; a deleted parent stays as a placeholder.
    await chat.click("alice", f"delete:{reroll}")
    await chat.click("bob", f"delete:{refine}")
    tree = await chat.app.lineage("test", "team", root)
    assert tree is not None
    nodes = {n.job_id: n for n in tree.nodes}
    assert set(nodes) == {root, refine, vary}
    assert nodes[refine].outcome == "deleted" and nodes[refine].prompt == ""
    assert nodes[refine].images == ()
