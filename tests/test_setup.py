"""``imagine-bot setup``: the Slack manifest, the Discord invite URL, and the CLI that prints them.

The manifest is checked against Slack's documented manifest limits (``manifest_problems``,
itself tested on broken manifests), against the adapter's own command table, and against the
Web API methods ``adapters/slack`` really calls: a call without its scope fails here. The
Discord integer is checked against discord.py's own ``Permissions`` flags.
"""

from __future__ import annotations

import ast
import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import discord
import pytest

from adapters.slack.adapter import COMMANDS, NEW_SHORTCUT_CALLBACK_ID, SHORTCUT_CALLBACK_ID
from bot import setup
from bot.errors import ConfigError
from tests.conftest import REPO
from tests.fakes.discord_api import APP_ID
from tests.fakes.discord_api import TOKEN as DISCORD_TOKEN
from tests.test_cli import run

EXPECTED_PERMISSIONS = 274878008320  # View, Send, Send in Threads, Attach, Read History


# ---------------------------------------------------------------------------- the manifest
def test_the_socket_mode_manifest_fits_slacks_schema_and_has_no_urls() -> None:
    manifest = setup.slack_manifest()
    assert setup.manifest_problems(manifest) == []
    assert json.loads(json.dumps(manifest)) == manifest
    assert manifest["_metadata"] == {"major_version": 1, "minor_version": 1}
    settings = manifest["settings"]
    assert settings["socket_mode_enabled"] is True
    assert settings["interactivity"] == {"is_enabled": True}
    assert "event_subscriptions" not in settings  # the bot listens to no events
    assert "url" not in json.dumps(manifest["features"]["slash_commands"])


def test_the_manifest_has_the_adapters_commands_and_the_refine_shortcut() -> None:
    manifest = setup.slack_manifest()
    commands = [c["command"] for c in manifest["features"]["slash_commands"]]
    assert sorted(commands) == sorted(COMMANDS)
    assert all(c["should_escape"] is False for c in manifest["features"]["slash_commands"])
    assert manifest["features"]["shortcuts"] == [
        {
            "name": "Refine with imagine",
            "type": "message",
            "callback_id": "imagine_refine",
            "description": "Start a new image from the picture in this message",
        },
        {
            "name": "New image",
            "type": "global",
            "callback_id": "imagine_new",
            "description": (
                "Draw a picture from a prompt, optionally starting from a picture you upload"
            ),
        },
    ]
    # One id each across the manifest and the adapter's listeners.
    assert {s["callback_id"] for s in manifest["features"]["shortcuts"]} == {
        SHORTCUT_CALLBACK_ID,
        NEW_SHORTCUT_CALLBACK_ID,
    }


def test_the_manifest_asks_for_exactly_the_scopes_the_bot_uses() -> None:
    scopes = setup.slack_manifest()["oauth_config"]["scopes"]["bot"]
    assert sorted(scopes) == sorted(
        {
            "commands",
            "chat:write",
            "files:write",
            "files:read",
            "users:read",
            "channels:history",
            "groups:history",
            "im:history",
            "mpim:history",
        }
    )
    assert len(scopes) == len(set(scopes))
    assert "chat:write.public" not in scopes  # it posts where it was invited, nowhere else
    assert "user" not in setup.slack_manifest()["oauth_config"]["scopes"]


def _slack_methods_called() -> set[str]:
    """Every ``client.<method>(...)`` in adapters/slack, as Slack's method names."""
    found: set[str] = set()
    for path in (REPO / "adapters" / "slack").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value
            owner_name = (
                owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            )
            if owner_name not in ("client", "_client", "web_client"):
                continue
            name = node.func.attr
            if name == "files_upload_v2":  # slack_sdk's three-step upload
                found |= {"files.getUploadURLExternal", "files.completeUploadExternal"}
            elif "_" in name and name not in ("api_call",):
                found.add(name.replace("_", "."))
    return found


def test_every_web_api_method_the_adapter_calls_has_its_scope() -> None:
    called = _slack_methods_called()
    assert {"chat.postMessage", "chat.update", "users.info", "views.open"} <= called  # sanity
    app_token_only = {"apps.connections.open"}  # doctor, with the xapp- token
    uncovered = called - setup.slack_methods_covered() - app_token_only
    assert not uncovered, f"add these methods' scopes to bot/setup.py SLACK_SCOPES: {uncovered}"


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("https://bot.example.com", "https://bot.example.com/slack/events"),
        ("https://bot.example.com/", "https://bot.example.com/slack/events"),
        ("https://bot.example.com/slack/events", "https://bot.example.com/slack/events"),
        ("https://example.com:8443/imagine/", "https://example.com:8443/imagine/slack/events"),
    ],
)
def test_http_mode_sets_every_request_url(given: str, url: str) -> None:
    manifest = setup.slack_manifest(given)
    assert setup.manifest_problems(manifest) == []
    assert manifest["settings"]["socket_mode_enabled"] is False
    assert manifest["settings"]["interactivity"] == {"is_enabled": True, "request_url": url}
    assert {c["url"] for c in manifest["features"]["slash_commands"]} == {url}


@pytest.mark.parametrize(
    "given", ["http://bot.example.com", "bot.example.com", "https://", "https://x.test/?a=1"]
)
def test_a_request_url_slack_would_refuse_is_a_clear_error(given: str) -> None:
    with pytest.raises(ConfigError, match="--http-url"):
        setup.slack_manifest(given)


def test_the_manifest_check_finds_what_slack_refuses() -> None:
    broken: dict[str, Any] = setup.slack_manifest("https://bot.example.com")
    broken["display_information"]["name"] = "x" * 36
    broken["features"]["bot_user"]["display_name"] = "Imagine Bot"
    broken["features"]["slash_commands"][0]["command"] = "imagine"
    del broken["features"]["slash_commands"][1]["url"]
    del broken["settings"]["interactivity"]["request_url"]
    broken["features"]["shortcuts"][0]["type"] = "channel"
    problems = " | ".join(setup.manifest_problems(broken))
    for needle in (
        "name must be 1..35",
        "display_name",
        "'imagine'",
        "an https url is required",
        "interactivity.request_url",
        "type must be message or global",
    ):
        assert needle in problems


def test_the_steps_name_every_token_and_the_invite() -> None:
    socket = setup.slack_steps()
    assert "connections:write" in socket and "SLACK_APP_TOKEN" in socket
    assert "SLACK_BOT_TOKEN" in socket and "/invite @imagine" in socket
    assert "SLACK_SIGNING_SECRET" not in socket
    http = setup.slack_steps("https://bot.example.com")
    assert "SLACK_SIGNING_SECRET" in http and "https://bot.example.com/slack/events" in http
    assert "Do not set SLACK_APP_TOKEN" in http and "/invite @imagine" in http


# ------------------------------------------------------------------------ the invite URL
def test_the_permission_integer_is_discords_own_flags_and_never_administrator() -> None:
    ours = setup.discord_permission_value()
    assert ours == EXPECTED_PERMISSIONS
    flags = discord.Permissions(ours)
    assert flags == discord.Permissions(
        view_channel=True,
        send_messages=True,
        send_messages_in_threads=True,
        attach_files=True,
        read_message_history=True,
    )
    assert not flags.administrator and not flags.manage_guild and not flags.mention_everyone
    threads = discord.Permissions(setup.discord_permission_value(threads=True))
    assert threads.create_public_threads and threads.value == ours | (1 << 35)


def test_the_invite_url_has_both_scopes_and_the_integer() -> None:
    url = setup.discord_invite_url("1100000000000000001")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://discord.com/oauth2/authorize"
    query = parse_qs(parts.query)
    assert query == {
        "client_id": ["1100000000000000001"],
        "permissions": [str(EXPECTED_PERMISSIONS)],
        "integration_type": ["0"],
        "scope": ["bot applications.commands"],
    }


def test_the_application_id_comes_from_the_setting_or_the_token() -> None:
    assert setup.application_id_from_token(DISCORD_TOKEN) == APP_ID
    assert setup.discord_application_id({"DISCORD_TOKEN": DISCORD_TOKEN}) == APP_ID
    given = {"DISCORD_APPLICATION_ID": "1234567890123456789", "DISCORD_TOKEN": DISCORD_TOKEN}
    assert setup.discord_application_id(given) == "1234567890123456789"
    assert setup.application_id_from_token("not-a-token") is None
    assert setup.application_id_from_token(base64.b64encode(b"hello").decode() + ".a.b") is None
    with pytest.raises(ConfigError, match="DISCORD_APPLICATION_ID") as bad:
        setup.discord_application_id({"DISCORD_TOKEN": "garbage-secret"})
    assert "garbage-secret" not in str(bad.value)
    with pytest.raises(ConfigError, match="15 to 21 digits"):
        setup.discord_application_id({"DISCORD_APPLICATION_ID": "my-app"})
    with pytest.raises(ConfigError, match="set DISCORD_APPLICATION_ID"):
        setup.discord_application_id({})


# ------------------------------------------------------------------------------- the CLI
def test_setup_slack_prints_a_manifest_then_the_steps(tmp_path: Path) -> None:
    proc = run(tmp_path, "setup", "slack")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == setup.slack_manifest()  # the JSON alone: > manifest.json
    assert "Socket Mode" in proc.stderr
    assert "connections:write" in proc.stderr and "/invite @imagine" in proc.stderr
    assert not (tmp_path / "data").exists()  # setup touches no data


def test_setup_slack_http_mode(tmp_path: Path) -> None:
    proc = run(tmp_path, "setup", "slack", "--http-url", "https://bot.example.com")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["settings"]["socket_mode_enabled"] is False
    assert manifest["settings"]["interactivity"]["request_url"] == (
        "https://bot.example.com/slack/events"
    )
    assert "SLACK_SIGNING_SECRET" in proc.stderr


def test_setup_slack_refuses_a_plain_http_url_in_one_line(tmp_path: Path) -> None:
    proc = run(tmp_path, "setup", "slack", "--http-url", "http://bot.example.com")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "https://" in proc.stderr and "Traceback" not in proc.stderr


def test_setup_discord_prints_the_invite_and_never_the_token(tmp_path: Path) -> None:
    proc = run(tmp_path, "setup", "discord", env={"DISCORD_TOKEN": DISCORD_TOKEN})
    assert proc.returncode == 0, proc.stderr
    assert setup.discord_invite_url(APP_ID) in proc.stdout
    assert "No privileged intents are needed" in proc.stdout
    assert "Administrator" in proc.stdout  # "no Administrator"
    secret_part = DISCORD_TOKEN.split(".", 1)[1]
    assert secret_part not in proc.stdout + proc.stderr


def test_setup_discord_asks_for_threads_when_the_setting_opens_them(tmp_path: Path) -> None:
    plain = run(tmp_path, "setup", "discord", env={"DISCORD_TOKEN": DISCORD_TOKEN})
    assert setup.discord_invite_url(APP_ID, threads=False) in plain.stdout
    assert "Create Public Threads" not in plain.stdout
    env = {"DISCORD_TOKEN": DISCORD_TOKEN, "IMAGINE_DISCORD__THREADS": "true"}
    proc = run(tmp_path, "setup", "discord", env=env)
    assert proc.returncode == 0, proc.stderr
    assert setup.discord_invite_url(APP_ID, threads=True) in proc.stdout
    assert "Create Public Threads" in proc.stdout


def test_setup_discord_without_an_id_says_where_to_find_one(tmp_path: Path) -> None:
    proc = run(tmp_path, "setup", "discord")
    assert proc.returncode == 2
    assert "DISCORD_APPLICATION_ID" in proc.stderr and "Traceback" not in proc.stderr
    proc = run(tmp_path, "setup")
    assert proc.returncode == 2 and "slack" in proc.stderr


def test_the_readmes_say_what_setup_prints() -> None:
    slack = (REPO / "adapters" / "slack" / "README.md").read_text()
    for scope in setup.slack_bot_scopes():
        assert f"`{scope}`" in slack, f"adapters/slack/README.md does not explain {scope}"
    assert "imagine_refine" in slack and "connections:write" in slack
    discord_readme = (REPO / "adapters" / "discord" / "README.md").read_text().replace("`", "")
    assert f"integer {setup.discord_permission_value()}," in discord_readme
    for permission in setup.DISCORD_PERMISSIONS:
        assert f"| {permission.name} | {permission.why} |" in discord_readme
    top = (REPO / "README.md").read_text()
    assert "adapters/slack/README.md" in top and "adapters/discord/README.md" in top
