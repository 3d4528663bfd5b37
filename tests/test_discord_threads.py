"""``discord.threads``: one thread per job, through discord.py against the Discord fake.

The fake serves Start Thread from Message to its documented contract
(``tests/fakes/discord_threads.py``): the thread has the status message's id, a message holds
one thread (160004), no thread without Create Public Threads (50013).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import discord
import pytest

from adapters.discord.adapter import DiscordPoster, ImagineClient
from bot.app import App
from bot.types import Reply, Target
from tests.conftest import make_settings
from tests.fakes.discord_api import CHANNEL_ID, GUILD_ID, TOKEN, DiscordFake, Msg, payload_of
from tests.fakes.discord_threads import CREATE_PUBLIC_THREADS

ALICE = "1400000000000000001"
THREADS = {"grammar": {"base_side": 256}, "discord": {"threads": True}}


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
        f.bot_permissions |= CREATE_PUBLIC_THREADS  # as `setup discord --threads` invites it
        yield f


@asynccontextmanager
async def running(
    tmp_path: Path, fake: DiscordFake, overrides: dict[str, Any] = THREADS
) -> AsyncIterator[tuple[App, ImagineClient]]:
    env = {
        "DISCORD_TOKEN": TOKEN,
        "DISCORD_API_BASE_URL": fake.base_url,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
    }
    async with App.open(make_settings(tmp_path, overrides, env)) as app:
        client = ImagineClient(app)
        try:
            await client.login(TOKEN)
            yield app, client
        finally:
            await client.close()


def inject(client: ImagineClient, payload: dict[str, Any]) -> None:
    client._connection.parse_interaction_create(payload)  # type: ignore[arg-type]


def results(fake: DiscordFake) -> list[Msg]:
    return [m for m in fake.messages.values() if m.via == "channel" and m.files]


async def next_result(fake: DiscordFake, before: int) -> Msg:
    posts = await fake.wait_for(lambda: len(results(fake)) > before and results(fake))
    return posts[-1]  # type: ignore[no-any-return]


def posts_to(fake: DiscordFake, channel: str) -> list[Any]:
    return [
        r
        for r in fake.requests
        if r.method == "POST" and r.path.endswith(f"/channels/{channel}/messages")
    ]


async def job_row(app: App, kind: str = "imagine") -> Any:
    """The newest job of ``kind``, once its result is posted and recorded."""
    for _ in range(500):
        row = await app.store.fetchone(
            "SELECT * FROM jobs WHERE kind = ? ORDER BY created_at DESC", (kind,)
        )
        if row is not None and row["result_ref"]:
            return row
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {kind} job with a posted result")


async def test_a_jobs_result_and_children_go_in_a_thread_on_its_status_message(
    tmp_path: Path, fake: DiscordFake
) -> None:
    async with running(tmp_path, fake) as (app, client):
        inject(client, fake.slash("imagine", {"prompt": "a castle @everyone --n 2"}))
        result = await next_result(fake, 0)
        job = await job_row(app)
        status = job["status_ref"]
        assert fake.messages[status].channel_id == CHANNEL_ID  # the status stays in the channel
        # The thread hangs off the status message and carries its id; the result is in it.
        assert result.channel_id == status and status in fake.threads
        thread = fake.threads[status]
        assert thread["parent_id"] == CHANNEL_ID
        assert thread["name"].startswith("a castle")
        [start] = [r for r in fake.requests if r.path.endswith("/threads")]
        assert payload_of(start)["auto_archive_duration"] in (60, 1440, 4320, 10080)
        # Restart-proof: the thread is the status message, and the result's ref names it.
        assert job["thread_id"] is None and job["result_ref"] == f"{status}/{result.id}"
        await fake.wait_for(lambda: "2 images" in fake.messages[status].content)
        assert "@everyone" not in fake.messages[status].content.replace("@\u200beveryone", "")

        # A reroll clicked in the thread: the child lives in the thread, replies to the
        # result it came from, and the root line counts it.
        job_id = job["id"]
        inject(client, fake.click(f"reroll:{job_id}", result, user_id=ALICE))
        child_result = await next_result(fake, 1)
        child = await job_row(app, "reroll")
        assert (child["channel_id"], child["thread_id"]) == (CHANNEL_ID, status)
        assert child_result.channel_id == status
        post = [r for r in posts_to(fake, status) if payload_of(r).get("nonce")][-1]
        assert str(payload_of(post)["message_reference"]["message_id"]) == result.id
        await fake.wait_for(lambda: "1 reroll" in fake.messages[status].content)
        assert len([r for r in fake.requests if r.path.endswith("/threads")]) == 1
        assert fake.violations == []


async def test_delete_takes_down_the_result_inside_the_thread(
    tmp_path: Path, fake: DiscordFake
) -> None:
    async with running(tmp_path, fake) as (app, client):
        inject(client, fake.slash("imagine", {"prompt": "a tower --n 1"}, user_id=ALICE))
        result = await next_result(fake, 0)
        job = await job_row(app)
        inject(client, fake.click(f"delete:{job['id']}", result, user_id=ALICE))
        await fake.wait_for(lambda: result.id not in fake.messages)
        await fake.wait_for(lambda: job["status_ref"] not in fake.messages)
        assert fake.violations == []


async def test_a_thread_already_there_is_found_not_doubled(
    tmp_path: Path, fake: DiscordFake
) -> None:
    """A retry or a restart between starting the thread and posting: no memory is needed."""
    async with running(tmp_path, fake) as (_, client):
        root = fake.snowflake()
        fake.messages[root] = Msg(root, CHANNEL_ID, "status")
        target = Target("discord", GUILD_ID, CHANNEL_ID, reply_to=root)
        first = await DiscordPoster(client, threads=True).post(target, Reply("one"))
        again = await DiscordPoster(client, threads=True).post(target, Reply("two"))
        assert first and again and first.split("/")[0] == again.split("/")[0] == root
        assert fake.messages[again.split("/")[1]].channel_id == root
        # The second start was told 160004 (one thread per message) and used the thread.
        assert len([r for r in fake.requests if r.path.endswith("/threads")]) == 2
        assert list(fake.threads) == [root]
        # The poster's refs find their messages after a restart: edit and delete in the thread.
        poster = DiscordPoster(client, threads=True)
        await poster.update(target, again, Reply("edited"))
        assert fake.messages[again.split("/")[1]].content == "edited"
        await poster.delete(target, again)
        assert again.split("/")[1] not in fake.messages


async def test_without_create_public_threads_the_result_still_lands(
    tmp_path: Path, fake: DiscordFake
) -> None:
    fake.bot_permissions &= ~CREATE_PUBLIC_THREADS
    async with running(tmp_path, fake) as (app, client):
        inject(client, fake.slash("imagine", {"prompt": "a bridge --n 1"}))
        result = await next_result(fake, 0)
        job = await job_row(app)
        assert result.channel_id == CHANNEL_ID and not fake.threads
        # As without threads: the result replies to the status message.
        post = [r for r in fake.channel_posts() if payload_of(r).get("nonce")][-1]
        assert str(payload_of(post)["message_reference"]["message_id"]) == job["status_ref"]
        assert fake.violations == []


async def test_threads_off_opens_none(tmp_path: Path, fake: DiscordFake) -> None:
    async with running(tmp_path, fake, {"grammar": {"base_side": 256}}) as (_, client):
        inject(client, fake.slash("imagine", {"prompt": "a lake --n 1"}))
        result = await next_result(fake, 0)
        assert result.channel_id == CHANNEL_ID and not fake.threads
        assert not [r for r in fake.requests if r.path.endswith("/threads")]
