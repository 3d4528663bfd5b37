"""Slack's rate limits: paced to the documented rates, and after a 429 held method-wide, so no
call of that method goes out before its ``Retry-After`` has passed.

slack_sdk's :class:`AsyncRateLimitErrorRetryHandler` sleeps out the ``Retry-After`` of the one
call that was refused and retries it, but every other call of the same method, from any task,
still goes straight out (one ``chat.postMessage`` 0.5 s into a 1 s ``Retry-After``). Slack
limits per method and workspace, so the hold is per method: :class:`MethodHolds` is one
client's (one workspace's) holds, set by :class:`HoldingRateLimitHandler` when a 429 arrives
and waited for by :class:`HeldWebClient` before each Web API call.

Slack answers a burst with 429s, and a refused call costs a whole second (``Retry-After`` is in
whole seconds), so the client also paces the methods a job uses to their documented floors
(``PACED``: "per API method per workspace per app", ``chat.postMessage`` "one message per
second per channel", short bursts allowed), a little under them. slack_sdk paces nothing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pace:
    calls: int  # at most this many calls go out ...
    window_s: float  # ... in any window this long
    per_channel: bool = False


# docs.slack.dev/apis/web-api/rate-limits and each method's page: Tier 3 is "50+ per
# minute", Tier 4 "100+", chat.postMessage "1 per second per channel, short bursts allowed".
# 90 % of each, counted when a call actually goes out (so a late event loop never catches up
# in a burst), leaves room for two clocks and the wire.
PACED: Mapping[str, Pace] = {
    "chat.postMessage": Pace(4, 5.0, per_channel=True),
    "chat.update": Pace(45, 60.0),
    "chat.delete": Pace(45, 60.0),
    "files.getUploadURLExternal": Pace(90, 60.0),
    "files.completeUploadExternal": Pace(90, 60.0),
    "files.info": Pace(90, 60.0),
}


class _Window:
    def __init__(self, pace: Pace, scale: float) -> None:
        self.calls = pace.calls
        self.window = pace.window_s / scale
        self.sent: deque[float] = deque()

    def take(self, now: float) -> float:
        """0 when a call may go now (it is counted), else the seconds until one may."""
        while self.sent and self.sent[0] <= now - self.window:
            self.sent.popleft()
        if len(self.sent) < self.calls:
            self.sent.append(now)
            return 0.0
        return self.sent[0] + self.window - now


DEFAULT_RETRY_AFTER_S = 1.0  # a 429 without the header (Slack always sends it)
# Calls that waited out a hold go out spread over this share of it, not all at once (a herd
# released together would only be refused again).
SPREAD = 0.5


class MethodHolds:
    """Method name -> the time before which no call of it may be sent."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        paced: Mapping[str, Pace] = PACED,
        time_scale: float = 1.0,
    ) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}
        self._paced = paced
        self._scale = time_scale  # a test's fake Slack runs its limits faster
        self._windows: dict[tuple[str, str], _Window] = {}
        self.waits = 0  # calls that waited for a hold (a figure for the bench)
        self.early = 0  # calls sent while their method was known to be held (must stay 0)

    async def take_turn(self, method: str, channel: str) -> None:
        """Wait until this call fits its method's pace (and any hold set meanwhile)."""
        pace = self._paced.get(method)
        if pace is None:
            return
        key = (method, channel if pace.per_channel else "")
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(pace, self._scale)
        for _ in range(100_000):
            wait = window.take(self._clock())
            if wait <= 0:
                return
            await asyncio.sleep(wait + random.uniform(0.0, 0.01 * window.window))
            await self.wait(method)

    def hold(self, method: str, seconds: float) -> None:
        until = self._clock() + max(0.0, seconds)
        if until > self._until.get(method, 0.0):
            self._until[method] = until
            log.info("Slack rate-limited %s: holding its calls for %.1f s", method, seconds)

    def remaining(self, method: str) -> float:
        return max(0.0, self._until.get(method, 0.0) - self._clock())

    async def wait(self, method: str) -> None:
        """Return once ``method`` is not held (a hold set while waiting is waited out too)."""
        held = self.remaining(method)
        if held <= 0:
            return
        self.waits += 1
        for _ in range(1000):  # a hold set while waiting is waited out too
            left = self.remaining(method)
            if left <= 0:
                return
            await asyncio.sleep(left + random.uniform(0.0, SPREAD * max(left, held)))


def _channel(args: Any) -> str:
    if isinstance(args, Mapping):
        return str(args.get("channel") or args.get("channel_id") or "")
    return ""


def method_of(url: str) -> str:
    """``https://slack.com/api/chat.update?x=1`` -> ``chat.update``."""
    return url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def retry_after_s(headers: Any) -> float:
    try:
        for key, value in dict(headers or {}).items():
            if str(key).lower() == "retry-after":
                raw = value[0] if isinstance(value, list | tuple) else value
                return max(0.0, float(raw))
    except (TypeError, ValueError):
        pass
    return DEFAULT_RETRY_AFTER_S


class HoldingRateLimitHandler(AsyncRateLimitErrorRetryHandler):
    """The SDK's 429 retry, which also holds the whole method for the ``Retry-After``; it sees
    every 429, including the last one it will not retry."""

    def __init__(self, holds: MethodHolds, max_retry_count: int = 2) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.holds = holds

    async def can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is not None and response.status_code == 429:
            self.holds.hold(method_of(request.url), retry_after_s(response.headers))
        return await super().can_retry_async(
            state=state, request=request, response=response, error=error
        )

    async def prepare_for_next_attempt_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        """Wait out the method's hold (the SDK would sleep only this call's own
        ``Retry-After``, though another 429 may have held the method longer since)."""
        if response is None:
            if error is not None:
                raise error
            return
        state.next_attempt_requested = True
        method = method_of(request.url)
        await self.holds.wait(method)
        # A retry takes its turn in the method's pace like any call: a herd of refused calls
        # retried together would only be refused again.
        await self.holds.take_turn(method, _channel(request.body_params or request.data))
        state.increment_current_attempt()


class HeldWebClient(AsyncWebClient):
    """An :class:`AsyncWebClient` whose every call first waits out its method's hold."""

    holds: MethodHolds

    def __init__(self, *args: Any, holds: MethodHolds | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.holds = holds if holds is not None else MethodHolds()
        self.retry_handlers.append(HoldingRateLimitHandler(self.holds))

    async def api_call(self, api_method: str, **kwargs: Any) -> AsyncSlackResponse:
        await self.holds.wait(api_method)
        return await super().api_call(api_method, **kwargs)


__all__ = ["PACED", "HeldWebClient", "HoldingRateLimitHandler", "MethodHolds", "Pace", "method_of"]
