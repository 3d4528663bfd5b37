"""Discord sharding through the real discord.py, against the fake Discord's gateway.

``[discord] shards`` makes ``serve`` build an ``AutoShardedClient``: "auto" takes the count
that ``GET /gateway/bot`` recommends, a number with ``shard_ids`` connects only those shards,
and the fake routes each guild's events to shard ``(guild_id >> 22) % num_shards`` as
Discord does, so an interaction only reaches the process holding its guild's shard.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import discord
import pytest

from adapters.discord import ADAPTER
from adapters.discord.shards import ShardedClient
from bot.app import App
from bot.config import load_settings
from bot.doctor import check_platform
from bot.errors import ConfigError
from tests.conftest import make_settings
from tests.fakes.discord_api import GUILD_ID, TOKEN, DiscordFake
from tests.fakes.discord_gateway import shard_of
from tests.test_discord import FAST, env_for, result_posts


@pytest.fixture(autouse=True)
def _restore_discord_globals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket,
        "DEFAULT_GATEWAY",
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
    )


@pytest.fixture
async def fake() -> AsyncIterator[DiscordFake]:
    async with DiscordFake() as f:
        f.max_concurrency = 16  # a large bot's session start limit: shards start together
        yield f


def guild_on(shard: int, num_shards: int, n: int = 0) -> str:
    """A guild id that Discord routes to ``shard`` of ``num_shards``."""
    return str((10**14 * num_shards * (n + 1) + shard) << 22)


def sharded(tmp_path: Path, fake: DiscordFake, **discord_settings: Any) -> Any:
    return make_settings(tmp_path, {**FAST, "discord": discord_settings}, env_for(fake))


@asynccontextmanager
async def serving(settings: Any) -> AsyncIterator[tuple[App, list[str]]]:
    """``serve`` in a task until it said ready; cancelled on the way out."""
    async with App.open(settings) as app:
        lines: list[str] = []
        ready = asyncio.Event()

        def on_ready(text: str) -> None:
            lines.append(text)
            ready.set()

        task = asyncio.create_task(ADAPTER.serve(app, app.settings, on_ready))
        try:
            waiter = asyncio.ensure_future(ready.wait())
            done, _ = await asyncio.wait(
                {task, waiter}, timeout=20, return_when=asyncio.FIRST_COMPLETED
            )
            waiter.cancel()
            if task in done:
                task.result()  # serve ended early: its error
            assert ready.is_set(), "serve did not get ready"
            yield app, lines
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)


async def answered(fake: DiscordFake, payload: dict[str, Any]) -> None:
    iid = payload["id"]
    await fake.wait_for(
        lambda: fake.interactions[iid].callback and not fake.interactions[iid].loading
    )


async def test_auto_takes_the_recommended_count_and_interactions_reach_the_core(
    tmp_path: Path, fake: DiscordFake
) -> None:
    fake.recommended_shards = 3
    async with serving(sharded(tmp_path, fake, shards="auto")) as (_, lines):
        assert sorted(s for s in fake.identifies if s) == [(0, 3), (1, 3), (2, 3)]
        assert None not in fake.identifies
        assert any(r.path == "/api/v10/gateway/bot" for r in fake.requests)
        assert lines == [
            "connected to the gateway as imagine (shards: Discord's recommended count)"
        ]

        # /imagine in the guild: Discord hands it to the guild's shard only, and the core's
        # answer and the poster's result come back over REST as without shards.
        payload = fake.slash("imagine", {"prompt": "a lighthouse"})
        await fake.dispatch("INTERACTION_CREATE", payload)
        assert fake.routed[-1] == ("INTERACTION_CREATE", (shard_of(GUILD_ID, 3), 3))
        await answered(fake, payload)
        posts = await fake.wait_for(lambda: result_posts(fake))
        job = posts[0].custom_ids()[0].split(":")[1]

        # A button on the result, delivered through the gateway too.
        click = fake.click(f"info:{job}", posts[0])
        await fake.dispatch("INTERACTION_CREATE", click)
        await fake.wait_for(lambda: fake.interactions[click["id"]].callback)

        # A DM goes to shard 0 only, and is answered too.
        dm = fake.slash("quota", guild=False)
        await fake.dispatch("INTERACTION_CREATE", dm)
        assert fake.routed[-1] == ("INTERACTION_CREATE", (0, 3))
        await answered(fake, dm)
    assert fake.violations == []


async def test_a_fixed_count_with_a_range_connects_only_those_shards(
    tmp_path: Path, fake: DiscordFake
) -> None:
    mine = shard_of(GUILD_ID, 4)  # the shard that holds the interactions' guild
    ids = sorted({mine, (mine + 1) % 4})
    others = [s for s in range(4) if s not in ids]
    fake.guild_ids = [guild_on(s, 4) for s in range(4)]
    fake.recommended_shards = 1  # a fixed count does not ask Discord for one
    settings = sharded(tmp_path, fake, shards=4, shard_ids=ids)
    async with App.open(settings) as app:
        client = ShardedClient(app, 4, ids, label=f"shards {ids[0]}, {ids[1]} of 4")
        task = asyncio.create_task(client.start(TOKEN))
        try:
            await asyncio.wait_for(client.wait_until_ready(), 20)
            assert sorted(s for s in fake.identifies if s) == [(i, 4) for i in ids]
            # Only the guilds of this process's shards are in its cache.
            assert sorted(str(g.id) for g in client.guilds) == sorted(guild_on(s, 4) for s in ids)
            assert client.shard_count == 4 and sorted(client.shards) == ids

            payload = fake.slash("imagine", {"prompt": "a harbour at dusk"})
            await fake.dispatch("INTERACTION_CREATE", payload)
            await answered(fake, payload)
            await fake.wait_for(lambda: result_posts(fake))

            # A guild on another process's shard: this process never sees its events.
            before = len(fake.routed)
            await fake.dispatch("GUILD_CREATE", {"id": guild_on(others[0], 4, 1)})
            assert fake.routed[before:] == []
        finally:
            await client.close()
            await asyncio.wait_for(task, 10)
    assert fake.violations == []


async def test_shards_in_one_session_start_bucket_identify_five_seconds_apart(
    tmp_path: Path, fake: DiscordFake
) -> None:
    fake.max_concurrency = 1  # what most bots get: one IDENTIFY per 5 s
    async with serving(sharded(tmp_path, fake, shards=2)) as (_, lines):
        assert lines == ["connected to the gateway as imagine (shards: all 2)"]
        await fake.wait_for(lambda: len(fake.identifies) == 2)
        first, second = fake.identify_times
        assert second - first >= 5.0
    assert fake.violations == []


async def test_unsharded_is_one_plain_connection(tmp_path: Path, fake: DiscordFake) -> None:
    async with serving(make_settings(tmp_path, FAST, env_for(fake))) as (_, lines):
        assert fake.identifies == [None]
        assert lines == ["connected to the gateway as imagine"]
    assert not any(r.path.endswith("/gateway/bot") for r in fake.requests)


async def test_discord_requiring_shards_is_one_clear_line(
    tmp_path: Path, fake: DiscordFake
) -> None:
    fake.max_guilds_per_shard = 1  # stands for Discord's 2,500
    fake.guild_ids = [guild_on(0, 2), guild_on(1, 2)]
    async with App.open(make_settings(tmp_path, FAST, env_for(fake)), start=False) as app:
        with pytest.raises(ConfigError, match=re.escape('discord.shards = "auto"')):
            await asyncio.wait_for(ADAPTER.serve(app, app.settings, lambda _: None), 20)
    # ... and with the two shards Discord recommends, each holds one guild: it connects.
    fake.recommended_shards = 2
    async with serving(sharded(tmp_path / "b", fake, shards="auto")) as _:
        pass


async def test_the_fake_refuses_an_invalid_shard(fake: DiscordFake) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(fake.gateway_url) as ws:
        await ws.receive_json()  # HELLO
        await ws.send_json({"op": 2, "d": {"token": TOKEN, "shard": [4, 4], "intents": 1}})
        msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 4010


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("shard_ids = [0, 1]\n", "discord.shard_ids needs discord.shards"),
        ('shards = "auto"\nshard_ids = [0]\n', 'not "auto"'),
        (
            "shards = 4\nshard_ids = [3, 4]\n",
            "must be shard numbers 0..3 (discord.shards = 4); got 4",
        ),
        ("shards = 2\nshard_ids = [1, 1]\n", "lists a shard twice"),
        ('shards = "lots"\n', 'discord.shards must be "auto" or a whole number'),
        ("shards = 0\n", "discord.shards must be"),
        ('shards = 2\nshard_ids = ["a"]\n', "discord.shard_ids must be a list of whole numbers"),
    ],
)
def test_a_bad_shard_setting_is_one_line_naming_it(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "bot.toml"
    path.write_text("[discord]\n" + toml)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    text = str(info.value)
    assert message in text and "\n" not in text
    assert f"in {path}: [discord]" in text


def test_shard_settings_from_the_environment() -> None:
    env = {"IMAGINE_DISCORD__SHARDS": "4", "IMAGINE_DISCORD__SHARD_IDS": "2, 3"}
    plan = load_settings(None, env=env).discord.shard_plan()
    assert plan is not None and (plan.count, plan.ids) == (4, (2, 3))
    auto = load_settings(None, env={"IMAGINE_DISCORD__SHARDS": "auto"}).discord.shard_plan()
    assert auto is not None and (auto.count, auto.ids) == (None, None)
    assert load_settings(None, env={}).discord.shard_plan() is None
    with pytest.raises(ConfigError, match="IMAGINE_DISCORD__SHARD_IDS"):
        load_settings(None, env={"IMAGINE_DISCORD__SHARD_IDS": "[0]"})


async def test_doctor_shows_the_shard_setting_beside_discords_recommendation(
    tmp_path: Path, fake: DiscordFake
) -> None:
    fake.recommended_shards = 3
    settings = sharded(tmp_path, fake, shards=4, shard_ids=[0, 1])
    lines = await check_platform(ADAPTER, settings)
    assert lines[-1] == (
        True,
        "discord shards: shards 0, 1 of 4; Discord recommends 3, 16 may start per 5 s, "
        "1000 session starts left today",
    )
    unsharded = await check_platform(ADAPTER, make_settings(tmp_path, FAST, env_for(fake)))
    assert (
        unsharded[-1][0]
        and 'required from 2,500 servers: discord.shards = "auto"' in (unsharded[-1][1])
    )
