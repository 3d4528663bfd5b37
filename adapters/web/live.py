"""Live updates for open pages: only to the pages showing that channel, as deltas, coalesced.

Every open page is a :class:`Subscriber` of one channel. :meth:`Hub.publish` takes the newest
state of a card (a message keyed by its ``ref``) and works out, once for all pages, what
changed since the last state it published: a new card goes out whole, a known one as a delta of
the fields that changed (a progress step is ``{"progress": 0.4}``, not the whole card), and an
update that changes nothing goes nowhere. Each page's pending updates wait a moment
(:meth:`Hub.flush_s`: 0.1 s, longer with many pages open) and then leave as one frame; a card
updated twice meanwhile is sent once, in its newest state (two deltas merge into one). So a
burst of 200 jobs in front of 200 pages costs a few frames per page, not 40 000 messages, and
the event loop stays free to accept the next command.

A page knows a card's base when it saw the card whole on its socket. A card it has only from
the history it loaded (rendered apart from the live stream) gets its next update whole, then
deltas. Encodings are shared: each item is JSON-encoded once, whatever the number of pages.

Frames (JSON text)::

    {"type": "history", "channel", "replies": [...]}          first, once
    {"type": "batch", "items": [item, ...]}                   then, as things happen
    item: {"op": "card", "reply": {...}}                      a card, whole
          {"op": "delta", "ref", "seq", "set": {...}}         the fields that changed
          {"op": "remove", "ref"}                             a deleted card, on every page
          {"op": "quota", "quota": "46 of 50 images left"}    that page's own badge
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, Any]

FLUSH_S = 0.1  # how long a page's updates may wait to share one frame, at least
# A budget of frames per second over all open pages: with many pages each waits a little longer
# (200 pages: 0.2 s), so the sockets never take the loop from the people pressing Enter.
FRAMES_PER_S = 1000
SUBSCRIBER_QUEUE = 1000  # distinct cards waiting for one page before it is dropped
CARDS_KEPT = 2000  # per channel: the last state of this many cards, to compute deltas
_SKIP = frozenset({"seq"})


class Entry:
    """One item waiting to be sent: a whole card, a delta, or a ready-made private item.
    Shared by every page in the same situation, and JSON-encoded once, when first sent."""

    __slots__ = ("_encoded", "_next", "delta", "message", "ref", "seq")

    def __init__(
        self,
        *,
        message: Message | None = None,
        delta: Message | None = None,
        ref: str = "",
        seq: int = 0,
        encoded: str | None = None,
    ) -> None:
        self.message = message
        self.delta = delta
        self.ref = ref
        self.seq = seq
        self._encoded = encoded
        self._next: tuple[Entry, Entry] | None = None

    def encoded(self) -> str:
        if self._encoded is None:
            body = (
                {"op": "card", "reply": _compact(self.message)}
                if self.message is not None
                else {"op": "delta", "ref": self.ref, "seq": self.seq, "set": self.delta}
            )
            self._encoded = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        return self._encoded

    def then(self, later: Entry) -> Entry:
        """This pending delta followed by ``later``'s, as one delta (the same object for
        every page that had this one pending)."""
        if self._next is not None and self._next[0] is later:
            return self._next[1]
        assert self.delta is not None and later.delta is not None
        merged = Entry(delta={**self.delta, **later.delta}, ref=later.ref, seq=later.seq)
        self._next = (later, merged)
        return merged


@dataclass(eq=False)
class Subscriber:
    """One open page: who is looking (for private replies and the badge), since when, and
    what it has yet to be sent. A page that falls too far behind is dropped (it reconnects
    and reloads the channel's history) rather than buffering without bound."""

    user_id: str
    joined_seq: int = 0
    pending: dict[str, Entry] = field(default_factory=dict)
    upgraded: set[str] = field(default_factory=set)  # history cards since sent whole
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    overflowed: bool = False
    closed: bool = False

    def put(self, key: str, entry: Entry | str) -> bool:
        if key not in self.pending and len(self.pending) >= SUBSCRIBER_QUEUE:
            self.overflowed = True
            self.wake.set()
            return False
        self.pending.pop(key, None)  # a newer state goes to the end: items stay in order
        self.pending[key] = entry if isinstance(entry, Entry) else Entry(encoded=entry)
        self.wake.set()
        return True

    async def take(self, flush_s: float = FLUSH_S) -> str | None:
        """The next frame: every pending item, once the first has waited ``flush_s``. None
        when the page is to be dropped."""
        while not self.pending and not self.overflowed and not self.closed:
            self.wake.clear()
            await self.wake.wait()
        if flush_s > 0 and not self.overflowed and not self.closed:
            await asyncio.sleep(flush_s)
        if self.overflowed or self.closed:
            return None
        items, self.pending = self.pending.values(), {}
        return '{"type":"batch","items":[' + ",".join(e.encoded() for e in items) + "]}"


@dataclass
class _Card:
    message: Message
    first_seq: int  # the seq it was first published whole with


def _empty(value: object) -> bool:
    return value is None or value is False or (isinstance(value, (str, list, dict)) and not value)


def _compact(message: Message | None) -> Message:
    """A card without its empty fields (a page reads a missing field as empty): a burst of
    new cards in front of many pages is mostly bytes."""
    return {k: v for k, v in (message or {}).items() if not _empty(v)}


class Hub:
    """The open pages of each channel and the last state of each card shown there."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[Subscriber]] = {}
        self._cards: dict[str, OrderedDict[str, _Card]] = {}

    def subscribe(self, channel: str, sub: Subscriber) -> None:
        self._subscribers.setdefault(channel, set()).add(sub)

    def unsubscribe(self, channel: str, sub: Subscriber) -> None:
        sub.closed = True
        sub.wake.set()
        self._subscribers.get(channel, set()).discard(sub)

    def subscribers(self, channel: str) -> tuple[Subscriber, ...]:
        return tuple(self._subscribers.get(channel, ()))

    def count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    def flush_s(self) -> float:
        """How long a page's updates wait to share a frame, now."""
        return max(FLUSH_S, self.count() / FRAMES_PER_S)

    def publish(self, channel: str, message: Message) -> None:
        """A card's newest state, to every page of ``channel``."""
        ref = str(message["ref"])
        cards = self._cards.setdefault(channel, OrderedDict())
        known = cards.get(ref)
        if known is not None and message["seq"] < known.message["seq"]:
            return  # an older state arriving late (a POST answer after the socket's news)
        delta: Message | None = None
        if known is not None:
            delta = {
                k: v for k, v in message.items() if k not in _SKIP and known.message.get(k) != v
            }
            delta.update({k: None for k in known.message if k not in message})
            if not delta:
                return  # nothing changed: nothing to send
            cards[ref] = _Card(message, known.first_seq)
            cards.move_to_end(ref)
        else:
            cards[ref] = _Card(message, message["seq"])
            while len(cards) > CARDS_KEPT:
                cards.popitem(last=False)
        whole = Entry(message=message)
        change = None if delta is None else Entry(delta=delta, ref=ref, seq=message["seq"])
        first_seq = cards[ref].first_seq
        key = f"c:{ref}"
        for sub in self.subscribers(channel):
            knows_base = first_seq > sub.joined_seq or ref in sub.upgraded
            before = sub.pending.get(key)
            if change is None or not knows_base:
                entry = whole
                if change is not None:
                    sub.upgraded.add(ref)
            elif before is None:
                entry = change
            elif before.delta is not None:
                entry = before.then(change)  # two updates while waiting: one delta
            else:
                entry = whole  # a whole card still waiting: send the newest whole card
            self._put(channel, sub, key, entry)

    def send_to(self, channel: str, user_id: str, key: str, item: Message) -> None:
        """A private item (an ephemeral reply, the quota badge) to that user's pages only."""
        if not user_id:
            return
        encoded: str | None = None
        for sub in self.subscribers(channel):
            if sub.user_id == user_id:
                encoded = encoded or json.dumps(item, separators=(",", ":"))
                self._put(channel, sub, key, encoded)

    def send_to_user(self, user_id: str, key: str, item: Message) -> None:
        for channel in tuple(self._subscribers):
            self.send_to(channel, user_id, key, item)

    def remove(self, channel: str, ref: str) -> None:
        """Take a card off every page of the channel."""
        self._cards.get(channel, OrderedDict()).pop(ref, None)
        encoded = json.dumps({"op": "remove", "ref": ref}, separators=(",", ":"))
        for sub in self.subscribers(channel):
            self._put(channel, sub, f"c:{ref}", encoded)

    def _put(self, channel: str, sub: Subscriber, key: str, entry: Entry | str) -> None:
        if not sub.put(key, entry):
            self._subscribers.get(channel, set()).discard(sub)

    def users_of(self, channel: str | None = None) -> set[str]:
        subs = (
            self.subscribers(channel)
            if channel
            else [s for group in self._subscribers.values() for s in group]
        )
        return {s.user_id for s in subs if s.user_id}


__all__ = ["FLUSH_S", "SUBSCRIBER_QUEUE", "Entry", "Hub", "Message", "Subscriber"]
