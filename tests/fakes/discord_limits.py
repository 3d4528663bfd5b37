"""Discord's per-route rate limit on message edits, as the Discord fake enforces it.

Discord documents the mechanism, not the numbers ("rate limits should not be hard coded into
your app ... parse response headers", docs.discord.com/developers/topics/rate-limits): each
answer on a limited route carries ``X-RateLimit-Limit``, ``-Remaining``, ``-Reset``,
``-Reset-After`` and ``-Bucket``, limits are per top-level resource (the channel, for a
message edit), and a refused call gets 429 with ``{"message", "retry_after", "global"}``,
``Retry-After`` and ``X-RateLimit-Scope: user``. The number here is the one Discord is known
to apply to edits: about 5 per 5 s in a channel. discord.py reads these headers and waits out
an exhausted bucket by itself; the fake also flags a call that comes inside a
``retry_after`` it was given ("unhonoured").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

IN_FLIGHT_S = 0.25  # a call this soon after a 429 crossed it on the wire
TOLERANCE_S = 0.05


@dataclass
class _Bucket:
    start: float
    count: int = 0
    refused_until: float = 0.0
    refused_at: float = 0.0


class EditLimit:
    """``calls`` edits per ``window_s`` in each channel (a fixed window, as Discord resets)."""

    bucket_hash = "fake-edit-bucket"

    def __init__(
        self,
        calls: int = 5,
        window_s: float = 5.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.calls, self.window = calls, window_s
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self.refused = 0
        self.unhonoured: list[str] = []

    def check(self, channel: str) -> tuple[dict[str, str], float | None]:
        """The headers for this answer, and ``retry_after`` when it is refused."""
        now = self._clock()
        b = self._buckets.get(channel)
        if b is None or now >= b.start + self.window:
            b = self._buckets[channel] = _Bucket(now)
        reset_after = b.start + self.window - now
        if now < b.refused_until - TOLERANCE_S and now > b.refused_at + IN_FLIGHT_S:
            self.unhonoured.append(
                f"edit in {channel} {b.refused_until - now:.2f} s inside its retry_after"
            )
        headers = {
            "X-RateLimit-Limit": str(self.calls),
            "X-RateLimit-Bucket": self.bucket_hash,
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
        }
        if b.count >= self.calls:
            self.refused += 1
            b.refused_at, b.refused_until = now, b.start + self.window
            headers.update(
                {
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Scope": "user",
                    "Retry-After": str(max(1, round(reset_after + 0.5))),
                }
            )
            return headers, reset_after
        b.count += 1
        headers["X-RateLimit-Remaining"] = str(self.calls - b.count)
        return headers, None


__all__ = ["EditLimit"]
