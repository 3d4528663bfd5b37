"""Live updates for open pages: only to the pages showing that channel, as deltas, coalesced.

Every open page is a :class:`Subscriber` of one channel. :meth:`Hub.publish` takes the newest
state of a card (a message keyed by its ``ref``) and works out, once for all pages, what
changed since the last state it published: a new card goes out whole, a known one as a delta of
the fields that changed (a progress step is ``{"progress": 0.4}``, not the whole card), and an
update that changes nothing goes nowhere.

Updates are coalesced per channel, not per page: a channel's pending items wait a moment
(:meth:`Hub.flush_s`: 0.1 s, longer with many pages open) and then leave as one frame, built
once and handed to every page of the channel as the same string; a card updated twice
meanwhile is sent once, in its newest state (two deltas merge into one). Publishing is a
dictionary update whatever the number of pages, so a burst of 200 jobs in front of 200 pages
costs the event loop a few frames per page, not 40 000 queue operations, and it stays free to
accept the next command.

A page knows a card's base when it saw the card whole on its socket. A card it has only from
the history it loaded (rendered apart from the live stream) gets its next update whole, then
deltas: such a page, and one with private items waiting (its ephemeral replies, its badge),
gets a frame of its own; items published before it subscribed are not sent to it (its history,
read after subscribing, is at least as new).

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

FLUSH_S = 0.1  # how long a channel's updates may wait to share one frame, at least
# A budget of frames per second over all open pages: with many pages each waits a little longer
# (200 pages: 0.2 s), so the sockets never take the loop from the people pressing Enter.
FRAMES_PER_S = 1000
FRAMES_BEHIND = 50  # frames waiting for one page (its socket is slow) before it is dropped
CARDS_KEPT = 2000  # per channel: the last state of this many cards, to compute deltas
_SKIP = frozenset({"seq"})
_NEVER = float("inf")


class Entry:
    """One item waiting to be sent: a whole card, a delta, or a ready-made item. JSON-encoded
    once, when first sent, whatever the number of pages."""

    __slots__ = ("_encoded", "delta", "message", "ref", "seq")

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
        """This pending delta followed by ``later``'s, as one delta."""
        assert self.delta is not None and later.delta is not None
        return Entry(delta={**self.delta, **later.delta}, ref=later.ref, seq=later.seq)


@dataclass(eq=False)
class Subscriber:
    """One open page: who is looking (for private replies and the badge), since when, and
    the frames it has yet to be sent. A page that falls too far behind is dropped (it
    reconnects and reloads the channel's history) rather than buffering without bound."""

    user_id: str
    joined_seq: int = 0
    joined_at: int = 0  # the hub's count of updates when it subscribed
    frames: list[str] = field(default_factory=list)
    private: dict[str, str] = field(default_factory=dict)  # its own items, until the flush
    upgraded: set[str] = field(default_factory=set)  # history cards since sent whole
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    overflowed: bool = False
    closed: bool = False

    @property
    def pending(self) -> list[str]:
        """Frames ready for this page and not yet taken (tests and diagnostics)."""
        return self.frames

    def offer(self, frame: str) -> bool:
        if len(self.frames) >= FRAMES_BEHIND:
            self.overflowed = True
            self.wake.set()
            return False
        self.frames.append(frame)
        self.wake.set()
        return True

    async def take(self) -> str | None:
        """The next frame, once there is one. None when the page is to be dropped."""
        while not self.frames and not self.overflowed and not self.closed:
            self.wake.clear()
            await self.wake.wait()
        if self.overflowed or self.closed:
            return None
        return self.frames.pop(0)


@dataclass
class _Card:
    message: Message
    first_seq: int  # the seq it was first published whole with


@dataclass
class _Pending:
    """A channel's item waiting for the next frame: what most pages get (``entry``), and the
    card whole for a page that does not know its base."""

    entry: Entry
    whole: Entry | None  # None: not a card (a removal)
    first_seq: int
    at: int  # the hub's count of updates when it last changed


@dataclass
class _Channel:
    subscribers: set[Subscriber] = field(default_factory=set)
    cards: OrderedDict[str, _Card] = field(default_factory=OrderedDict)
    pending: dict[str, _Pending] = field(default_factory=dict)
    private_due: bool = False
    flush: asyncio.TimerHandle | None = None


def _empty(value: object) -> bool:
    return value is None or value is False or (isinstance(value, (str, list, dict)) and not value)


def _compact(message: Message | None) -> Message:
    """A card without its empty fields (a page reads a missing field as empty): a burst of
    new cards in front of many pages is mostly bytes."""
    return {k: v for k, v in (message or {}).items() if not _empty(v)}


def _frame(items: list[str]) -> str:
    return '{"type":"batch","items":[' + ",".join(items) + "]}"


class Hub:
    """The open pages of each channel, the last state of each card shown there, and what is
    waiting for the next frame."""

    def __init__(self) -> None:
        self._channels: dict[str, _Channel] = {}
        self._updates = 0

    def _channel(self, channel: str) -> _Channel:
        found = self._channels.get(channel)
        if found is None:
            found = self._channels[channel] = _Channel()
        return found

    def subscribe(self, channel: str, sub: Subscriber) -> None:
        sub.joined_at = self._updates
        self._channel(channel).subscribers.add(sub)

    def unsubscribe(self, channel: str, sub: Subscriber) -> None:
        sub.closed = True
        sub.wake.set()
        found = self._channels.get(channel)
        if found is not None:
            found.subscribers.discard(sub)

    def subscribers(self, channel: str) -> tuple[Subscriber, ...]:
        found = self._channels.get(channel)
        return tuple(found.subscribers) if found else ()

    def count(self) -> int:
        return sum(len(c.subscribers) for c in self._channels.values())

    def flush_s(self) -> float:
        """How long a channel's updates wait to share a frame, now."""
        return max(FLUSH_S, self.count() / FRAMES_PER_S)

    def waiting(self, channel: str) -> list[str]:
        """The refs and keys waiting for the channel's next frame (tests and diagnostics)."""
        found = self._channels.get(channel)
        return list(found.pending) if found else []

    def publish(self, channel: str, message: Message) -> None:
        """A card's newest state, to every page of ``channel``."""
        ref = str(message["ref"])
        chan = self._channel(channel)
        cards = chan.cards
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
        if not chan.subscribers:
            return  # nobody is looking: the card's state is kept for the next delta only
        self._updates += 1
        whole = Entry(message=message)
        key = f"c:{ref}"
        before = chan.pending.pop(key, None)  # a newer state goes to the end: items in order
        if delta is None or before is None:
            entry = whole if delta is None else Entry(delta=delta, ref=ref, seq=message["seq"])
        elif before.entry.delta is not None:
            entry = before.entry.then(Entry(delta=delta, ref=ref, seq=message["seq"]))
        else:
            entry = whole  # a whole card or a removal still waiting: send the newest whole
        chan.pending[key] = _Pending(entry, whole, cards[ref].first_seq, self._updates)
        self._schedule(channel, chan)

    def send_to(self, channel: str, user_id: str, key: str, item: Message) -> None:
        """A private item (an ephemeral reply, the quota badge) to that user's pages only."""
        chan = self._channels.get(channel)
        if not user_id or chan is None:
            return
        encoded: str | None = None
        for sub in chan.subscribers:
            if sub.user_id == user_id:
                encoded = encoded or json.dumps(item, separators=(",", ":"))
                sub.private.pop(key, None)
                sub.private[key] = encoded
                chan.private_due = True
        if encoded is not None:
            self._schedule(channel, chan)

    def send_to_user(self, user_id: str, key: str, item: Message) -> None:
        for channel in tuple(self._channels):
            self.send_to(channel, user_id, key, item)

    def remove(self, channel: str, ref: str) -> None:
        """Take a card off every page of the channel."""
        chan = self._channels.get(channel)
        if chan is None:
            return
        chan.cards.pop(ref, None)
        if not chan.subscribers:
            return
        self._updates += 1
        encoded = json.dumps({"op": "remove", "ref": ref}, separators=(",", ":"))
        chan.pending.pop(f"c:{ref}", None)
        chan.pending[f"c:{ref}"] = _Pending(Entry(encoded=encoded), None, 0, self._updates)
        self._schedule(channel, chan)

    def _schedule(self, channel: str, chan: _Channel) -> None:
        if chan.flush is None:
            loop = asyncio.get_running_loop()
            chan.flush = loop.call_later(self.flush_s(), self.flush, channel)

    def flush(self, channel: str | None = None) -> None:
        """Send what is waiting now: one frame per page of ``channel`` (default: every
        channel), the same string for every page in the same situation."""
        for name in (channel,) if channel is not None else tuple(self._channels):
            chan = self._channels.get(name)
            if chan is not None:
                self._flush(chan)

    def _flush(self, chan: _Channel) -> None:
        if chan.flush is not None:
            chan.flush.cancel()
            chan.flush = None
        pending, chan.pending = chan.pending, {}
        if not pending and not chan.private_due:
            return
        chan.private_due = False
        records = list(pending.values())
        oldest = min((r.at for r in records), default=self._updates + 1)
        oldest_base = min(
            (r.first_seq for r in records if r.entry.delta is not None), default=_NEVER
        )
        shared: list[str] | None = None
        shared_frame: str | None = None
        dropped: list[Subscriber] = []
        for sub in chan.subscribers:
            if oldest > sub.joined_at and oldest_base > sub.joined_seq:
                if shared is None:
                    shared = [r.entry.encoded() for r in records]
                items = shared
            else:
                items = self._items_for(sub, records)
            if sub.private:
                items = [*items, *sub.private.values()]
                sub.private = {}
            if not items:
                continue
            if items is shared:
                shared_frame = shared_frame or _frame(shared)
                frame = shared_frame
            else:
                frame = _frame(items)
            if not sub.offer(frame):
                dropped.append(sub)
        for sub in dropped:
            chan.subscribers.discard(sub)

    @staticmethod
    def _items_for(sub: Subscriber, records: list[_Pending]) -> list[str]:
        """The items of a frame for a page that joined lately or loaded some cards from
        its history."""
        items: list[str] = []
        for r in records:
            if r.at <= sub.joined_at:
                continue  # published before this page subscribed: its history has it
            entry = r.entry
            stale_base = entry.delta is not None and r.first_seq <= sub.joined_seq
            if stale_base and entry.ref not in sub.upgraded and r.whole is not None:
                sub.upgraded.add(entry.ref)
                entry = r.whole
            items.append(entry.encoded())
        return items

    def users_of(self, channel: str | None = None) -> set[str]:
        if channel is not None:
            chans = [self._channels[channel]] if channel in self._channels else []
        else:
            chans = list(self._channels.values())
        return {s.user_id for c in chans for s in c.subscribers if s.user_id}

    def close(self) -> None:
        """Cancel the pending flushes (the server is going)."""
        for chan in self._channels.values():
            if chan.flush is not None:
                chan.flush.cancel()
                chan.flush = None


__all__ = ["FLUSH_S", "FRAMES_BEHIND", "Entry", "Hub", "Message", "Subscriber"]
