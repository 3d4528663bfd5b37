"""Discord under a burst: status edits within the channel's budget, discord.py's buckets.

Through discord.py against the Discord fake, which limits message edits per channel the way
Discord does (``tests/fakes/discord_limits.py``: a fixed window, with X-RateLimit headers on
every answer and 429 with ``retry_after`` past it) here 10 times faster, the bot's budget
scaled alike. discord.py waits out an exhausted bucket from those headers by itself, so the
adapter adds nothing of its own: the core only has to keep its edits few.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import discord
import pytest

from adapters.discord.adapter import ImagineClient
from bot.app import App
from tests.conftest import make_settings
from tests.fakes.discord_api import TOKEN, DiscordFake
from tests.fakes.discord_limits import EditLimit
from tests.slack_burst import QuickProvider

SCALE = 10.0


@pytest.fixture(autouse=True)
def _restore_discord_globals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket,
        "DEFAULT_GATEWAY",
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
    )


async def test_a_burst_in_one_channel_keeps_edits_within_budget_and_honours_429(
    tmp_path: Path,
) -> None:
    async with DiscordFake() as fake:
        fake.edit_limit = EditLimit(5, 5.0 / SCALE)
        env = {
            "DISCORD_TOKEN": TOKEN,
            "DISCORD_API_BASE_URL": fake.base_url,
            "DISCORD_GATEWAY_URL": fake.gateway_url,
        }
        settings = make_settings(
            tmp_path,
            {
                "grammar": {"base_side": 256},
                "providers": {"default": "quick"},
                "jobs": {"max_running_per_user": 1},
                "discord": {"status_edits_per_channel_per_min": 30.0 * SCALE},
            },
            env,
        )
        jobs = 24
        users = [f"14000000000000001{i:02d}" for i in range(6)]
        provider = QuickProvider(latency=0.05, slots=2)  # a queue forms: places change
        async with App.open(settings, extra_providers={"quick": provider}) as app:
            client = ImagineClient(app)
            try:
                await client.login(TOKEN)
                for i in range(jobs):
                    payload = fake.slash(
                        "imagine", {"prompt": f"a red fox {i} --n 1"}, user_id=users[i % 6]
                    )
                    client._connection.parse_interaction_create(payload)  # type: ignore[arg-type]
                await fake.wait_for(
                    lambda: sum(1 for m in fake.messages.values() if m.files) >= jobs, 60.0
                )
                await app.runner.wait_idle(30)
                await asyncio.sleep(0.3)
            finally:
                await client.close()
        edits = [
            r
            for r in fake.requests
            if r.method == "PATCH" and "/channels/" in r.path and "/messages/" in r.path
        ]
        per_message = Counter(r.path.rsplit("/", 1)[-1] for r in edits)
        print(
            f"\ndiscord burst: {jobs} jobs, {len(edits)} edits "
            f"(max {max(per_message.values())} per message), "
            f"{fake.edit_limit.refused} answered 429"
        )
        assert fake.violations == [] and fake.edit_limit.unhonoured == []
        # At most three best-effort edits and the settling one per status message, 429s
        # (waited out by discord.py, then retried) included.
        assert max(per_message.values()) <= 4 + fake.edit_limit.refused
        assert len(edits) <= jobs * 4 + fake.edit_limit.refused
