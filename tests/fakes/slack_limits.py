"""Slack's documented Web API rate limits, as the Slack fake enforces them.

From docs.slack.dev/apis/web-api/rate-limits: limits apply "per API method per workspace per
app"; Tier 3 is 50+ calls a minute ("sporadic bursts are welcome"), Tier 4 100+;
``chat.postMessage`` is special: "generally one message per second per channel", short bursts
allowed, plus a workspace-wide limit. A refused call gets HTTP 429 with ``Retry-After`` in
whole seconds and ``{"ok": false, "error": "ratelimited"}``.

Each limit is a sliding window (``calls`` in any ``window_s``), per workspace or per
channel. ``time_scale`` runs every limit that many times faster, so a test of a 500-job burst
takes seconds; ``Retry-After`` stays whole real seconds, as Slack sends it.
The fake also checks the client: a call of a method before the ``Retry-After`` it was given
for that method has passed is a violation ("unhonoured"), answered with another 429.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Limit:
    calls: int  # at most this many ...
    window_s: float  # ... in any window this long
    scope: Literal["workspace", "channel"] = "workspace"


# The documented floors, read literally: "50+ per minute" is 50 in any minute (the "+" is
# Slack's headroom, not ours to count on); chat.postMessage's "1 per second, short bursts
# allowed" is 5 in any 5 s per channel.
DOCUMENTED: Mapping[str, Limit] = {
    "chat.postMessage": Limit(5, 5.0, "channel"),
    "chat.update": Limit(50, 60.0),  # Tier 3
    "chat.delete": Limit(50, 60.0),  # Tier 3
    "files.getUploadURLExternal": Limit(100, 60.0),  # Tier 4
    "files.completeUploadExternal": Limit(100, 60.0),  # Tier 4
    "files.info": Limit(100, 60.0),  # Tier 4
    "conversations.history": Limit(50, 60.0),  # Tier 3 (Marketplace apps)
    "conversations.replies": Limit(50, 60.0),  # Tier 3 (Marketplace apps)
}

# Transit and scheduling slack between the fake's clock and the client's: a call that arrives
# this soon after a 429 crossed it on the wire (it was sent before the client could know).
IN_FLIGHT_S = 0.25
TOLERANCE_S = 0.05


class _Window:
    def __init__(self, limit: Limit, scale: float) -> None:
        self.calls = limit.calls
        self.window = limit.window_s / scale
        self.times: deque[float] = deque()

    def take(self, now: float) -> float:
        """0 when the call fits, else the seconds until it would."""
        while self.times and self.times[0] <= now - self.window:
            self.times.popleft()
        if len(self.times) < self.calls:
            self.times.append(now)
            return 0.0
        return self.times[0] + self.window - now


class RateLimits:
    """The fake's limits and the holds it announced with each 429."""

    def __init__(
        self,
        limits: Mapping[str, Limit] | None = None,
        *,
        time_scale: float = 1.0,
        in_flight_s: float = IN_FLIGHT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = dict(DOCUMENTED if limits is None else limits)
        # A busy event loop (the fake runs in the bot's own, in a test) delays both the
        # client's reading of a 429 and the fake's reading of the calls that crossed it.
        self.in_flight_s = in_flight_s
        self.time_scale = time_scale
        self._clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}
        self._announced: dict[str, tuple[float, float]] = {}  # method -> (at, until)
        self.refused: dict[str, int] = {}  # method -> 429s answered
        self.unhonoured: list[str] = []  # calls sent inside a Retry-After they were given

    def check(self, method: str, channel: str) -> int | None:
        """None: the call may proceed; else the Retry-After (whole seconds) of a 429."""
        now = self._clock()
        at, until = self._announced.get(method, (0.0, 0.0))
        if now < until - TOLERANCE_S:
            if now > at + self.in_flight_s:
                self.unhonoured.append(
                    f"{method} sent {until - now:.2f} s before its Retry-After had passed"
                )
            return self._refuse(method, until - now, now)
        limit = self.limits.get(method)
        if limit is None:
            return None
        key = (method, channel if limit.scope == "channel" else "")
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(limit, self.time_scale)
        wait = window.take(now)
        if wait <= 0:
            return None
        return self._refuse(method, wait, now)

    def _refuse(self, method: str, wait: float, now: float) -> int:
        seconds = max(1, math.ceil(wait))
        _at, until = self._announced.get(method, (0.0, 0.0))
        if now + seconds > until:
            self._announced[method] = (now, now + seconds)
        self.refused[method] = self.refused.get(method, 0) + 1
        return seconds


__all__ = ["DOCUMENTED", "Limit", "RateLimits"]
