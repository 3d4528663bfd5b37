"""Who is who in the playground: guests, personal links, reserved names, admins; and the
request edges (uploads, deletes, a JSON body nested too deeply). Real HTTP on the real App.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from adapters.web import links
from adapters.web.access import guest_actor, linked_actor, user_id_of
from adapters.web.server import ID_COOKIE, PLAYGROUND, RunningServer, start
from bot import cli
from bot.app import App
from tests.test_web import TOKEN, LivePage, make_settings, open_socket


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    async with App.open(make_settings(tmp_path, admins=["Root"])) as opened:
        yield opened


@pytest.fixture
async def server(app: App) -> AsyncIterator[RunningServer]:
    running = await start(app, "127.0.0.1", 0)
    yield running
    await running.close()


def browser() -> aiohttp.ClientSession:
    """A browser's cookie jar (unsafe: cookies for an IP address such as 127.0.0.1)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def post(
    http: aiohttp.ClientSession,
    server: RunningServer,
    route: str,
    body: dict[str, Any],
    status: int = 200,
) -> dict[str, Any]:
    async with http.post(f"{server.url}{route}", json=body) as resp:
        assert resp.status == status, await resp.text()
        answer: dict[str, Any] = await resp.json()
        return answer


async def open_link(http: aiohttp.ClientSession, server: RunningServer, token: str) -> int:
    async with http.get(f"{server.url}/link?t={token}", allow_redirects=False) as resp:
        return resp.status


def png(size: tuple[int, int] = (96, 64), color: str = "teal") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


# -- the rules, pure ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling", ["alice", "ALICE ", "Alice!", "  a l i c e"[:0] + "Alice", "\talice\n", "AlIcE"]
)
def test_a_reserved_name_is_refused_in_any_case_or_spelling(spelling: str) -> None:
    with pytest.raises(Exception, match="personal link"):
        guest_actor(spelling, {"alice"})
    assert guest_actor("alicia", {"alice"}).user_id == "alicia"


def test_guests_are_never_admins_and_links_are() -> None:
    assert not guest_actor("Root").is_admin
    assert linked_actor("root", "Root", admin=False, admins=("Root",)).is_admin
    assert linked_actor("bob", "Bob", admin=True).is_admin
    assert not linked_actor("bob", "Bob", admin=False, admins=("Root",)).is_admin
    assert user_id_of("  Ada Lovelace! ") == "ada_lovelace"


def test_a_link_is_signed_and_says_why_it_is_refused(tmp_path: Path) -> None:
    token, identity = links.issue(tmp_path, "Alice", days=2, now=1_000_000)
    secret = links.load_or_create_secret(tmp_path)
    assert links.verify(secret, token, now=1_000_001) == identity
    assert (identity.user_id, identity.display_name, identity.admin) == ("alice", "Alice", False)
    with pytest.raises(links.LinkRefused, match="expired"):
        links.verify(secret, token, now=1_000_000 + 2 * 86400)
    version, payload, mac = token.split(".")
    forged = base64.urlsafe_b64encode(
        json.dumps({"u": "root", "n": "Root", "a": True, "i": 1, "e": 9_999_999_999}).encode()
    ).decode()
    for bad in (
        f"{version}.{forged.rstrip('=')}.{mac}",
        f"{version}.{payload}.{mac[:-2]}AA",
        token[:-1],
        "v2." + token[3:],
        "",
        "nonsense",
        "a.b.c.d",
    ):
        with pytest.raises(links.LinkRefused):
            links.verify(secret, bad, now=1_000_001)
    # Another data dir's secret does not accept it.
    with pytest.raises(links.LinkRefused, match="changed"):
        links.verify(links.load_or_create_secret(tmp_path / "other"), token, now=1_000_001)


def test_the_secret_is_made_once_and_readable_by_its_owner_only(tmp_path: Path) -> None:
    first = links.load_or_create_secret(tmp_path)
    path = tmp_path / links.SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert links.load_or_create_secret(tmp_path) == first
    os.chmod(path, 0o644)
    assert links.load_or_create_secret(tmp_path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_web_link_prints_a_link_and_never_the_secret(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = tmp_path / "data"
    with caplog.at_level(logging.DEBUG):
        code = cli.main(
            [
                "--data-dir",
                str(data),
                "web-link",
                "Carol Ann",
                "--admin",
                "--days",
                "3",
                "--base-url",
                "https://imagine.example/",
            ]
        )
    assert code == 0
    out, err = capsys.readouterr()
    [url] = out.split()
    assert url.startswith("https://imagine.example/link?t=v1.")
    identity = links.verify(links.load_or_create_secret(data), url.split("t=", 1)[1])
    assert (identity.user_id, identity.admin) == ("carol_ann", True)
    assert 3 * 86400 - 60 < identity.expires_at - time.time() <= 3 * 86400
    assert "Carol Ann" in err and "admin" in err
    secret = (data / links.SECRET_FILE).read_text().strip()
    assert secret not in out + err + caplog.text
    assert "carol_ann" in json.loads((data / links.NAMES_FILE).read_text())["names"]

    assert cli.main(["--data-dir", str(data), "web-link", "!!!"]) == cli.Exit.USAGE
    assert cli.main(["--data-dir", str(data), "web-link", "dave", "--days", "0"]) == 2
    assert "--days" in capsys.readouterr().err


# -- over HTTP -----------------------------------------------------------------------------------


async def test_opening_a_link_binds_the_browser_to_its_name(
    app: App, server: RunningServer
) -> None:
    token, _ = links.issue(app.settings.data_dir, "Alice")
    async with browser() as alice:
        async with alice.get(f"{server.url}/link?t={token}", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/"
            cookie = resp.headers["Set-Cookie"]
            assert f"{ID_COOKIE}=" in cookie
            assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
        async with alice.get(f"{server.url}/api/config") as resp:
            me = (await resp.json())["linked"]
        assert me["user_id"] == "alice" and me["name"] == "Alice" and not me["admin"]
        # Whatever name the page sends, a linked browser is its person.
        answer = await post(
            alice,
            server,
            "/api/command",
            {"name": "Mallory", "channel": "general", "text": "/imagine a kite"},
        )
        assert [r["owner"] for r in answer["replies"] if r["job_id"]] == ["alice"]

    async with aiohttp.ClientSession() as guest:
        for spelling in ("alice", "ALICE ", "Alice!"):
            refused = await post(
                guest,
                server,
                "/api/command",
                {"name": spelling, "channel": "general", "text": "/quota"},
                status=400,
            )
            assert "personal link" in refused["error"]
        assert (
            await post(
                guest,
                server,
                "/api/command",
                {"name": "Alicia", "channel": "general", "text": "/quota"},
            )
        )["replies"]


async def test_a_changed_or_expired_link_gets_a_clear_page(app: App, server: RunningServer) -> None:
    token, _ = links.issue(app.settings.data_dir, "Bob")
    expired = links.sign(
        links.load_or_create_secret(app.settings.data_dir),
        links.Identity("bob", "Bob", False, expires_at=int(time.time()) - 10, issued_at=0),
    )
    async with browser() as http:
        for bad, words in (
            (token[:-3] + "abc", "changed"),
            (expired, "expired"),
            ("garbage", "not a personal link"),
        ):
            async with http.get(f"{server.url}/link?t={bad}", allow_redirects=False) as resp:
                assert resp.status == 403
                assert resp.content_type == "text/html"
                page = await resp.text()
                assert words in page and "<script" not in page
                assert "Set-Cookie" not in resp.headers
        async with http.get(f"{server.url}/api/config") as resp:
            assert (await resp.json())["linked"] is None


async def test_admins_apply_to_linked_people_only(app: App, server: RunningServer) -> None:
    # web.admins = ["Root"]: a guest typing "root" is refused; the linked root is an admin.
    async with aiohttp.ClientSession() as guest:
        refused = await post(
            guest,
            server,
            "/api/command",
            {"name": "ROOT", "channel": "general", "text": "/admin collab off"},
            status=400,
        )
        assert "personal link" in refused["error"]
    token, _ = links.issue(app.settings.data_dir, "root")
    async with browser() as root:
        assert await open_link(root, server, token) == 303
        answer = await post(
            root,
            server,
            "/api/command",
            {"name": "x", "channel": "general", "text": "/admin collab off"},
        )
        assert "not allowed" not in json.dumps(answer).lower()
        assert await app.storage.channels.collaborative("web", "local", "general") is False
    # A linked non-admin may not.
    token, _ = links.issue(app.settings.data_dir, "bob")
    async with browser() as bob:
        assert await open_link(bob, server, token) == 303
        answer = await post(
            bob,
            server,
            "/api/command",
            {"name": "x", "channel": "general", "text": "/admin collab on"},
        )
        assert await app.storage.channels.collaborative("web", "local", "general") is False
        assert answer["replies"][0]["ephemeral"]


async def test_a_name_linked_while_the_playground_runs_is_reserved_at_once(
    app: App, server: RunningServer
) -> None:
    async with aiohttp.ClientSession() as guest:
        await post(
            guest, server, "/api/command", {"name": "Dana", "channel": "general", "text": "/quota"}
        )
        links.issue(app.settings.data_dir, "dana")  # the CLI, beside the running bot
        refused = await post(
            guest,
            server,
            "/api/command",
            {"name": "Dana", "channel": "general", "text": "/quota"},
            status=400,
        )
        assert "personal link" in refused["error"]


async def test_beyond_the_guest_pass_a_personal_link_lets_one_in(tmp_path: Path) -> None:
    async with App.open(make_settings(tmp_path, access_token=TOKEN)) as app:
        running = await start(app, "127.0.0.1", 0)
        try:
            async with (
                aiohttp.ClientSession() as anon,
                anon.get(f"{running.url}/api/config") as resp,
            ):
                assert resp.status == 401
                assert "access token" in await resp.text()
            token, _ = links.issue(app.settings.data_dir, "Erin")
            async with browser() as erin:
                assert await open_link(erin, running, token) == 303
                async with erin.get(f"{running.url}/api/config") as resp:
                    assert resp.status == 200
                    assert (await resp.json())["linked"]["user_id"] == "erin"
                ws = await erin.ws_connect(f"{running.url}/ws?channel=general")
                assert (await ws.receive_json(timeout=10))["type"] == "history"
                await ws.close()
        finally:
            await running.close()


async def test_a_deeply_nested_json_body_is_a_clear_400(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        for route in ("/api/command", "/api/action"):
            body = "[" * 100_000 + "]" * 100_000
            async with http.post(
                f"{server.url}{route}", data=body, headers={"Content-Type": "application/json"}
            ) as resp:
                assert resp.status == 400
                assert "nested too deeply" in (await resp.json())["error"]
            nested = '{"name": ' * 20_000 + '"x"' + "}" * 20_000
            async with http.post(
                f"{server.url}{route}", data=nested, headers={"Content-Type": "application/json"}
            ) as resp:
                assert resp.status == 400


async def test_an_uploaded_image_starts_an_img2img_through_the_cores_gate(
    app: App, server: RunningServer
) -> None:
    async with aiohttp.ClientSession() as http:
        page, _ = await open_socket(http, server, name="watcher")

        def form(image: bytes | None, text: str = "as a watercolor --n 1") -> aiohttp.FormData:
            data = aiohttp.FormData(default_to_multipart=True)
            data.add_field("name", "Fay")
            data.add_field("channel", "general")
            data.add_field("text", text)
            if image is not None:
                data.add_field("image", image, filename="in.png", content_type="image/png")
            return data

        headers = {"X-Imagine-Upload": "1"}
        async with http.post(
            f"{server.url}/api/imagine", data=form(png()), headers=headers
        ) as resp:
            assert resp.status == 200, await resp.text()
            [job] = [r for r in (await resp.json())["replies"] if r["job_id"]]
        done = await page.reply(job_id=job["job_id"], state="done")
        assert done["owner"] == "fay"
        row = await app.store.fetchone(
            "SELECT request_json FROM jobs WHERE id = ?", (job["job_id"],)
        )
        assert row is not None and json.loads(row["request_json"])["init_sha"]

        # Not an image: the core's gate says so, nothing is charged.
        async with http.post(
            f"{server.url}/api/imagine", data=form(b"GIF89a not really"), headers=headers
        ) as resp:
            assert resp.status == 200
            [refusal] = (await resp.json())["replies"]
            assert refusal["ephemeral"] and not refusal["job_id"]
        # A cross-site form cannot send the header; without it the upload is refused.
        async with http.post(f"{server.url}/api/imagine", data=form(png())) as resp:
            assert resp.status == 403
        async with http.post(f"{server.url}/api/imagine", data=form(None), headers=headers) as resp:
            assert resp.status == 400 and "Attach" in (await resp.json())["error"]
        async with http.post(
            f"{server.url}/api/imagine", data=form(png(), text=" "), headers=headers
        ) as resp:
            assert resp.status == 400
        await page.ws.close()


async def test_an_upload_over_the_limit_is_refused_before_it_is_read_whole(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    settings = type(settings)(
        **{
            **settings.__dict__,
            "images": type(settings.images)(
                **{**settings.images.__dict__, "max_input_bytes": 50_000}
            ),
        }
    )
    async with App.open(settings) as app:
        running = await start(app, "127.0.0.1", 0)
        try:
            data = aiohttp.FormData()
            for key, value in (("name", "gus"), ("channel", "general"), ("text", "x")):
                data.add_field(key, value)
            data.add_field(
                "image", os.urandom(200_000), filename="big.png", content_type="image/png"
            )
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"{running.url}/api/imagine", data=data, headers={"X-Imagine-Upload": "1"}
                ) as resp,
            ):
                assert resp.status == 400
                assert "larger than" in (await resp.json())["error"]
        finally:
            await running.close()


class ForgetsDeletedImages(App):
    """The core as its engineer is making it: no image path for a deleted job's images."""

    gone: set[str]

    def image_path(self, sha256: str) -> Path | None:
        return None if sha256 in getattr(self, "gone", set()) else super().image_path(sha256)


async def test_delete_takes_the_card_off_every_page_and_its_images_answer_404(
    tmp_path: Path,
) -> None:
    async with ForgetsDeletedImages.open(make_settings(tmp_path)) as app:
        app.gone = set()
        running = await start(app, "127.0.0.1", 0)
        try:
            async with aiohttp.ClientSession() as http:
                pages: list[LivePage] = [
                    (await open_socket(http, running, name=n))[0] for n in ("hal", "ida")
                ]
                answer = await post(
                    http,
                    running,
                    "/api/command",
                    {"name": "hal", "channel": "general", "text": "/imagine a clock --n 2"},
                )
                job_id = next(r["job_id"] for r in answer["replies"] if r["job_id"])
                await pages[0].reply(job_id=job_id, state="done")
                done = await pages[1].reply(job_id=job_id, state="done")
                urls = [t["url"] for t in done["tiles"]]
                assert len(urls) == 2
                for url in urls:
                    async with http.get(f"{running.url}{url}") as resp:
                        assert resp.status == 200
                        assert "no-cache" in resp.headers["Cache-Control"]
                # The core calls the poster's delete when a job is deleted.
                playground = running.runner.app[PLAYGROUND]
                from adapters.web.server import ChannelPosterImpl
                from bot.types import Target

                await ChannelPosterImpl(playground).delete(
                    Target("web", "local", "general", None, "hal"), job_id
                )
                for page in pages:
                    await page.until(lambda p: job_id not in p.cards)
                    assert {"op": "remove", "ref": job_id} in page.items
                app.gone = {url.rsplit("/", 1)[1] for url in urls}
                for url in urls:
                    async with http.get(f"{running.url}{url}") as resp:
                        assert resp.status == 404
                for page in pages:
                    await page.ws.close()
        finally:
            await running.close()
