"""Live updates as the hub sends them (adapters/web/live.py): deltas, coalescing, removal.

Pure: no server, no core. A subscriber here is an open page; ``take`` is what its socket sends.
``hub.flush()`` sends what is waiting at once (a running playground flushes each channel a
moment after its first pending update).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from adapters.web import live
from adapters.web.live import Hub, Subscriber


def card(ref: str, seq: int, **fields: Any) -> dict[str, Any]:
    return {
        "ref": ref,
        "seq": seq,
        "state": "queued",
        "position": None,
        "progress": None,
        "text": f"job {ref}",
        **fields,
    }


async def frame(sub: Subscriber, hub: Hub) -> list[dict[str, Any]]:
    hub.flush()
    encoded = await sub.take()
    assert encoded is not None
    decoded = json.loads(encoded)
    assert decoded["type"] == "batch"
    items: list[dict[str, Any]] = decoded["items"]
    return items


async def test_a_new_card_goes_whole_then_only_what_changed() -> None:
    hub = Hub()
    page = Subscriber("alice", joined_seq=0)
    hub.subscribe("general", page)
    hub.publish("general", card("a", 1, position=3))
    [whole] = await frame(page, hub)
    # Whole, less its empty fields (a page reads a missing field as empty).
    assert whole == {
        "op": "card",
        "reply": {"ref": "a", "seq": 1, "state": "queued", "position": 3, "text": "job a"},
    }
    hub.publish("general", card("a", 2, state="running", progress=0.4))
    [delta] = await frame(page, hub)
    assert delta == {
        "op": "delta",
        "ref": "a",
        "seq": 2,
        "set": {"state": "running", "progress": 0.4, "position": None},
    }
    # An update that changes nothing is not sent at all.
    hub.publish("general", card("a", 3, state="running", progress=0.4))
    hub.flush()
    assert not page.pending and not hub.waiting("general")


async def test_a_burst_for_one_card_leaves_as_one_item_in_its_newest_state() -> None:
    hub = Hub()
    page = Subscriber("alice", joined_seq=0)
    hub.subscribe("general", page)
    hub.publish("general", card("a", 1))
    hub.publish("general", card("b", 2))
    for seq, progress in enumerate((0.1, 0.2, 0.3), start=3):
        hub.publish("general", card("a", seq, state="running", progress=progress))
    items = await frame(page, hub)
    # One frame; "a" once, whole (its base was still pending), with the last progress.
    assert [(i["op"], i["reply"]["ref"]) for i in items] == [("card", "b"), ("card", "a")]
    assert items[1]["reply"]["progress"] == 0.3


async def test_only_the_pages_of_that_channel_get_it() -> None:
    hub = Hub()
    here, there = Subscriber("alice"), Subscriber("bob")
    hub.subscribe("general", here)
    hub.subscribe("sandbox", there)
    hub.publish("general", card("a", 1))
    hub.flush()
    assert here.pending and not there.pending


async def test_a_card_known_from_history_gets_its_next_update_whole() -> None:
    hub = Hub()
    early = Subscriber("alice", joined_seq=0)
    hub.subscribe("general", early)
    hub.publish("general", card("a", 1))
    await frame(early, hub)
    # This page loaded "a" from history (rendered apart from the live stream).
    late = Subscriber("bob", joined_seq=2)
    hub.subscribe("general", late)
    hub.publish("general", card("a", 3, state="running"))
    assert [i["op"] for i in await frame(early, hub)] == ["delta"]
    assert [i["op"] for i in await frame(late, hub)] == ["card"]
    hub.publish("general", card("a", 4, state="done"))
    assert [i["op"] for i in await frame(late, hub)] == ["delta"]


async def test_an_older_state_arriving_late_is_ignored() -> None:
    hub = Hub()
    page = Subscriber("alice")
    hub.subscribe("general", page)
    hub.publish("general", card("a", 5, state="done"))
    await frame(page, hub)
    hub.publish("general", card("a", 4, state="queued"))
    hub.flush()
    assert not page.pending


async def test_remove_private_items_and_the_badge() -> None:
    hub = Hub()
    alice, bob = Subscriber("alice"), Subscriber("bob")
    hub.subscribe("general", alice)
    hub.subscribe("general", bob)
    hub.publish("general", card("a", 1))
    hub.remove("general", "a")  # replaces the pending card: the page never sees it
    assert await frame(bob, hub) == [{"op": "remove", "ref": "a"}]
    assert await frame(alice, hub) == [{"op": "remove", "ref": "a"}]
    hub.send_to("general", "alice", "p:9", {"op": "card", "reply": {"text": "only you"}})
    hub.send_to_user("alice", "quota", {"op": "quota", "quota": "49 of 50 images left"})
    items = await frame(alice, hub)
    assert items[-2:] == [
        {"op": "card", "reply": {"text": "only you"}},
        {"op": "quota", "quota": "49 of 50 images left"},
    ]
    hub.flush()
    assert not bob.pending


async def test_a_page_too_far_behind_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "FRAMES_BEHIND", 2)
    hub = Hub()
    page, fast = Subscriber("alice"), Subscriber("bob")
    hub.subscribe("general", page)
    hub.subscribe("general", fast)
    for seq, ref in enumerate("abc", start=1):
        hub.publish("general", card(ref, seq))
        hub.flush()
        assert await fast.take() is not None  # bob's socket keeps up; alice's sends nothing
    assert page.overflowed and await page.take() is None
    assert page not in hub.subscribers("general") and fast in hub.subscribers("general")


async def test_updates_wait_a_moment_to_share_a_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "FLUSH_S", 0.5)  # long enough that a busy machine cannot outrun it
    hub = Hub()
    page = Subscriber("alice")
    hub.subscribe("general", page)
    hub.publish("general", card("a", 1))
    taking = asyncio.ensure_future(page.take())
    await asyncio.sleep(0)  # the page is waiting for its frame
    hub.publish("general", card("b", 2))
    assert not taking.done()  # still waiting for the moment to pass
    encoded = await asyncio.wait_for(taking, 2)
    assert encoded is not None and len(json.loads(encoded)["items"]) == 2


async def test_two_changes_while_waiting_leave_as_one_delta() -> None:
    hub = Hub()
    pages = [Subscriber(name) for name in ("alice", "bob")]
    for page in pages:
        hub.subscribe("general", page)
    hub.publish("general", card("a", 1, position=5))
    for page in pages:
        await frame(page, hub)
    hub.publish("general", card("a", 2, position=4, text="job a, #4"))
    hub.publish("general", card("a", 3, position=3, text="job a, #3"))
    hub.publish(
        "general", card("a", 4, position=3, text="job a, #3", progress=0.0, state="running")
    )
    hub.flush()
    # One frame for the channel: the same string for both pages, encoded once.
    assert pages[0].pending == pages[1].pending and pages[0].pending[0] is pages[1].pending[0]
    first, second = [await frame(page, hub) for page in pages]
    assert (
        first
        == second
        == [
            {
                "op": "delta",
                "ref": "a",
                "seq": 4,
                "set": {"position": 3, "text": "job a, #3", "state": "running", "progress": 0.0},
            }
        ]
    )


async def test_a_page_that_joins_later_is_not_sent_what_its_history_has() -> None:
    hub = Hub()
    early = Subscriber("alice", joined_seq=0)
    hub.subscribe("general", early)
    hub.publish("general", card("a", 1))
    late = Subscriber("bob", joined_seq=2)
    hub.subscribe("general", late)  # before the flush: "a" is in the history it reads
    hub.publish("general", card("b", 3))
    hub.flush()
    assert [i["reply"]["ref"] for i in await frame(early, hub)] == ["a", "b"]
    assert [i["reply"]["ref"] for i in await frame(late, hub)] == ["b"]


async def test_a_burst_costs_one_frame_per_page_built_once() -> None:
    hub = Hub()
    pages = [Subscriber(f"user{i}") for i in range(200)]
    for page in pages:
        hub.subscribe("general", page)
    for i in range(200):
        hub.publish("general", card(f"j{i}", i + 1))
    hub.flush()
    frames = {id(page.pending[0]) for page in pages}
    assert all(len(page.pending) == 1 for page in pages) and len(frames) == 1
    assert len(json.loads(pages[0].pending[0])["items"]) == 200
