"""Live updates as the hub sends them (adapters/web/live.py): deltas, coalescing, removal.

Pure: no server, no core. A subscriber here is an open page; ``take`` is what its socket sends.
"""

from __future__ import annotations

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


async def frame(sub: Subscriber) -> list[dict[str, Any]]:
    encoded = await sub.take(flush_s=0)
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
    [whole] = await frame(page)
    # Whole, less its empty fields (a page reads a missing field as empty).
    assert whole == {
        "op": "card",
        "reply": {"ref": "a", "seq": 1, "state": "queued", "position": 3, "text": "job a"},
    }
    hub.publish("general", card("a", 2, state="running", progress=0.4))
    [delta] = await frame(page)
    assert delta == {
        "op": "delta",
        "ref": "a",
        "seq": 2,
        "set": {"state": "running", "progress": 0.4, "position": None},
    }
    # An update that changes nothing is not sent at all.
    hub.publish("general", card("a", 3, state="running", progress=0.4))
    assert not page.pending


async def test_a_burst_for_one_card_leaves_as_one_item_in_its_newest_state() -> None:
    hub = Hub()
    page = Subscriber("alice", joined_seq=0)
    hub.subscribe("general", page)
    hub.publish("general", card("a", 1))
    hub.publish("general", card("b", 2))
    for seq, progress in enumerate((0.1, 0.2, 0.3), start=3):
        hub.publish("general", card("a", seq, state="running", progress=progress))
    items = await frame(page)
    # One frame; "a" once, whole (its base was still pending), with the last progress.
    assert [(i["op"], i["reply"]["ref"]) for i in items] == [("card", "b"), ("card", "a")]
    assert items[1]["reply"]["progress"] == 0.3


async def test_only_the_pages_of_that_channel_get_it() -> None:
    hub = Hub()
    here, there = Subscriber("alice"), Subscriber("bob")
    hub.subscribe("general", here)
    hub.subscribe("sandbox", there)
    hub.publish("general", card("a", 1))
    assert here.pending and not there.pending


async def test_a_card_known_from_history_gets_its_next_update_whole() -> None:
    hub = Hub()
    early = Subscriber("alice", joined_seq=0)
    hub.subscribe("general", early)
    hub.publish("general", card("a", 1))
    await frame(early)
    # This page loaded "a" from history (rendered apart from the live stream).
    late = Subscriber("bob", joined_seq=2)
    hub.subscribe("general", late)
    hub.publish("general", card("a", 3, state="running"))
    assert [i["op"] for i in await frame(early)] == ["delta"]
    assert [i["op"] for i in await frame(late)] == ["card"]
    hub.publish("general", card("a", 4, state="done"))
    assert [i["op"] for i in await frame(late)] == ["delta"]


async def test_an_older_state_arriving_late_is_ignored() -> None:
    hub = Hub()
    page = Subscriber("alice")
    hub.subscribe("general", page)
    hub.publish("general", card("a", 5, state="done"))
    await frame(page)
    hub.publish("general", card("a", 4, state="queued"))
    assert not page.pending


async def test_remove_private_items_and_the_badge() -> None:
    hub = Hub()
    alice, bob = Subscriber("alice"), Subscriber("bob")
    hub.subscribe("general", alice)
    hub.subscribe("general", bob)
    hub.publish("general", card("a", 1))
    hub.remove("general", "a")  # replaces the pending card: the page never sees it
    assert await frame(bob) == [{"op": "remove", "ref": "a"}]
    hub.send_to("general", "alice", "p:9", {"op": "card", "reply": {"text": "only you"}})
    hub.send_to_user("alice", "quota", {"op": "quota", "quota": "49 of 50 images left"})
    items = await frame(alice)
    assert items[-2:] == [
        {"op": "card", "reply": {"text": "only you"}},
        {"op": "quota", "quota": "49 of 50 images left"},
    ]
    assert not bob.pending


async def test_a_page_too_far_behind_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "SUBSCRIBER_QUEUE", 2)
    hub = Hub()
    page = Subscriber("alice")
    hub.subscribe("general", page)
    hub.publish("general", card("a", 1))
    hub.publish("general", card("b", 2))
    hub.publish("general", card("a", 3, state="running"))  # replacing one never overflows
    assert not page.overflowed
    hub.publish("general", card("c", 4))
    assert page.overflowed and await page.take(flush_s=0) is None
    assert page not in hub.subscribers("general")


async def test_updates_wait_a_moment_to_share_a_frame() -> None:
    hub = Hub()
    page = Subscriber("alice")
    hub.subscribe("general", page)
    hub.publish("general", card("a", 1))
    taking = page.take(flush_s=0.05)
    hub.publish("general", card("b", 2))
    encoded = await taking
    assert encoded is not None and len(json.loads(encoded)["items"]) == 2


async def test_two_changes_while_waiting_leave_as_one_delta() -> None:
    hub = Hub()
    pages = [Subscriber(name) for name in ("alice", "bob")]
    for page in pages:
        hub.subscribe("general", page)
    hub.publish("general", card("a", 1, position=5))
    for page in pages:
        await frame(page)
    hub.publish("general", card("a", 2, position=4, text="job a, #4"))
    hub.publish("general", card("a", 3, position=3, text="job a, #3"))
    hub.publish(
        "general", card("a", 4, position=3, text="job a, #3", progress=0.0, state="running")
    )
    first, second = [await frame(page) for page in pages]
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
    # One encoding for both pages.
    assert pages[0].pending == pages[1].pending == {}
