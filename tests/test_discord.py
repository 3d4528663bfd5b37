"""The Discord adapter through the real discord.py, against a fake Discord on loopback.

discord.py logs in against ``tests.fakes.discord_api.DiscordFake`` (REST) and, for
``serve``, connects to its gateway. Interactions arrive the way the gateway hands them to the
library (``parse_interaction_create`` with Discord's payload shape, or an INTERACTION_CREATE
frame); everything the bot sends goes through discord.py's HTTP and webhook clients to the
fake, which enforces Discord's rules and limits. The core is the real one on the offline
provider with a temporary data dir.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import discord
import pytest

from adapters.discord import ADAPTER, enabled
from adapters.discord.adapter import DiscordPoster, ImagineClient, api_base
from adapters.discord.options import command_text, flag_options
from adapters.discord.render import content, fit_buttons
from bot.app import App
from bot.errors import DeliveryError
from bot.types import Button, FlagHelp, Reply, Target
from tests.conftest import make_settings
from tests.fakes import make_png
from tests.fakes.discord_api import (
    CHANNEL_ID,
    EPHEMERAL,
    GUILD_ID,
    MANAGE_GUILD,
    TOKEN,
    DiscordFake,
    Msg,
    payload_of,
)

FAST = {"grammar": {"base_side": 256}}
ALICE = "1400000000000000001"
BOB = "1400000000000000002"


@pytest.fixture(autouse=True)
def _restore_discord_globals(monkeypatch: pytest.MonkeyPatch) -> None:
    # The adapter redirects discord.py through class attributes and restores them on close;
    # this is the safety net should a test fail half-way.
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket,
        "DEFAULT_GATEWAY",
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
    )


@pytest.fixture
async def fake() -> AsyncIterator[DiscordFake]:
    async with DiscordFake() as f:
        yield f


def env_for(fake: DiscordFake) -> dict[str, str]:
    # No version path: the adapter adds /api/v10 itself.
    return {
        "DISCORD_TOKEN": TOKEN,
        "DISCORD_API_BASE_URL": fake.base_url,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
    }


@asynccontextmanager
async def running(tmp_path: Path, fake: DiscordFake) -> AsyncIterator[tuple[App, ImagineClient]]:
    """The core plus a logged-in client (REST only: interactions are fed in directly)."""
    async with App.open(make_settings(tmp_path, FAST, env_for(fake))) as app:
        client = ImagineClient(app)
        try:
            await client.login(TOKEN)
            yield app, client
        finally:
            await client.close()


def inject(client: ImagineClient, payload: dict[str, Any]) -> None:
    client._connection.parse_interaction_create(payload)  # type: ignore[arg-type]


def result_posts(fake: DiscordFake) -> list[Msg]:
    return [m for m in fake.messages.values() if m.via == "channel" and m.files]


async def imagine(client: ImagineClient, fake: DiscordFake, prompt: str) -> tuple[str, Msg]:
    """Run /imagine to its posted result; return (job id, the result message)."""
    before = len(result_posts(fake))
    inject(client, fake.slash("imagine", {"prompt": prompt}))
    posts = await fake.wait_for(lambda: len(result_posts(fake)) > before and result_posts(fake))
    msg: Msg = posts[-1]
    job_id = msg.custom_ids()[0].split(":")[1]
    return job_id, msg


# ---------------------------------------------------------------------------------- tests
async def test_imagine_defers_first_then_posts_the_grid_with_buttons(
    tmp_path: Path, fake: DiscordFake
) -> None:
    async with running(tmp_path, fake) as (app, client):
        prompt = "a red fox @everyone <@&1200000000000000009> <@1400000000000000002> @here --n 4"
        payload = fake.slash("imagine", {"prompt": prompt})
        sent_at = time.time()
        inject(client, payload)
        posts = await fake.wait_for(lambda: result_posts(fake))
        it = fake.interactions[payload["id"]]

        # Ack first: the very first request for this interaction is a public "thinking"
        # defer, well inside 3 s, and it came before the core wrote the job.
        first = fake.for_token(payload["token"])[0]
        assert first.path.endswith("/callback")
        assert payload_of(first) == {"type": 5}
        assert fake.at(first) - sent_at < 3.0
        job = await app.store.fetchone("SELECT id, created_at, tenant, owner_id FROM jobs")
        assert job is not None
        assert fake.at(first) <= job["created_at"]
        assert (job["tenant"], job["owner_id"]) == ("1200000000000000001", ALICE)

        # The status message replaced the thinking message (public), and was settled.
        status = fake.messages[it.original or ""]
        assert not status.ephemeral and status.edits >= 2
        assert "done" in status.content

        # The result is an ordinary channel message: the grid and 15 restart-proof buttons.
        result = posts[0]
        assert [name for name, _ in result.files] == [f"{job['id']}-grid.jpg"]
        jid = job["id"]
        assert result.custom_ids() == (
            [f"pick:{jid}:{i}" for i in range(1, 5)]
            + [f"refine:{jid}:{i}" for i in range(1, 5)]
            + [f"vary-strong:{jid}:{i}" for i in range(1, 5)]
            + [f"reroll:{jid}", f"info:{jid}", f"delete:{jid}"]
        )
        assert [len(row["components"]) for row in result.components] == [4, 4, 4, 3]

        # Nobody is pinged: the text is defused and every payload forbids mentions.
        for m in (status, result):
            assert "@everyone" not in m.content and "@here" not in m.content
            assert "<@&1200000000000000009>" not in m.content
            assert "<@1400000000000000002>" not in m.content
        sent = fake.message_payloads()
        assert len(sent) >= 3
        assert all(p["allowed_mentions"] == {"parse": []} for p in sent)
        assert fake.violations == []
        assert fake.deprecated == []


async def test_a_button_from_before_a_restart_still_works(
    tmp_path: Path, fake: DiscordFake
) -> None:
    async with running(tmp_path, fake) as (_, client):
        job_id, result = await imagine(client, fake, "a lighthouse --n 2")
    # Everything restarts: the core, the database connection and the Discord client.
    async with running(tmp_path, fake) as (_, client):
        click = fake.click(f"pick:{job_id}:2", result, user_id=ALICE)
        inject(client, click)
        replies = await fake.wait_for(
            lambda: [
                r for r in fake.for_token(click["token"]) if "/webhooks/" in r.path and r.files
            ]
        )
        calls = fake.for_token(click["token"])
        assert payload_of(calls[0]) == {"type": 6}  # deferred update: no loading state
        picked = payload_of(replies[0])
        assert not (picked.get("flags") or 0) & EPHEMERAL
        assert [f[0] for f in replies[0].files.values()] == [f"{job_id}-2.png"]
        ids = [c["custom_id"] for row in picked["components"] for c in row["components"]]
        verbs = ["upscale", "refine", "vary-subtle", "vary-strong", "zoom-out", "zoom-out-double"]
        verbs += ["pan-left", "pan-right", "pan-up", "pan-down"]
        assert ids == [f"{v}:{job_id}:2" for v in verbs] + [f"info:{job_id}", f"tree:{job_id}"]
        assert [len(row["components"]) for row in picked["components"]] == [5, 5, 2]

        # A refine form opened before the restart is submitted after it: read from the raw
        # payload, not from a Modal object the old process held.
        submit = fake.submit(f"refine:{job_id}:1", {"prompt": "a lighthouse in fog"}, user_id=ALICE)
        inject(client, submit)
        await fake.wait_for(
            lambda: [m for m in result_posts(fake) if m.content.startswith("Refinement:")]
        )
        assert fake.violations == []


async def test_the_poster_uses_threads_and_reports_a_refusal(
    tmp_path: Path, fake: DiscordFake
) -> None:
    async with running(tmp_path, fake) as (_, client):
        poster = DiscordPoster(client)
        thread = "1300000000000000077"
        ref = await poster.post(Target("discord", GUILD_ID, CHANNEL_ID, thread), Reply("hi @here"))
        assert ref is not None and fake.messages[ref].channel_id == thread
        await poster.update(Target("discord", GUILD_ID, CHANNEL_ID, thread), ref, Reply("edited"))
        assert fake.messages[ref].content == "edited"
        # The bot lacks access (403): the outbox must hear of it (it was swallowed, and the
        # result lost), as a failure that retrying cannot cure.
        fake.fail_next(403, json={"message": "Missing Access", "code": 50001}, path="/channels/")
        with pytest.raises(DeliveryError) as refused:
            await poster.post(Target("discord", GUILD_ID, CHANNEL_ID), Reply("x"))
        assert refused.value.permanent and "403" in refused.value.reason
        assert fake.violations == []


async def test_refine_opens_a_modal_and_its_submit_makes_a_child_job(
    tmp_path: Path, fake: DiscordFake
) -> None:
    async with running(tmp_path, fake) as (app, client):
        job_id, result = await imagine(client, fake, "a castle --n 2")
        click = fake.click(f"refine:{job_id}:1", result, user_id=ALICE)
        inject(client, click)
        await fake.wait_for(lambda: fake.callbacks(click["id"]))
        [modal] = fake.callbacks(click["id"])  # the modal is the first and only response
        assert modal["type"] == 9
        form = modal["data"]
        assert form["custom_id"] == f"refine:{job_id}:1"
        inputs = {c["component"]["custom_id"]: c["component"] for c in form["components"]}
        assert set(inputs) == {"prompt", "strength"}
        assert inputs["prompt"]["value"] == "a castle"  # pre-filled with the job's prompt
        assert inputs["strength"]["style"] == 1  # short input for a number

        before = len(result_posts(fake))
        submit = fake.submit(
            f"refine:{job_id}:1", {"prompt": "a castle at dusk", "strength": "0.5"}, user_id=ALICE
        )
        inject(client, submit)
        posts = await fake.wait_for(lambda: len(result_posts(fake)) > before and result_posts(fake))
        assert payload_of(fake.for_token(submit["token"])[0]) == {"type": 6}
        child = await app.store.fetchone(
            "SELECT id, kind, parent_job_id, parent_index, owner_id FROM jobs WHERE kind = 'refine'"
        )
        assert child is not None
        assert (child["parent_job_id"], child["parent_index"]) == (job_id, 1)
        assert child["owner_id"] == ALICE
        assert posts[-1].content.startswith("Refinement: a castle at dusk")
        assert fake.violations == []


async def test_remix_vary_opens_a_modal_and_its_submit_makes_the_variation(
    tmp_path: Path, fake: DiscordFake
) -> None:
    async with running(tmp_path, fake) as (app, client):
        job_id, result = await imagine(client, fake, "a castle --n 2 --remix")
        click = fake.click(f"vary-strong:{job_id}:2", result, user_id=ALICE)
        inject(client, click)
        await fake.wait_for(lambda: fake.callbacks(click["id"]))
        [modal] = fake.callbacks(click["id"])  # not deferred: the modal answers the click
        assert modal["type"] == 9 and modal["data"]["custom_id"] == f"vary-strong:{job_id}:2"
        before = len(result_posts(fake))
        submit = fake.submit(
            f"vary-strong:{job_id}:2", {"prompt": "a castle at dawn"}, user_id=ALICE
        )
        inject(client, submit)
        posts = await fake.wait_for(lambda: len(result_posts(fake)) > before and result_posts(fake))
        assert posts[-1].content.startswith("Variation (strong): a castle at dawn")
        row = await app.store.fetchone("SELECT kind FROM jobs WHERE kind = 'vary-strong'")
        assert row is not None


async def test_results_reply_to_the_message_they_came_from(
    tmp_path: Path, fake: DiscordFake
) -> None:
    async with running(tmp_path, fake) as (app, client):
        job_id, result = await imagine(client, fake, "a castle --n 2")
        job = await app.store.fetchone("SELECT status_ref FROM jobs WHERE id = ?", (job_id,))
        assert job is not None

        def reference_of(msg: Msg) -> Any:
            """The message_reference of the channel post that made ``msg`` (a result)."""
            posts = [r for r in fake.channel_posts() if payload_of(r).get("nonce")]
            post = posts[[m.id for m in result_posts(fake)].index(msg.id)]
            ref = payload_of(post).get("message_reference") or {}
            return {**ref, "message_id": str(ref.get("message_id"))}

        # A job's result replies to its status message; a reroll's to the result it came from.
        ref = reference_of(result)
        assert ref["message_id"] == job["status_ref"] and ref["fail_if_not_exists"] is False
        inject(client, fake.click(f"reroll:{job_id}", result, user_id=ALICE))
        posts = await fake.wait_for(lambda: len(result_posts(fake)) > 1 and result_posts(fake))
        assert reference_of(posts[-1])["message_id"] == result.id
        assert fake.violations == []


async def test_admin_needs_manage_server(tmp_path: Path, fake: DiscordFake) -> None:
    async with running(tmp_path, fake) as (_, client):
        refused = fake.slash("imagine-admin", {"text": "collab on"}, user_id=BOB)
        inject(client, refused)
        await fake.wait_for(
            lambda: (
                fake.interactions[refused["id"]].callback
                and not fake.interactions[refused["id"]].loading
            )
        )
        assert fake.callbacks(refused["id"]) == [{"type": 5, "data": {"flags": EPHEMERAL}}]
        msg = fake.messages[fake.interactions[refused["id"]].original or ""]
        assert msg.ephemeral and msg.content == "Only admins can use /admin."

        allowed = fake.slash(
            "imagine-admin", {"text": "collab on"}, user_id=BOB, permissions=MANAGE_GUILD
        )
        inject(client, allowed)
        await fake.wait_for(
            lambda: (
                fake.interactions[allowed["id"]].callback
                and not fake.interactions[allowed["id"]].loading
            )
        )
        msg = fake.messages[fake.interactions[allowed["id"]].original or ""]
        assert msg.ephemeral and msg.content == "Anyone in this channel may now continue results."


async def test_a_bad_flag_is_answered_privately(tmp_path: Path, fake: DiscordFake) -> None:
    async with running(tmp_path, fake) as (app, client):
        payload = fake.slash("imagine", {"prompt": "a cat --frobnicate 3"})
        inject(client, payload)
        replies = await fake.wait_for(
            lambda: [
                r
                for r in fake.for_token(payload["token"])
                if r.method == "POST" and "/webhooks/" in r.path
            ]
        )
        calls = [(r.method, r.path.rsplit("/", 1)[-1]) for r in fake.for_token(payload["token"])]
        # public thinking -> removed -> an ephemeral follow-up (a follow-up straight after a
        # public defer would edit the thinking message and stay public)
        assert calls == [("POST", "callback"), ("DELETE", "@original"), ("POST", payload["token"])]
        body = payload_of(replies[0])
        assert body["flags"] == EPHEMERAL
        assert "Unknown flag --frobnicate" in body["content"]
        [msg] = [m for m in fake.messages.values() if "frobnicate" in m.content]
        assert msg.ephemeral
        assert await app.store.fetchone("SELECT id FROM jobs") is None
        assert fake.deprecated == []


async def test_quota_is_ephemeral_and_dms_are_their_own_tenant(
    tmp_path: Path, fake: DiscordFake
) -> None:
    async with running(tmp_path, fake) as (app, client):
        q = fake.slash("quota")
        inject(client, q)
        await fake.wait_for(
            lambda: not fake.interactions[q["id"]].loading and fake.interactions[q["id"]].callback
        )
        assert fake.callbacks(q["id"])[0] == {"type": 5, "data": {"flags": EPHEMERAL}}
        msg = fake.messages[fake.interactions[q["id"]].original or ""]
        assert msg.ephemeral and msg.content.startswith("Today:")

        dm = fake.slash(
            "imagine",
            {"prompt": "a kite --n 1"},
            user_id=BOB,
            guild=False,
            permissions=MANAGE_GUILD,
        )
        inject(client, dm)
        await fake.wait_for(lambda: len(result_posts(fake)) == 1)
        row = await app.store.fetchone("SELECT tenant, owner_id FROM jobs")
        assert row is not None and (row["tenant"], row["owner_id"]) == (f"dm:{BOB}", BOB)


async def test_an_attached_image_is_downloaded_and_used(tmp_path: Path, fake: DiscordFake) -> None:
    async with running(tmp_path, fake) as (app, client):
        payload = fake.slash(
            "imagine",
            {"prompt": "make it blue --n 1"},
            attachment=("start.png", make_png("start", 256, 256)),
        )
        inject(client, payload)
        await fake.wait_for(lambda: result_posts(fake))
        assert fake.requests_to("/attachments/start.png")
        row = await app.store.fetchone("SELECT request_json FROM jobs")
        assert row is not None and json.loads(row["request_json"]).get("init_sha")


async def test_refine_with_imagine_on_a_message_uses_its_picture(
    tmp_path: Path, fake: DiscordFake
) -> None:
    async with running(tmp_path, fake) as (app, client):
        assert {"name": "Refine with imagine", "type": 3} in [
            {"name": c["name"], "type": c.get("type")} for c in fake.commands
        ]
        png = make_png("theirs", 256, 256)
        payload = fake.message_command(
            "Refine with imagine", "a lighthouse", attachment=("theirs.png", png, "image/png")
        )
        inject(client, payload)
        await fake.wait_for(lambda: result_posts(fake))
        assert fake.requests_to("/attachments/theirs.png")
        row = await app.store.fetchone("SELECT request_json FROM jobs")
        assert row is not None and json.loads(row["request_json"]).get("init_sha")

        # A message without a picture gets a private answer, and no job.
        bare = fake.message_command("Refine with imagine", "just words")
        inject(client, bare)
        await fake.wait_for(lambda: fake.callbacks(bare["id"]))
        [answer] = fake.callbacks(bare["id"])
        assert answer["type"] == 4 and answer["data"]["flags"] == EPHEMERAL
        assert "no image" in answer["data"]["content"]
        assert len(await app.store.fetchall("SELECT id FROM jobs")) == 1
        assert fake.violations == []


async def test_slash_commands_are_synced_with_their_options(
    tmp_path: Path, fake: DiscordFake
) -> None:
    async with running(tmp_path, fake):
        commands = {c["name"]: c for c in fake.commands}
    assert set(commands) == {"imagine", "quota", "imagine-admin", "Refine with imagine"}
    opts = {o["name"]: o for o in commands["imagine"]["options"]}
    assert (opts["prompt"]["type"], opts["prompt"]["required"]) == (3, True)
    assert (opts["image"]["type"], opts["image"].get("required", False)) == (11, False)
    assert str(commands["imagine-admin"]["default_member_permissions"]) == str(MANAGE_GUILD)
    slash = [c for c in commands.values() if c.get("type", 1) == 1]
    assert all(0 < len(c["description"]) <= 100 for c in slash)
    assert commands["Refine with imagine"]["type"] == 3  # a message context-menu command


async def test_imagine_options_are_the_grammars_flag_table(
    tmp_path: Path, fake: DiscordFake
) -> None:
    async with running(tmp_path, fake) as (app, _):
        flags = app.flag_help()
        [imagine_cmd] = [c for c in fake.commands if c["name"] == "imagine"]
    opts = imagine_cmd["options"]
    assert len(opts) <= 25
    assert [o["name"] for o in opts] == ["prompt", "image", *(f.name[2:] for f in flags)]
    by_name = {o["name"]: o for o in opts}
    for f in flags:
        option = by_name[f.name[2:]]
        assert option["description"] == f.help
        assert option["type"] == (5 if not f.value else 3)  # boolean for a switch, else text
        assert not option.get("required", False)
    assert all(0 < len(o["description"]) <= 100 for o in opts)
    # The prompt's own description shows the table's examples, not a hand-written list.
    assert flags[0].example in by_name["prompt"]["description"]


class WithOneFlag(App):
    """A stand-in core whose grammar knows a single flag: the options follow whatever the
    core's table says."""

    def flag_help(self) -> tuple[FlagHelp, ...]:
        return (FlagHelp("--glow", "X", "how much it glows, 0 to 1", "--glow 0.5"),)


async def test_options_follow_the_cores_table_not_hand_written_text(
    tmp_path: Path, fake: DiscordFake
) -> None:
    async with WithOneFlag.open(make_settings(tmp_path, FAST, env_for(fake))) as app:
        client = ImagineClient(app)
        try:
            await client.login(TOKEN)
            await client.setup_hook()
        finally:
            await client.close()
    [imagine_cmd] = [c for c in fake.commands if c["name"] == "imagine"]
    assert [(o["name"], o["description"]) for o in imagine_cmd["options"][2:]] == [
        ("glow", "how much it glows, 0 to 1")
    ]
    assert "--glow 0.5" in imagine_cmd["options"][0]["description"]


async def test_a_typed_option_is_the_flag_typed_in_the_prompt(
    tmp_path: Path, fake: DiscordFake
) -> None:
    async with running(tmp_path, fake) as (app, client):
        inject(
            client,
            fake.slash(
                "imagine", {"prompt": "a fox", "n": "2", "no": "blurry, text", "avatar": False}
            ),
        )
        posts = await fake.wait_for(lambda: result_posts(fake))
        assert len([c for c in posts[-1].custom_ids() if c.startswith("pick:")]) == 2
        row = await app.store.fetchone("SELECT request_json FROM jobs")
    assert row is not None
    request = json.loads(row["request_json"])
    assert (request["prompt"], request["negative_prompt"], request["n"]) == (
        "a fox",
        "blurry, text",
        2,
    )
    assert not request["display_avatar"]  # a switch set to False is left out


async def test_serve_connects_through_the_gateway_and_closes_on_cancel(
    tmp_path: Path, fake: DiscordFake
) -> None:
    original_base = discord.http.Route.BASE
    async with App.open(make_settings(tmp_path, FAST, env_for(fake))) as app:
        ready = asyncio.Event()
        task = asyncio.create_task(ADAPTER.serve(app, app.settings, lambda _: ready.set()))
        await asyncio.wait_for(ready.wait(), 10)
        assert fake.identify_tokens == [TOKEN]
        # An interaction delivered the real way, as a gateway dispatch.
        q = fake.slash("quota")
        await fake.dispatch("INTERACTION_CREATE", q)
        await fake.wait_for(
            lambda: not fake.interactions[q["id"]].loading and fake.interactions[q["id"]].callback
        )
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
    assert original_base == discord.http.Route.BASE


async def test_serve_needs_a_token(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, FAST, {})
    assert not enabled(settings)
    assert enabled(make_settings(tmp_path, FAST, {"DISCORD_TOKEN": "x"}))
    async with App.open(settings) as app:
        with pytest.raises(Exception, match="DISCORD_TOKEN"):
            await ADAPTER.serve(app, app.settings, lambda _: None)


async def test_serve_names_a_refused_token(tmp_path: Path, fake: DiscordFake) -> None:
    from bot.errors import ConfigError

    env = {**env_for(fake), "DISCORD_TOKEN": "not-the-bot-token"}
    async with App.open(make_settings(tmp_path, FAST, env), start=False) as app:
        with pytest.raises(ConfigError, match="DISCORD_TOKEN"):
            await asyncio.wait_for(ADAPTER.serve(app, app.settings, lambda _: None), 10)


# ------------------------------------------------------------------------ pure rendering
def test_api_base_adds_the_version_path() -> None:
    assert api_base({}) is None
    assert api_base({"DISCORD_API_BASE_URL": "http://x:1/"}) == "http://x:1/api/v10"
    assert api_base({"DISCORD_API_BASE_URL": "http://x:1/api/v9"}) == "http://x:1/api/v9"


def _job_buttons(n: int, job: str = "abcdefghjkmn") -> list[Button]:
    out = [Button(f"Pick {i}", f"pick:{job}:{i}", "primary") for i in range(1, n + 1)]
    out += [Button(f"Refine {i}", f"refine:{job}:{i}") for i in range(1, n + 1)]
    out += [Button(f"Vary {i}", f"vary:{job}:{i}") for i in range(1, n + 1)]
    return [
        *out,
        Button("Reroll", f"reroll:{job}"),
        Button("Info", f"info:{job}"),
        Button("Delete", f"delete:{job}", "danger"),
    ]


@pytest.mark.parametrize("n", range(1, 11))
def test_buttons_fit_discord_and_keep_pick_and_refine(n: int) -> None:
    rows = fit_buttons(_job_buttons(n))
    kept = [b.action.split(":")[0] for row in rows for b in row]
    assert len(rows) <= 5 and all(1 <= len(r) <= 5 for r in rows)
    assert len(kept) <= 25
    assert kept.count("pick") == n and kept.count("refine") == n
    assert {"reroll", "info", "delete"} <= set(kept)
    assert kept.count("vary") == min(n, 25 - 2 * n - 3)


def test_text_is_escaped_and_defused() -> None:
    user, role = "<@!1400000000000000002>", "<@&1200000000000000009>"
    text = content(Reply(f"**bold** @everyone {user} {role} _x_", notice="offline @here"))
    assert "@everyone" not in text and "@here" not in text
    assert user not in text and role not in text
    assert r"\*\*bold\*\*" in text and r"\_x\_" in text
    assert re.search(r"\n-# offline", text)
    assert len(content(Reply("x" * 5000))) == 2000


@pytest.mark.parametrize(
    ("value", "typed"),
    [
        ("2", "--no 2"),
        ("blurry,   text", '--no "blurry, text"'),
        ('a "quoted" word', "--no 'a \"quoted\" word'"),
    ],
)
def test_a_typed_value_is_written_as_it_would_be_typed(value: str, typed: str) -> None:
    [no, avatar] = flag_options(
        [FlagHelp("--no", "TEXT", "leave out"), FlagHelp("--avatar", "", "square")]
    )
    assert command_text(" a fox ", [(no, value), (avatar, None)]) == f"a fox {typed}"
    assert command_text("a fox", [(no, None), (avatar, True)]) == "a fox --avatar"


def test_only_flags_discord_can_name_become_options() -> None:
    flags = [FlagHelp("--prompt", "X", "clashes"), FlagHelp("--Bad Name", "X", "spaces")]
    flags += [FlagHelp(f"--f{i}", "X", f"flag {i}") for i in range(30)]
    options = flag_options(flags)
    assert len(options) == 23  # 25 less prompt and image
    assert options[0].name == "f0" and options[0].param == "flag_0"


async def test_upscale_from_a_picked_image_through_discord(
    tmp_path: Path, fake: DiscordFake
) -> None:
    """The picked image's Upscale (a Pillow resize on the offline renderer, labelled so) runs as
    a charged child job and its result is posted in the channel."""
    async with running(tmp_path, fake) as (app, client):
        job_id, result = await imagine(client, fake, "a lighthouse --n 2")
        pick = fake.click(f"pick:{job_id}:2", result, user_id=ALICE)
        inject(client, pick)
        picked = await fake.wait_for(
            lambda: next(
                (
                    m
                    for m in fake.messages.values()
                    if f"upscale:{job_id}:2" in m.custom_ids() and m.files
                ),
                None,
            )
        )
        before = len(result_posts(fake))
        inject(client, fake.click(f"upscale:{job_id}:2", picked, user_id=BOB))
        posts = await fake.wait_for(lambda: len(result_posts(fake)) > before and result_posts(fake))
        child = await app.store.fetchone(
            "SELECT id, state, owner_id, parent_job_id, parent_index FROM jobs "
            "WHERE kind = 'upscale'"
        )
        assert child is not None
        assert (child["parent_job_id"], child["parent_index"]) == (job_id, 2)
        assert child["owner_id"] == BOB  # the clicker pays
        await app.runner.wait_idle(30)
        done = await app.store.fetchone("SELECT state FROM jobs WHERE id = ?", (child["id"],))
        assert done is not None and done["state"] == "done"
        assert "resized, not generated" in posts[-1].content.lower()
        assert fake.violations == []
