"""Defaults and --from through the playground's real HTTP API (aiohttp on loopback)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.web.server import RunningServer, start
from bot.app import App
from tests.test_web import command, make_settings


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    async with App.open(make_settings(tmp_path)) as opened:
        yield opened


@pytest.fixture
async def server(app: App) -> AsyncIterator[RunningServer]:
    running = await start(app, "127.0.0.1", 0)
    yield running
    await running.close()


async def _action(
    http: aiohttp.ClientSession, server: RunningServer, action: str, fields: dict[str, str]
) -> dict[str, Any]:
    async with http.post(
        f"{server.url}/api/action",
        json={"name": "ada", "channel": "general", "action": action, "fields": fields},
    ) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def test_the_settings_panel_and_from_on_the_playground(
    app: App, server: RunningServer
) -> None:
    async with aiohttp.ClientSession() as http:
        shown = await command(http, server, "ada", "/imagine settings")
        [reply] = shown["replies"]
        assert reply["ephemeral"] and reply["buttons"][0]["action"] == "settings:yourdefaults"
        opened = await _action(http, server, "settings:yourdefaults", {})
        form = opened["replies"][0]["form"]
        assert [f["name"] for f in form["fields"]] == ["n", "ar", "style", "engine", "remix"]
        fields = {
            "n": "2",
            "ar": "default",
            "style": "origami",
            "engine": "default",
            "remix": "off",
        }
        saved = await _action(http, server, "settings:yourdefaults", fields)
        assert "n=2 style=origami remix=off" in saved["replies"][0]["text"]
        made = await command(http, server, "ada", "/imagine a paper crane")
        job_id = next(r["job_id"] for r in made["replies"] if r["job_id"])
        await app.runner.wait_idle(30)
        job = await app.runner.load(job_id)
        assert job is not None and job.n == 2 and job.request.display.style == "origami"
        again = await command(http, server, "ada", f"/imagine --from {job_id}")
        repeat = next(r["job_id"] for r in again["replies"] if r["job_id"])
        await app.runner.wait_idle(30)
        copy = await app.runner.load(repeat)
        assert copy is not None and (copy.seed, copy.n) == (job.seed, 2)
