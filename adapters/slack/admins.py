"""Who is a Slack admin: ``users.info``, cached, failing closed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.poster import slack_error

log = logging.getLogger(__name__)

ADMIN_TTL_S = 300.0  # Slack admins change rarely; five minutes bounds a revoked admin's reach
ADMIN_CACHE_MAX = 10_000


class AdminCache:
    """``users.info`` -> is the user a workspace admin or owner? Cached, fail closed."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        ttl: float = ADMIN_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[bool, float]] = {}
        # One users.info per user at a time: a burst of one person's commands asks once.
        self._asking: dict[tuple[str, str], asyncio.Task[bool]] = {}

    async def is_admin(self, team_id: str, user_id: str) -> bool:
        key = (team_id, user_id)
        hit = self._entries.get(key)
        if hit is not None and hit[1] > self._clock():
            return hit[0]
        task = self._asking.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._ask(key))
            self._asking[key] = task
            task.add_done_callback(lambda _: self._asking.pop(key, None))
        return await asyncio.shield(task)

    async def _ask(self, key: tuple[str, str]) -> bool:
        user_id = key[1]
        try:
            resp = await self._client.users_info(user=user_id)
        except SlackApiError as exc:
            log.warning(
                "users.info failed (%s); treating the user as not an admin", slack_error(exc)
            )
            return False
        except Exception as exc:  # network, timeout, a malformed answer: all fail closed
            log.warning(
                "users.info failed (%s); treating the user as not an admin", type(exc).__name__
            )
            return False
        user = resp.get("user") or {}
        flag = bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))
        now = self._clock()
        if len(self._entries) >= ADMIN_CACHE_MAX:
            self._entries = {k: v for k, v in self._entries.items() if v[1] > now}
            if len(self._entries) >= ADMIN_CACHE_MAX:
                self._entries.clear()
        self._entries[key] = (flag, now + self._ttl)
        return flag
