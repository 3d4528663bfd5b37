"""Defaults and the family tree through real discord.py against the fake Discord."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from tests.fakes.discord_api import EPHEMERAL, MANAGE_GUILD, DiscordFake, payload_of
from tests.test_discord import ALICE, imagine, inject, running
from tests.test_discord import _restore_discord_globals as _restore  # noqa: F401 (autouse)


@pytest.fixture
async def fake() -> AsyncIterator[DiscordFake]:
    async with DiscordFake() as f:
        yield f


async def test_settings_form_on_discord_then_a_job_uses_it(
    tmp_path: Path, fake: DiscordFake
) -> None:
    async with running(tmp_path, fake) as (app, client):
        inject(client, fake.slash("imagine", {"prompt": "settings"}, user_id=ALICE))
        shown = await fake.wait_for(
            lambda: [m for m in fake.messages.values() if "settings:yourdefaults" in m.custom_ids()]
        )
        click = fake.click("settings:yourdefaults", shown[-1], user_id=ALICE)
        inject(client, click)
        await fake.wait_for(lambda: fake.callbacks(click["id"]))
        [modal] = fake.callbacks(click["id"])
        assert modal["type"] == 9  # a modal, answered directly to the click
        inputs = [c["component"]["custom_id"] for c in modal["data"]["components"]]
        assert inputs == ["n", "ar", "style", "engine", "remix"]
        values = {"n": "1", "ar": "16:9", "style": "default", "engine": "default", "remix": "on"}
        inject(client, fake.submit("settings:yourdefaults", values, user_id=ALICE))
        await fake.wait_for(
            lambda: any("Your defaults: n=1" in m.content for m in fake.messages.values())
        )
        job_id, _ = await imagine(client, fake, "a castle")
        job = await app.runner.load(job_id)
        assert job is not None and job.n == 1 and job.request.remix
        assert job.request.width > job.request.height
        before = len(fake.messages)
        inject(client, fake.slash("imagine", {"prompt": "tree " + job_id}, user_id=ALICE))
        posts = await fake.wait_for(
            lambda: [m for m in list(fake.messages.values())[before:] if m.files]
        )
        assert posts and "Family of job" in posts[-1].content
        assert fake.violations == []


async def test_an_admin_makes_a_picked_avatar_the_server_icon_and_the_bot_asks_first(
    tmp_path: Path, fake: DiscordFake
) -> None:
    async with running(tmp_path, fake) as (app, client):
        job_id, result = await imagine(client, fake, "avatar a fox in a scarf")
        pick_click = fake.click(f"pick:{job_id}:1", result, user_id=ALICE)
        inject(client, pick_click)
        [pick] = await fake.wait_for(
            lambda: [m for m in fake.messages.values() if f"icon:{job_id}:1" in m.custom_ids()]
        )

        async def press(permissions: int) -> str:
            click = fake.click(f"icon:{job_id}:1", pick, user_id=ALICE, permissions=permissions)
            inject(client, click)
            [answer] = await fake.wait_for(
                lambda: [
                    payload_of(r)
                    for r in fake.for_token(click["token"])
                    if "/webhooks/" in r.path and payload_of(r).get("content")
                ]
            )
            assert answer["flags"] & EPHEMERAL
            return str(answer["content"])

        assert "Only a server admin" in await press(0)
        fake.bot_permissions = 0  # the bot's role lacks Manage Server: it asks for it
        assert "I need the Manage Server permission" in await press(MANAGE_GUILD)
        assert fake.guild_icon is None
        fake.bot_permissions = MANAGE_GUILD
        assert "The server icon is now image 1" in await press(MANAGE_GUILD)
        assert fake.guild_icon is not None
        with Image.open(io.BytesIO(fake.guild_icon)) as icon:
            assert (icon.format, icon.size) == ("PNG", (1024, 1024))
        rows = await app.store.fetchall("SELECT action FROM admin_log")
        assert [r["action"] for r in rows] == ["workspace-icon"]
        assert fake.violations == []
