"""The web playground over real HTTP and WebSocket, on the real App with the offline renderer.

No browser here (see test_web_browser.py): routes, live updates, images, and the access rules.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from adapters.web import ADAPTER
from adapters.web.server import (
    RunningServer,
    create_web_app,
    parse_line,
    start,
    web_actor,
)
from bot.app import App
from bot.config import Settings, load_settings
from bot.errors import ConfigError
from bot.types import FlagHelp

TOKEN = "t0ken-for-tests-only"


def make_settings(tmp_path: Path, **web: Any) -> Settings:
    return load_settings(
        env={},
        overrides={
            "bot": {"data_dir": str(tmp_path / "data")},
            "grammar": {"base_side": 256},
            "providers": {"default": "offline", "offline": {"latency_ms": 50}},
            "web": web,
        },
    )


def bound_to(settings: Settings, host: str = "127.0.0.1", port: int = 0) -> Settings:
    """The settings with another web address (port 0, a free one, is not a valid setting)."""
    return dataclasses.replace(
        settings, web=dataclasses.replace(settings.web, host=host, port=port)
    )


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    async with App.open(make_settings(tmp_path)) as opened:
        yield opened


@pytest.fixture
async def server(app: App) -> AsyncIterator[RunningServer]:
    running = await start(app, "127.0.0.1", 0)
    yield running
    await running.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def command(
    http: aiohttp.ClientSession,
    server: RunningServer,
    name: str,
    text: str,
    channel: str = "general",
) -> dict[str, Any]:
    async with http.post(
        f"{server.url}/api/command", json={"name": name, "channel": channel, "text": text}
    ) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


# A whole card leaves its empty fields out; the page reads a missing field as empty.
EMPTY_CARD: dict[str, Any] = {
    "owner": "",
    "text": "",
    "images": [],
    "tiles": [],
    "buttons": [],
    "ephemeral": False,
    "form": None,
    "job_id": None,
    "parent_job_id": None,
    "state": None,
    "outcome": None,
    "position": None,
    "progress": None,
    "notice": None,
    "meta": {},
}


class LivePage:
    """What a page's socket shows, applied as the page applies it: whole cards, deltas,
    removals, the badge. ``replies`` is every card state seen, in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.cards: dict[str, dict[str, Any]] = {}
        self.replies: list[dict[str, Any]] = []
        self.items: list[dict[str, Any]] = []
        self.frames = 0
        self.quota: str | None = None

    async def history(self) -> list[dict[str, Any]]:
        first = await self.ws.receive_json(timeout=10)
        assert first["type"] == "history"
        for reply in first["replies"]:
            self.cards[reply["ref"]] = reply
        replies: list[dict[str, Any]] = first["replies"]
        return replies

    async def step(self) -> None:
        frame = await self.ws.receive_json()
        assert frame["type"] == "batch", frame
        self.frames += 1
        for item in frame["items"]:
            self.items.append(item)
            if item["op"] == "card":
                reply = {**EMPTY_CARD, **item["reply"]}
                if not reply["ephemeral"]:
                    self.cards[reply["ref"]] = reply
                self.replies.append(reply)
            elif item["op"] == "delta":
                known = self.cards.get(item["ref"])
                assert known is not None, f"a delta without its base: {item}"
                reply = {**known, **item["set"], "seq": item["seq"]}
                self.cards[item["ref"]] = reply
                self.replies.append(reply)
            elif item["op"] == "remove":
                # Seen as the card's last state: deleted (and gone from the page).
                gone = self.cards.pop(item["ref"], None) or {**EMPTY_CARD, "ref": item["ref"]}
                self.replies.append({**gone, "state": "deleted", "removed": True})
            elif item["op"] == "quota":
                self.quota = item["quota"]

    async def until(self, check: Any, within_s: float = 30) -> Any:
        async with asyncio.timeout(within_s):
            while not (found := check(self)):
                await self.step()
        return found

    async def reply(self, **want: Any) -> dict[str, Any]:
        """The first card state seen (from now on or already) whose fields match ``want``."""

        def match(page: LivePage) -> dict[str, Any] | None:
            return next(
                (r for r in page.replies if all(r.get(k) == v for k, v in want.items())), None
            )

        found: dict[str, Any] = await self.until(match)
        return found


async def next_reply(page: LivePage, **want: Any) -> dict[str, Any]:
    return await page.reply(**want)


async def open_socket(
    http: aiohttp.ClientSession,
    server: RunningServer,
    name: str = "watcher",
    channel: str = "general",
) -> tuple[LivePage, list[dict[str, Any]]]:
    ws = await http.ws_connect(f"{server.url}/ws?channel={channel}&name={name}")
    page = LivePage(ws)
    return page, await page.history()


# -- pure translation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/imagine a red fox --n 4", ("imagine", "a red fox --n 4")),
        ("/imagine help", ("imagine", "help")),
        ("  /quota ", ("quota", "")),
        ("/admin refund j1", ("admin", "refund j1")),
        ("a fox without a slash", ("imagine", "a fox without a slash")),
        ("/IMAGINE loud", ("imagine", "loud")),
        ("/dance now", ("dance", "now")),  # the core answers an unknown command
        ("   ", None),
    ],
)
def test_parse_line(line: str, expected: tuple[str, str] | None) -> None:
    assert parse_line(line) == expected


def test_web_actor_normalises_the_typed_name() -> None:
    actor = web_actor("  Ada Lovelace!  ", admins=("ada_lovelace",))
    assert (actor.platform, actor.tenant, actor.user_id) == ("web", "local", "ada_lovelace")
    assert actor.display_name == "Ada Lovelace!"
    assert actor.is_admin
    assert not web_actor("bob").is_admin
    assert len(web_actor("x" * 80).user_id) == 32


@pytest.mark.parametrize("name", ["", "   ", "!!!", "ÅÄÖ"])
def test_web_actor_refuses_names_without_usable_characters(name: str) -> None:
    with pytest.raises(Exception, match="name"):
        web_actor(name)


# -- routes --------------------------------------------------------------------------------------


async def test_healthz_and_page(server: RunningServer, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{server.url}/healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}
    async with http.get(f"{server.url}/") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        page = await resp.text()
        assert 'src="/static/app.js"' in page
    async with http.get(f"{server.url}/static/app.js") as resp:
        assert resp.status == 200
        assert "textContent" in await resp.text()
    async with http.get(f"{server.url}/api/config") as resp:
        assert (await resp.json())["channels"] == ["general", "avatars", "sandbox"]


@pytest.mark.parametrize(
    "path", ["/static/server.py", "/static/index.html.bak", "/static/..%2Fserver.py", "/nope"]
)
async def test_only_listed_static_files_are_served(
    server: RunningServer, http: aiohttp.ClientSession, path: str
) -> None:
    async with http.get(URL(f"{server.url}{path}", encoded=True)) as resp:
        assert resp.status == 404


async def test_imagine_goes_live_and_serves_its_images(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    ws, history = await open_socket(http, server)
    assert history == []
    body = await command(http, server, "Alice", "/imagine a red fox in snow --n 4")
    jobs = [r for r in body["replies"] if r["job_id"]]
    assert jobs, body
    job_id = jobs[0]["job_id"]
    assert jobs[0]["owner"] == "alice"
    assert jobs[0]["state"] in ("queued", "running", "done")

    done = await next_reply(ws, job_id=job_id, state="done")
    assert done["owner"] == "alice"
    assert not done["ephemeral"]
    assert "a red fox in snow" in done["text"]
    grids = [i for i in done["images"] if i["kind"] == "grid"]
    assert len(grids) == 1 and grids[0]["url"]
    actions = [b["action"] for b in done["buttons"]]
    assert any(a.startswith("refine") for a in actions), actions

    async with http.get(server.url + grids[0]["url"]) as resp:
        assert resp.status == 200
        assert resp.content_type.startswith("image/")
        assert len(await resp.read()) > 100
    async with http.get(server.url + grids[0]["url"] + "?download=1") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Disposition"].startswith("attachment;")
    await ws.ws.close()

    # A page opened later gets the finished job from history.
    ws2, history2 = await open_socket(http, server)
    assert [r["job_id"] for r in history2] == [job_id]
    assert history2[0]["state"] == "done"
    # The POST answer (queued) may reach a page after this history: it must not outrank it,
    # or the card rolls back to "queued" for good.
    assert history2[0]["seq"] > max(r["seq"] for r in body["replies"])
    await ws2.ws.close()


@pytest.mark.parametrize(
    "sha",
    [
        "0" * 64,  # well formed, not stored
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "..%252F..%252Fdata.db",
        "%2e%2e",
        "%2e%2e%2fimagine-bot.sqlite3",
        "abc",
        "G" * 64,
    ],
)
async def test_image_route_serves_only_stored_images(
    server: RunningServer, http: aiohttp.ClientSession, sha: str
) -> None:
    # encoded=True: the server, not the client library, must deal with the dots and slashes.
    async with http.get(URL(f"{server.url}/images/{sha}", encoded=True)) as resp:
        assert resp.status == 404


async def test_image_route_refuses_the_database_by_any_name(
    app: App, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    for path in sorted(app.settings.data_dir.rglob("*"))[:20]:
        rel = path.relative_to(app.settings.data_dir).as_posix()
        async with http.get(f"{server.url}/images/{rel}") as resp:
            assert resp.status == 404, rel


async def test_bad_flag_is_private_and_inline(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    bob_ws, _ = await open_socket(http, server, name="bob")
    alice_ws, _ = await open_socket(http, server, name="alice")
    body = await command(http, server, "alice", "/imagine a cat --bogus 3")
    errors = [r for r in body["replies"] if r["ephemeral"]]
    assert errors and "bogus" in errors[0]["text"]
    assert not any(r["job_id"] for r in body["replies"])

    # Bob's page never sees Alice's error: the next thing it gets is her next (public) job.
    await command(http, server, "alice", "/imagine a dog --n 1")
    await bob_ws.until(lambda page: page.replies)
    first = bob_ws.replies[0]
    assert not first["ephemeral"] and first["job_id"]
    assert not any(r["ephemeral"] for r in bob_ws.replies)
    await bob_ws.ws.close()
    await alice_ws.ws.close()


async def test_unknown_command_gets_a_hint(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    body = await command(http, server, "alice", "/dance")
    assert body["replies"][0]["ephemeral"]
    assert "/imagine" in body["replies"][0]["text"]


async def test_the_hint_is_the_grammars_flag_table(
    app: App, server: RunningServer, http: aiohttp.ClientSession
) -> None:
    flags = app.flag_help()
    async with http.get(f"{server.url}/api/config") as resp:
        config = await resp.json()
    assert config["flags"] == [
        {"name": f.name, "value": f.value, "help": f.help, "example": f.example} for f in flags
    ]
    assert all(f.name in config["hint"] for f in flags)
    body = await command(http, server, "alice", "   ")
    assert body["replies"][0]["text"] == config["hint"]


async def test_an_unknown_command_is_answered_by_the_core_with_the_closest_one(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    body = await command(http, server, "alice", "/imagin a fox")
    assert body["replies"][0]["text"] == (
        "Unknown command /imagin. Did you mean /imagine? Try /imagine help."
    )
    body = await command(http, server, "alice", "/dance")
    assert body["replies"][0]["text"] == "Unknown command /dance. Try /imagine help."
    # A button press is not a command one can type.
    body = await command(http, server, "alice", "/action confirm:abcdefghijkm")
    assert body["replies"][0]["text"].startswith("Unknown command /action.")


class WithOneFlag(App):
    """A stand-in core whose grammar knows one flag: the playground shows what the core says."""

    def flag_help(self) -> tuple[FlagHelp, ...]:
        return (FlagHelp("--glow", "X", "how much it glows, 0 to 1", "--glow 0.5"),)


async def test_the_hint_follows_the_cores_table_not_hand_written_text(tmp_path: Path) -> None:
    async with WithOneFlag.open(make_settings(tmp_path)) as core:
        running = await start(core, "127.0.0.1", 0)
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{running.url}/api/config") as resp,
            ):
                config = await resp.json()
        finally:
            await running.close()
    assert [f["name"] for f in config["flags"]] == ["--glow"]
    assert "[--glow X]" in config["hint"] and "--n" not in config["hint"]


async def test_quota_badge_route(server: RunningServer, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{server.url}/api/quota?name=Carol") as resp:
        assert resp.status == 200
        badge = (await resp.json())["quota"]
    assert re.search(r"\d", badge)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"name": "", "channel": "general", "text": "/imagine x"}, "name"),
        ({"name": "alice", "channel": "secret-room", "text": "/imagine x"}, "channel"),
        ({"name": "alice", "channel": "general", "action": ""}, "button"),
    ],
)
async def test_bad_requests_are_refused_with_a_message(
    server: RunningServer, http: aiohttp.ClientSession, payload: dict[str, str], fragment: str
) -> None:
    route = "/api/action" if "action" in payload else "/api/command"
    async with http.post(f"{server.url}{route}", json=payload) as resp:
        assert resp.status == 400
        assert fragment in (await resp.json())["error"]


async def test_form_posts_and_cross_site_requests_are_refused(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{server.url}/api/command", data={"text": "/imagine x"}) as resp:
        assert resp.status == 415
    async with http.post(
        f"{server.url}/api/command",
        json={"name": "alice", "channel": "general", "text": "/imagine x"},
        headers={"Origin": "http://evil.example"},
    ) as resp:
        assert resp.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(
            f"{server.url}/ws?channel=general&name=alice",
            headers={"Origin": "http://evil.example"},
        )
    assert info.value.status == 403


async def test_without_a_token_only_loopback_names_are_answered(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    # What a DNS-rebinding page would send: our port, its own host name.
    async with http.get(f"{server.url}/", headers={"Host": "evil.example"}) as resp:
        assert resp.status == 403
    async with http.get(f"{server.url}/", headers={"Host": f"localhost:{server.port}"}) as resp:
        assert resp.status == 200


# -- access token and binding ----------------------------------------------------------------------


async def test_access_token_guards_every_route_but_healthz(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, access_token=TOKEN)
    async with App.open(settings) as app:
        running = await start(app, "127.0.0.1", 0)
        try:
            async with aiohttp.ClientSession() as anon:
                async with anon.get(f"{running.url}/healthz") as resp:
                    assert resp.status == 200
                for path in ("/", "/api/config", "/static/app.js", f"/images/{'0' * 64}"):
                    async with anon.get(f"{running.url}{path}") as resp:
                        assert resp.status == 401, path
                        assert TOKEN not in await resp.text()
                async with anon.get(f"{running.url}/?token=wrong") as resp:
                    assert resp.status == 401
                async with anon.get(
                    f"{running.url}/api/config", headers={"Authorization": f"Bearer {TOKEN}"}
                ) as resp:
                    assert resp.status == 200
                # Any Host is fine once a token guards the door.
                async with anon.get(
                    f"{running.url}/api/config",
                    headers={"Authorization": f"Bearer {TOKEN}", "Host": "bot.example"},
                ) as resp:
                    assert resp.status == 200

            jar = aiohttp.CookieJar(unsafe=True)
            async with aiohttp.ClientSession(cookie_jar=jar) as browser:
                async with browser.get(f"{running.url}/?token={TOKEN}") as resp:
                    assert resp.status == 200
                    assert str(resp.url) == f"{running.url}/"  # the token left the address bar
                    cookie = resp.history[0].headers["Set-Cookie"]
                    # Lax: a Strict cookie is withheld from navigations started on another
                    # site (a link in a chat), which then got a 401.
                    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
                body = {"name": "alice", "channel": "general", "text": "/quota"}
                async with browser.post(f"{running.url}/api/command", json=body) as resp:
                    assert resp.status == 200
                ws = await browser.ws_connect(f"{running.url}/ws?channel=general&name=alice")
                assert (await ws.receive_json(timeout=10))["type"] == "history"
                await ws.close()
        finally:
            await running.close()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "bot.example"])
async def test_refuses_to_bind_beyond_loopback_without_a_token(app: App, host: str) -> None:
    with pytest.raises(ConfigError, match="access_token"):
        await ADAPTER.serve(app, bound_to(app.settings, host), lambda _: None)


async def test_a_port_in_use_is_a_config_error_naming_the_setting(app: App) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = bound_to(app.settings, port=taken.getsockname()[1])
        with pytest.raises(ConfigError, match=r"web\.port"):
            await ADAPTER.serve(app, settings, lambda _: None)


async def test_binds_all_interfaces_with_a_token(tmp_path: Path) -> None:
    async with App.open(make_settings(tmp_path, access_token=TOKEN)) as app:
        running = await start(app, "0.0.0.0", 0)
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{running.port}/healthz") as resp,
            ):
                assert resp.status == 200
        finally:
            await running.close()


async def test_serve_runs_until_cancelled(app: App) -> None:
    lines: list[str] = []
    ready = asyncio.Event()

    def on_ready(line: str) -> None:
        lines.append(line)
        ready.set()

    task = asyncio.create_task(ADAPTER.serve(app, bound_to(app.settings), on_ready))
    await asyncio.wait_for(ready.wait(), 10)
    url = re.search(r"http://127\.0\.0\.1:\d+", lines[0])
    assert url is not None
    async with aiohttp.ClientSession() as http, http.get(f"{url.group(0)}/healthz") as resp:
        assert resp.status == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(f"{url.group(0)}/healthz")


async def test_create_web_app_has_the_documented_routes(app: App) -> None:
    web_app = create_web_app(app)
    paths = {r.resource.canonical for r in web_app.router.routes() if r.resource is not None}
    assert {
        "/",
        "/healthz",
        "/ws",
        "/images/{sha}",
        "/api/command",
        "/api/action",
        "/api/imagine",
        "/api/gallery",
        "/api/lineage",
        "/link",
    } <= paths


async def test_image_verbs_through_the_playground(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    """Pick, then Zoom out and a remix Vary (Strong) through /api/action, as the page does."""

    async def press(action: str, fields: dict[str, str] | None = None) -> dict[str, Any]:
        payload = {"name": "Alice", "channel": "general", "action": action, "fields": fields or {}}
        async with http.post(f"{server.url}/api/action", json=payload) as resp:
            assert resp.status == 200, await resp.text()
            body: dict[str, Any] = await resp.json()
            return body

    ws, _ = await open_socket(http, server)
    body = await command(http, server, "Alice", "/imagine a fox den --n 1 --size 256x256 --remix")
    job_id = next(r["job_id"] for r in body["replies"] if r["job_id"])
    done = await next_reply(ws, job_id=job_id, state="done")
    assert [b["action"] for b in done["buttons"]][:3] == [
        f"pick:{job_id}:1",
        f"refine:{job_id}:1",
        f"vary-strong:{job_id}:1",
    ]
    picked = await press(f"pick:{job_id}:1")
    labels = [b["label"] for r in picked["replies"] for b in r["buttons"]]
    assert labels[:4] == ["Upscale", "Refine", "Vary (Subtle)", "Vary (Strong)"]
    zoom = await press(f"zoom-out:{job_id}:1")
    child = next(r["job_id"] for r in zoom["replies"] if r["job_id"])
    zoomed = await next_reply(ws, job_id=child, state="done")
    assert zoomed["text"].startswith("Zoom out: a fox den")
    form = await press(f"vary-strong:{job_id}:1")
    [dialog] = [r["form"] for r in form["replies"] if r.get("form")]
    assert dialog["action"] == f"vary-strong:{job_id}:1"
    varied = await press(f"vary-strong:{job_id}:1", {"prompt": "a fox den in snow"})
    child = next(r["job_id"] for r in varied["replies"] if r["job_id"])
    done = await next_reply(ws, job_id=child, state="done")
    assert done["text"].startswith("Variation (strong): a fox den in snow")
    await ws.ws.close()
