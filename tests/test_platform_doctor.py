"""``doctor`` on the platforms: each token asked of Slack (``auth.test``, ``apps.connections.open``)
and Discord (``GET /users/@me`` and the application) through slack_sdk and discord.py, against
the fakes; what is wrong is named, and the token never appears in what doctor prints."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import discord
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.discord import ADAPTER as DISCORD
from adapters.slack import ADAPTER as SLACK
from bot.doctor import check_platform
from tests.conftest import REPO, make_settings
from tests.fakes.discord_api import APP_ID, DiscordFake
from tests.fakes.discord_api import TOKEN as DISCORD_TOKEN
from tests.fakes.slack_api import SlackFake

BOT = "xoxb-1111-2222-SENTINELbot"
APP = "xapp-1-A111-3333-SENTINELapp"


@pytest.fixture(autouse=True)
def _no_slack_oauth_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "DISCORD_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)


@pytest.fixture
async def slack() -> AsyncIterator[SlackFake]:
    async with SlackFake(token=BOT, app_token=APP) as fake:
        yield fake


@pytest.fixture
async def dfake() -> AsyncIterator[DiscordFake]:
    async with DiscordFake() as fake:
        yield fake


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/api/"


async def slack_lines(tmp_path: Path, env: Mapping[str, str]) -> list[tuple[bool, str]]:
    return await check_platform(SLACK, make_settings(tmp_path, env=env))


async def discord_lines(tmp_path: Path, env: Mapping[str, str]) -> list[tuple[bool, str]]:
    return await check_platform(DISCORD, make_settings(tmp_path, env=env))


def text(lines: list[tuple[bool, str]]) -> str:
    return "\n".join(f"{'ok' if good else 'FAIL'} {line}" for good, line in lines)


# ------------------------------------------------------------------------------- Slack
async def test_working_slack_tokens_with_every_scope(tmp_path: Path, slack: SlackFake) -> None:
    lines = await slack_lines(
        tmp_path, {"SLACK_BOT_TOKEN": BOT, "SLACK_APP_TOKEN": APP, "SLACK_API_URL": slack.api_url}
    )
    assert all(good for good, _ in lines), text(lines)
    out = text(lines)
    assert "SLACK_BOT_TOKEN: works: workspace Fake Team (T0FAKE), bot user imagine" in out
    assert "SLACK_APP_TOKEN: works" in out
    assert [c.method for c in slack.calls] == ["auth.test", "apps.connections.open"]
    assert BOT not in out and APP not in out


async def test_missing_scopes_are_named_from_the_header(tmp_path: Path, slack: SlackFake) -> None:
    slack.scopes = ["commands", "chat:write", "users:read"]  # installed from an old manifest
    lines = await slack_lines(
        tmp_path, {"SLACK_BOT_TOKEN": BOT, "SLACK_APP_TOKEN": APP, "SLACK_API_URL": slack.api_url}
    )
    bad = [line for good, line in lines if not good]
    assert len(bad) == 1, text(lines)
    assert "missing the scopes files:write, files:read, channels:history" in bad[0]
    assert "reinstall" in bad[0]


async def test_an_unknown_bot_token_is_invalid_auth(tmp_path: Path, slack: SlackFake) -> None:
    lines = await slack_lines(
        tmp_path,
        {
            "SLACK_BOT_TOKEN": "xoxb-9999-revoked",
            "SLACK_SIGNING_SECRET": "0123456789abcdef0123456789abcdef",
            "SLACK_API_URL": slack.api_url,
        },
    )
    out = text(lines)
    assert "FAIL slack SLACK_BOT_TOKEN: Slack does not know this token (invalid_auth)" in out
    assert "ok slack SLACK_SIGNING_SECRET" in out
    assert "xoxb-9999-revoked" not in out


async def test_an_app_token_in_the_bot_slot_is_named_before_any_call(
    tmp_path: Path, slack: SlackFake
) -> None:
    lines = await slack_lines(
        tmp_path, {"SLACK_BOT_TOKEN": APP, "SLACK_APP_TOKEN": BOT, "SLACK_API_URL": slack.api_url}
    )
    out = text(lines)
    assert "SLACK_BOT_TOKEN: holds an app-level token, not a bot token (xoxb-...)" in out
    assert "belongs in SLACK_APP_TOKEN" in out
    assert "SLACK_APP_TOKEN: holds a bot token, not an app-level token (xapp-...)" in out
    assert slack.calls == []  # nothing was sent with a token of the wrong kind
    assert APP not in out and BOT not in out


async def test_an_app_token_without_its_scope_or_unknown(tmp_path: Path, slack: SlackFake) -> None:
    env = {
        "SLACK_BOT_TOKEN": BOT,
        "SLACK_APP_TOKEN": "xapp-1-A111-4444-other",
        "SLACK_API_URL": slack.api_url,
    }
    out = text(await slack_lines(tmp_path, env))
    assert "FAIL slack SLACK_APP_TOKEN: Slack does not know this token (invalid_auth)" in out


async def test_http_mode_without_a_signing_secret_is_named(
    tmp_path: Path, slack: SlackFake
) -> None:
    out = text(
        await slack_lines(tmp_path, {"SLACK_BOT_TOKEN": BOT, "SLACK_API_URL": slack.api_url})
    )
    assert "FAIL slack SLACK_SIGNING_SECRET: not set" in out and "HTTP mode" in out


async def test_slack_unreachable_is_named(tmp_path: Path) -> None:
    url = closed_port_url()
    lines = await slack_lines(
        tmp_path, {"SLACK_BOT_TOKEN": BOT, "SLACK_APP_TOKEN": APP, "SLACK_API_URL": url}
    )
    out = text(lines)
    assert f"SLACK_BOT_TOKEN: cannot reach Slack at {url}" in out
    assert not any(good for good, _ in lines)


async def test_slack_not_configured_is_not_checked(tmp_path: Path) -> None:
    assert await slack_lines(tmp_path, {}) == []


# ----------------------------------------------------------------------------- Discord
async def test_a_working_discord_token(tmp_path: Path, dfake: DiscordFake) -> None:
    lines = await discord_lines(
        tmp_path,
        {
            "DISCORD_TOKEN": DISCORD_TOKEN,
            "DISCORD_API_BASE_URL": dfake.base_url,
            "DISCORD_APPLICATION_ID": APP_ID,
        },
    )
    assert lines == [
        (True, f"discord DISCORD_TOKEN: works: bot user imagine ({APP_ID}), application {APP_ID}")
    ]
    paths = [r.path for r in dfake.requests]
    # /gateway/bot: the shard count Discord recommends (one here, so no shard line)
    assert paths == [
        "/api/v10/users/@me",
        "/api/v10/oauth2/applications/@me",
        "/api/v10/gateway/bot",
    ]
    assert discord.http.Route.BASE == "https://discord.com/api/v10"  # restored


async def test_a_refused_discord_token_is_the_401(tmp_path: Path, dfake: DiscordFake) -> None:
    wrong = DISCORD_TOKEN.rsplit(".", 1)[0] + ".SENTINEL-reset-long-ago"
    lines = await discord_lines(
        tmp_path, {"DISCORD_TOKEN": wrong, "DISCORD_API_BASE_URL": dfake.base_url}
    )
    out = text(lines)
    assert "FAIL discord DISCORD_TOKEN: Discord refused the token (401 Unauthorized)" in out
    assert "SENTINEL" not in out
    assert [r.path for r in dfake.requests] == ["/api/v10/users/@me"]


async def test_a_discord_secret_of_the_wrong_kind(tmp_path: Path, dfake: DiscordFake) -> None:
    env = {"DISCORD_API_BASE_URL": dfake.base_url}
    client_secret = "Abc123SENTINELxyz456Abc123xyz456"  # an OAuth2 client secret's shape
    out = text(await discord_lines(tmp_path, {**env, "DISCORD_TOKEN": client_secret}))
    assert "is not a bot token" in out and "Reset Token" in out
    out = text(await discord_lines(tmp_path, {**env, "DISCORD_TOKEN": f"Bot {DISCORD_TOKEN}"}))
    assert "give the token alone" in out
    assert dfake.requests == [] and "SENTINEL" not in out


async def test_a_mismatched_application_id(tmp_path: Path, dfake: DiscordFake) -> None:
    env = {
        "DISCORD_TOKEN": DISCORD_TOKEN,
        "DISCORD_API_BASE_URL": dfake.base_url,
        "DISCORD_APPLICATION_ID": "1999999999999999999",
    }
    out = text(await discord_lines(tmp_path, env))
    assert (
        "FAIL discord DISCORD_APPLICATION_ID: is 1999999999999999999, but the token "
        f"belongs to application {APP_ID}" in out
    )


async def test_discord_unreachable_is_named(tmp_path: Path) -> None:
    url = closed_port_url().removesuffix("/api/")
    out = text(
        await discord_lines(tmp_path, {"DISCORD_TOKEN": DISCORD_TOKEN, "DISCORD_API_BASE_URL": url})
    )
    assert f"FAIL discord DISCORD_TOKEN: cannot reach Discord at {url}/api/v10" in out


# ------------------------------------------------------------------- the whole doctor
async def test_doctor_reports_each_platform_and_never_prints_a_token(
    tmp_path: Path, slack: SlackFake, dfake: DiscordFake
) -> None:
    slack.scopes = [s for s in slack.scopes if s != "files:read"]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IMAGINE_", "SLACK_", "DISCORD_")) and not k.endswith("_API_KEY")
    }
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "SLACK_BOT_TOKEN": BOT,
            "SLACK_APP_TOKEN": APP,
            "SLACK_API_URL": slack.api_url,
            "DISCORD_TOKEN": DISCORD_TOKEN,
            "DISCORD_API_BASE_URL": dfake.base_url,
        }
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "--data-dir",
        str(tmp_path / "data"),
        "doctor",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    output = out.decode() + err.decode()
    assert proc.returncode == 1, output
    assert "[ok] slack SLACK_BOT_TOKEN: works" in output
    assert "[FAIL] slack SLACK_BOT_TOKEN is missing the scopes files:read" in output
    assert "[ok] slack SLACK_APP_TOKEN: works" in output
    assert "[ok] discord DISCORD_TOKEN: works" in output
    for secret in (BOT, APP, DISCORD_TOKEN, DISCORD_TOKEN.split(".", 1)[1]):
        assert secret not in output


async def test_the_fake_refuses_a_call_without_its_scope(tmp_path: Path, slack: SlackFake) -> None:
    # An app installed with the scopes the old README listed: no history scope.
    slack.scopes = ["commands", "chat:write", "files:write", "users:read"]
    client = AsyncWebClient(token=BOT, base_url=slack.api_url)
    with pytest.raises(SlackApiError) as refused:
        await client.conversations_history(channel="C1")
    assert refused.value.response["error"] == "missing_scope"
    assert refused.value.response["needed"] == "channels:history"
    assert (await client.chat_postMessage(channel="C1", text="hi"))["ok"]
