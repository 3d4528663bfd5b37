"""The Slack adapter through real slack-bolt and slack_sdk, against a fake Slack on loopback.

Requests reach bolt the way Slack sends them: signed HTTP POSTs to /slack/events on bolt's
own aiohttp app. Everything the adapter sends goes through the real AsyncWebClient to
``tests.fakes.slack_api.SlackFake``, which checks Slack's limits. The core is the real one on
the offline provider with a temporary data dir.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qsl

import aiohttp
import pytest
from slack_sdk.signature import SignatureVerifier

from adapters.slack import ADAPTER, enabled
from adapters.slack.render import (
    FormContext,
    action_blocks,
    escape,
    modal_view,
    reply_blocks,
    view_fields,
)
from bot.app import App
from bot.types import Button, Form, FormField, Reply
from tests.conftest import make_settings
from tests.fakes.slack_api import TEAM_ID, SlackFake, check_message_blocks, check_modal
from tests.slack_workspace import (
    CHANNEL,
    FAST,
    TOKEN,
    Workspace,
    button_ids,
    slack_env,
    texts,
    workspace_on,
)


@pytest.fixture(autouse=True)
def _no_slack_oauth_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # bolt switches to its OAuth flow when these are in the process environment.
    for name in ("SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET", "SLACK_VERIFICATION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def fake() -> AsyncIterator[SlackFake]:
    async with SlackFake(TOKEN) as f:
        yield f


@pytest.fixture
async def ws(tmp_path: Path, fake: SlackFake) -> AsyncIterator[Workspace]:
    async with workspace_on(tmp_path, fake) as w:
        yield w


# ------------------------------------------------------------------------------ commands
async def test_imagine_acks_before_the_core_then_posts_buttons_and_an_uploaded_grid(
    ws: Workspace,
) -> None:
    alice = ws.user("alice")
    gate = ws.fake.hold("users.info")  # the first thing after ack() is the admin lookup
    status, body = await ws.slash(alice, "/imagine", "a lighthouse at dusk --n 2")
    # The HTTP answer came back while the listener was still held before the core.
    assert (status, body) == (200, "")
    assert ws.fake.calls_to("chat.postMessage") == []
    assert await ws.jobs() == []
    gate.set()

    result = await ws.result()
    jobs = await ws.jobs()
    assert len(jobs) == 1 and jobs[0]["state"] == "done"
    job_id = jobs[0]["id"]
    # The queued status message came first, in the channel, and was then updated in place.
    first = ws.fake.calls_to("chat.postMessage")[0]
    assert first.params["channel"] == CHANNEL and "queued" in first.params["text"]
    assert ws.fake.calls_to("chat.update")
    # The grid went through the real files_upload_v2 flow into the same channel.
    (url_call,) = ws.fake.calls_to("files.getUploadURLExternal")
    (done_call,) = ws.fake.calls_to("files.completeUploadExternal")
    upload = next(iter(ws.fake.uploads.values()))
    assert upload.filename == f"{job_id}-grid.{jobs[0]['grid_ext'] or 'jpg'}"
    assert upload.data is not None and len(upload.data) == int(url_call.params["length"])
    assert upload.data[:3] in (b"\xff\xd8\xff", b"\x89PN")
    assert done_call.params["channel_id"] == CHANNEL
    # The result message carries the buttons and names the uploaded grid: no link, since
    # files.completeUploadExternal answers with id and title only.
    ids = button_ids(result)
    assert f"pick:{job_id}:1" in ids and f"refine:{job_id}:2" in ids and f"reroll:{job_id}" in ids
    for b in result.params["blocks"]:
        if b["type"] == "actions":
            assert len(b["elements"]) <= 25
            assert all(el["value"] == el["action_id"] for el in b["elements"])
    assert "grid" in json.dumps(result.params["blocks"])
    assert "<http" not in json.dumps(result.params["blocks"])
    assert "a lighthouse at dusk" in result.params["text"]
    assert ws.fake.violations == []


async def test_help_and_quota_answer_ephemerally(ws: Workspace) -> None:
    bob = ws.user("bob")
    assert (await ws.slash(bob, "/imagine", "help"))[0] == 200
    help_text = await ws.ephemeral(1)
    assert "--n" in help_text
    assert (await ws.slash(bob, "/imagine-quota"))[0] == 200
    assert "images left" in await ws.ephemeral(2)
    call = ws.fake.calls_to("chat.postEphemeral")[1]
    assert call.params["user"] == bob and call.params["channel"] == CHANNEL
    assert await ws.jobs() == []


async def test_bad_signature_and_stale_timestamp_are_refused_with_401(ws: Workspace) -> None:
    carol = ws.user("carol")
    body = ws.slash_body(carol, "/imagine", "a cat", ws.fake.new_trigger())
    form = "application/x-www-form-urlencoded"
    assert (await ws.post(body, form, signature="v0=" + "0" * 64))[0] == 401
    stale = int(time.time()) - 600  # a correctly signed replay from ten minutes ago
    assert (await ws.post(body, form, timestamp=stale))[0] == 401
    forged = SignatureVerifier("not-the-secret").generate_signature(
        timestamp=str(int(time.time())), body=body
    )
    assert (await ws.post(body, form, signature=forged))[0] == 401
    await asyncio.sleep(0.05)
    assert ws.fake.calls == [] and await ws.jobs() == []
    # The same body, properly signed and fresh, is accepted: the refusals were the signature.
    assert (await ws.post(body, form))[0] == 200
    await ws.fake.wait_for("chat.postMessage")


async def test_a_redelivered_slash_command_creates_one_job(ws: Workspace) -> None:
    dave = ws.user("dave")
    trigger = ws.fake.new_trigger()
    assert (await ws.slash(dave, "/imagine", "a red fox --n 1", trigger=trigger))[0] == 200
    await ws.result()
    assert (await ws.slash(dave, "/imagine", "a red fox --n 1", trigger=trigger))[0] == 200
    # The replay is answered with nothing (no job, no message); give it time to misbehave.
    await asyncio.sleep(0.5)
    await ws.app.runner.wait_idle(20)
    assert len(await ws.jobs()) == 1
    assert len(ws.fake.calls_to("chat.postMessage")) == 2  # status + result of the first
    # A new trigger is a new command.
    assert (await ws.slash(dave, "/imagine", "a red fox --n 1"))[0] == 200
    await ws.result(2)
    assert len(await ws.jobs()) == 2


async def test_mentions_in_a_prompt_are_escaped_everywhere(ws: Workspace) -> None:
    eve = ws.user("eve")
    prompt = "<!channel> <@U0BOSS> & <https://evil.test|click> a kite --n 1"
    assert (await ws.slash(eve, "/imagine", prompt))[0] == 200
    await ws.result()
    posted = ws.fake.calls_to("chat.postMessage") + ws.fake.calls_to("chat.update")
    assert len(posted) >= 3
    for call in posted:
        raw = texts(call)
        assert "<!channel>" not in raw and "<@U0BOSS>" not in raw and "<https://evil" not in raw
        assert "&lt;!channel&gt;" in raw and "&amp;" in raw
    assert ws.fake.violations == []


# ------------------------------------------------------------------------------- buttons
async def test_a_button_click_is_handled_by_a_fresh_bolt_app_after_a_restart(
    tmp_path: Path, fake: SlackFake
) -> None:
    async with workspace_on(tmp_path, fake) as ws:
        frank = ws.user("frank")
        await ws.slash(frank, "/imagine", "a paper boat --n 2")
        result = await ws.result()
        job_id = (await ws.jobs())[0]["id"]
    # A new process: new App, new bolt app, new admin cache; only SQLite survives.
    async with workspace_on(tmp_path, fake) as ws2:
        ws2.names.update({frank: "frank"})
        status, body = await ws2.click(frank, result, f"pick:{job_id}:2", thread_ts="111.222")
        assert (status, body) == (200, "")
        picked = await ws2.result(2)
        assert picked.params["thread_ts"] == "111.222"
        assert "Image 2" in picked.params["text"]
        assert f"refine:{job_id}:2" in button_ids(picked)
        uploads = fake.calls_to("files.completeUploadExternal")
        assert len(uploads) == 2 and uploads[1].params["thread_ts"] == "111.222"
    assert fake.violations == []


async def test_refine_opens_a_modal_and_its_submission_creates_a_child(ws: Workspace) -> None:
    gina = ws.user("gina")
    await ws.slash(gina, "/imagine", "a quiet harbor --n 2")
    result = await ws.result()
    parent = (await ws.jobs())[0]["id"]

    trigger = ws.fake.new_trigger()
    assert (await ws.click(gina, result, f"refine:{parent}:1", trigger=trigger))[0] == 200
    (opened,) = await ws.fake.wait_for("views.open")
    assert opened.params["trigger_id"] == trigger
    view = opened.params["view"]
    # The result is in its job's thread, so the refinement will be too.
    thread = result.params["thread_ts"]
    assert FormContext.load(view["private_metadata"]) == FormContext(
        f"refine:{parent}:1", CHANNEL, thread
    )
    kinds = {b["block_id"]: b["element"]["type"] for b in view["blocks"]}
    assert kinds == {
        "prompt": "plain_text_input",
        "strength": "number_input",
        "image": "file_input",  # optional: another picture to start from
    }

    status, body = await ws.submit(
        gina, view, {"prompt": "a quiet harbor at night", "strength": "0.4"}
    )
    assert (status, body) == (200, "")  # an empty ack closes the modal
    refined = await ws.result(2)
    jobs = await ws.jobs()
    assert len(jobs) == 2
    child = jobs[1]
    assert (child["kind"], child["parent_job_id"], child["parent_index"]) == ("refine", parent, 1)
    assert json.loads(child["request_json"])["strength"] == pytest.approx(0.4)
    assert "Refinement: a quiet harbor at night" in refined.params["text"]
    assert ws.fake.violations == []


async def test_a_picked_image_offers_the_image_verbs_and_a_remix_reroll_opens_a_modal(
    ws: Workspace,
) -> None:
    hana = ws.user("hana")
    await ws.slash(hana, "/imagine", "a lantern --n 2 --remix")
    result = await ws.result()
    parent = (await ws.jobs())[0]["id"]
    assert f"vary-strong:{parent}:1" in button_ids(result)
    assert (await ws.click(hana, result, f"pick:{parent}:1"))[0] == 200
    picked = await ws.result(2)
    ids = button_ids(picked)
    for verb in ("upscale", "vary-subtle", "vary-strong", "zoom-out", "pan-left", "pan-down"):
        assert f"{verb}:{parent}:1" in ids
    assert all(len(b["elements"]) <= 25 for b in picked.params["blocks"] if b["type"] == "actions")

    trigger = ws.fake.new_trigger()
    assert (await ws.click(hana, result, f"reroll:{parent}", trigger=trigger))[0] == 200
    (opened,) = await ws.fake.wait_for("views.open")
    view = opened.params["view"]
    context = FormContext.load(view["private_metadata"])
    # The remixed reroll answers in the result's thread (Slack threads: the job's own).
    assert (context.action, context.channel_id) == (f"reroll:{parent}", CHANNEL)
    assert context.thread_id
    status, _ = await ws.submit(hana, view, {"prompt": "a lantern in the rain"})
    assert status == 200
    rerolled = await ws.result(3)
    assert "Reroll: a lantern in the rain" in rerolled.params["text"]
    jobs = await ws.jobs()
    assert (jobs[-1]["kind"], jobs[-1]["parent_job_id"]) == ("reroll", parent)
    # Upscale from the picked message: a labelled resize on the offline renderer.
    assert (await ws.click(hana, picked, f"upscale:{parent}:1"))[0] == 200
    upscaled = await ws.result(4)
    assert "Upscale: a lantern" in upscaled.params["text"]
    assert "Resized, not generated" in upscaled.params["text"] or any(
        "Resized, not generated" in json.dumps(b) for b in upscaled.params["blocks"]
    )
    assert ws.fake.violations == []


async def test_admin_commands_follow_slack_roles_and_fail_closed(ws: Workspace) -> None:
    henry = ws.user("henry")  # an ordinary member
    owner = ws.user("olga", owner=True)
    await ws.slash(henry, "/imagine-admin", "grant <@UHENRY> 5")
    assert "Only admins" in await ws.ephemeral(1)
    await ws.slash(owner, "/imagine-admin", "grant <@UHENRY> 5")
    assert "Granted UHENRY 5 extra images" in await ws.ephemeral(2)
    # The role is cached: a second command by the owner does not ask Slack again.
    await ws.slash(owner, "/imagine-admin", "help")
    assert "Admin commands" in await ws.ephemeral(3)
    assert [c.params["user"] for c in ws.fake.calls_to("users.info")] == [henry, owner]
    # users.info failing (here: an unknown user) never makes anyone an admin.
    await ws.slash("UGHOST", "/imagine-admin", "grant <@UGHOST> 99")
    assert "Only admins" in await ws.ephemeral(4)
    rows = await ws.app.store.fetchall("SELECT actor, action FROM admin_log")
    assert [tuple(r) for r in rows] == [(f"slack:{TEAM_ID}:{owner}", "grant")]


async def test_not_in_channel_falls_back_to_the_response_url(ws: Workspace) -> None:
    ivy = ws.user("ivy")
    ws.fake.member_channels = set()  # the bot was never invited anywhere
    assert (await ws.slash(ivy, "/imagine-quota"))[0] == 200
    await ws.fake.wait_for("chat.postEphemeral")
    await ws.fake.wait_until(lambda: bool(ws.fake.responses))
    rid, posted = ws.fake.responses[0]
    assert rid == "r1" and posted["response_type"] == "ephemeral"
    assert "images left" in posted["text"]


# --------------------------------------------------------------------------------- serve
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serve_runs_http_mode_until_cancelled(tmp_path: Path, fake: SlackFake) -> None:
    port = free_port()
    settings = make_settings(
        tmp_path, FAST, slack_env(fake, SLACK_PORT=str(port), SLACK_HOST="127.0.0.1")
    )
    assert enabled(settings)
    jo = "UJO"
    fake.add_user(jo, "jo")
    async with App.open(settings) as app, aiohttp.ClientSession() as http:
        ready = asyncio.Event()
        task = asyncio.create_task(ADAPTER.serve(app, app.settings, lambda _: ready.set()))
        await asyncio.wait_for(ready.wait(), 10)
        async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
            assert resp.status == 200
        w = Workspace(fake, app, f"http://127.0.0.1:{port}/slack/events", http)
        assert (await w.slash(jo, "/imagine", "help"))[0] == 200
        await fake.wait_for("chat.postEphemeral")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(f"http://127.0.0.1:{port}/healthz")


async def test_serve_runs_socket_mode_and_acks_envelopes(tmp_path: Path, fake: SlackFake) -> None:
    # No signing secret: Socket Mode needs none.
    settings = make_settings(
        tmp_path,
        FAST,
        {
            "SLACK_BOT_TOKEN": TOKEN,
            "SLACK_APP_TOKEN": fake.app_token,
            "SLACK_API_URL": fake.api_url,
        },
    )
    fake.add_user("UKIM", "kim")
    async with App.open(settings) as app:
        ready = asyncio.Event()
        task = asyncio.create_task(ADAPTER.serve(app, app.settings, lambda _: ready.set()))
        await asyncio.wait_for(ready.wait(), 10)
        w = Workspace(fake, app, "", None)  # type: ignore[arg-type]
        w.names["UKIM"] = "kim"
        command = dict(parse_qsl(w.slash_body("UKIM", "/imagine", "help", fake.new_trigger())))
        await fake.socket_send(
            {
                "envelope_id": "env-1",
                "type": "slash_commands",
                "accepts_response_payload": True,
                "payload": command,
            }
        )
        await fake.wait_until(lambda: bool(fake.socket_acks))
        assert fake.socket_acks[0]["envelope_id"] == "env-1"
        (reply,) = await fake.wait_for("chat.postEphemeral")
        assert reply.params["user"] == "UKIM" and "--n" in reply.params["text"]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [c.method for c in fake.calls][:1] == ["apps.connections.open"]


async def test_serve_refuses_http_mode_without_a_signing_secret(tmp_path: Path) -> None:
    from bot.errors import ConfigError

    settings = make_settings(tmp_path, FAST, {"SLACK_BOT_TOKEN": TOKEN})
    assert not enabled(make_settings(tmp_path, FAST, {}))
    async with App.open(settings, start=False) as app:
        with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET"):
            await ADAPTER.serve(app, app.settings, lambda _: None)


async def test_serve_names_a_port_in_use(tmp_path: Path, fake: SlackFake) -> None:
    from bot.errors import ConfigError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = make_settings(
            tmp_path, FAST, slack_env(fake, SLACK_PORT=str(port), SLACK_HOST="127.0.0.1")
        )
        async with App.open(settings, start=False) as app:
            with pytest.raises(ConfigError, match="SLACK_PORT"):
                await ADAPTER.serve(app, app.settings, lambda _: None)


# ------------------------------------------------------------------------------ rendering
def test_many_buttons_fit_slack_limits_and_stay_unique() -> None:
    # 300 distinct actions, each twice: more than one message can show.
    buttons = [Button(f"B{i}", f"v{i % 300}:abcdefghijkm:1") for i in range(600)]
    blocks = reply_blocks(Reply("x", buttons=tuple(buttons), notice="n"))
    check_message_blocks(blocks)
    actions = [b for b in blocks if b["type"] == "actions"]
    assert len(blocks) == 50 and all(len(b["elements"]) <= 25 for b in actions)
    ids = [el["action_id"] for b in actions for el in b["elements"]]
    assert len(ids) == len(set(ids)) == 48 * 5
    assert (
        action_blocks([Button("x" * 200, "info:abcdefghijkm", "secondary")])[0]["elements"][0][
            "text"
        ]["text"]
        == "x" * 74 + "…"
    )


def test_escape_and_modal_round_trip() -> None:
    assert escape("<!here> & <@U1>") == "&lt;!here&gt; &amp; &lt;@U1&gt;"
    long_text = "&" * 5000
    (section,) = [b for b in reply_blocks(Reply(long_text)) if b["type"] == "section"]
    assert len(section["text"]["text"]) <= 3000 and section["text"]["text"].endswith("&amp;…")
    form = Form(
        "Refine image 1 of a very long title",
        "refine:abcdefghijkm:1",
        (
            FormField("prompt", "Prompt", "a cat"),
            FormField("strength", "Strength", "0.6", kind="number", min_value=0.0, max_value=1.0),
        ),
    )
    view = modal_view(form, FormContext("refine:abcdefghijkm:1", "C1", "9.9"))
    check_modal(view)
    assert len(view["title"]["text"]) <= 24
    assert FormContext.load(view["private_metadata"]) == FormContext(
        "refine:abcdefghijkm:1", "C1", "9.9"
    )
    assert FormContext.load("not json") is None and FormContext.load("[1]") is None
    state = {
        "values": {
            "prompt": {"prompt": {"value": "a dog"}},
            "strength": {"strength": {"value": None}},
        }
    }
    assert view_fields({"state": state}) == {"prompt": "a dog", "strength": ""}
