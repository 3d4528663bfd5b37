"""Pictures in through Slack's modals: the refine modal's optional file input, and the
new-image modal (a bare ``/imagine`` or the "New image" global shortcut), through slack-bolt
against the Slack fake."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.slack.render import CHANNEL_BLOCK, FormContext
from tests.fakes import make_png
from tests.fakes.slack_api import TEAM_ID, SlackFake
from tests.slack_workspace import CHANNEL, TOKEN, Workspace, workspace_on


@pytest.fixture(autouse=True)
def _no_slack_oauth_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET", "SLACK_VERIFICATION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def ws(tmp_path: Path) -> AsyncIterator[Workspace]:
    async with SlackFake(TOKEN) as fake, workspace_on(tmp_path, fake) as w:
        yield w


def _kinds(view: dict[str, Any]) -> dict[str, str]:
    return {b["block_id"]: b["element"]["type"] for b in view["blocks"]}


async def _refine_view(ws: Workspace, uid: str) -> tuple[str, dict[str, Any]]:
    await ws.slash(uid, "/imagine", "a quiet harbor --n 2")
    result = await ws.result()
    parent = (await ws.jobs())[0]["id"]
    assert (await ws.click(uid, result, f"refine:{parent}:1"))[0] == 200
    (opened,) = await ws.fake.wait_for("views.open")
    return str(parent), opened.params["view"]


async def test_a_picture_uploaded_in_the_refine_modal_is_the_refines_start(
    ws: Workspace,
) -> None:
    gina = ws.user("gina")
    parent, view = await _refine_view(ws, gina)
    [image_block] = [b for b in view["blocks"] if b["block_id"] == "image"]
    assert image_block["optional"] is True
    assert image_block["element"]["max_files"] == 1
    assert "png" in image_block["element"]["filetypes"]

    uploaded = ws.fake.add_file("mine.png", make_png("mine", 320, 192))
    status, body = await ws.submit(
        gina, view, {"prompt": "a quiet harbor at dusk", "strength": "0.5"}, files=[uploaded]
    )
    assert (status, body) == (200, "")
    refined = await ws.result(2)
    assert "Refinement: a quiet harbor at dusk" in refined.params["text"]
    child = (await ws.jobs())[1]
    # The lineage still names the image refined; the cost is a refine's (the parent's count).
    assert (child["kind"], child["parent_job_id"], child["parent_index"]) == ("refine", parent, 1)
    assert (child["owner_id"], child["n"]) == (gina, 2)
    request = json.loads(child["request_json"])
    picked = await ws.app.store.fetchall(
        "SELECT sha256 FROM images WHERE job_id = ? AND idx = 1", (parent,)
    )
    assert request["init_sha"] and request["init_sha"] != picked[0]["sha256"]
    stored = ws.app.settings.data_dir / "images" / request["init_sha"][:2]
    assert any(p.name.startswith(request["init_sha"]) for p in stored.iterdir())
    [download] = ws.fake.requests_to("/files-pri/")
    assert download.headers.get("Authorization") == f"Bearer {TOKEN}"
    assert ws.fake.violations == []


async def test_a_refine_without_an_upload_starts_from_the_picked_image(ws: Workspace) -> None:
    gina = ws.user("gina")
    parent, view = await _refine_view(ws, gina)
    assert (await ws.submit(gina, view, {"prompt": "a quiet harbor, foggy"}))[0] == 200
    await ws.result(2)
    child = (await ws.jobs())[1]
    picked = await ws.app.store.fetchall(
        "SELECT sha256 FROM images WHERE job_id = ? AND idx = 1", (parent,)
    )
    assert json.loads(child["request_json"])["init_sha"] == picked[0]["sha256"]
    assert not ws.fake.requests_to("/files-pri/")


async def test_a_file_that_is_no_picture_is_refused_kindly_and_costs_nothing(
    ws: Workspace,
) -> None:
    gina = ws.user("gina")
    _, view = await _refine_view(ws, gina)
    text = ws.fake.add_file("notes.txt", b"not a picture", mimetype="text/plain")
    await ws.submit(gina, view, {"prompt": "a harbor"}, files=[text])
    assert "not a picture" in await ws.ephemeral(1)
    # Bytes that claim to be a PNG but are not: the core's one image gate says no.
    fake_png = ws.fake.add_file("broken.png", b"\x89PNG not really", mimetype="image/png")
    _, view2 = await _refine_again(ws, gina)
    await ws.submit(gina, view2, {"prompt": "a harbor"}, files=[fake_png])
    refusal = await ws.ephemeral(2)
    assert "picture" in refusal.lower() or "image" in refusal.lower(), refusal
    assert len(await ws.jobs()) == 1  # no child, nothing reserved
    assert ws.fake.violations == []


async def _refine_again(ws: Workspace, uid: str) -> tuple[str, dict[str, Any]]:
    parent = (await ws.jobs())[0]["id"]
    result = await ws.result()
    assert (await ws.click(uid, result, f"refine:{parent}:1"))[0] == 200
    opened = await ws.fake.wait_for("views.open", 2)
    return str(parent), opened[1].params["view"]


async def test_a_bare_imagine_opens_the_new_image_modal_and_runs_imagine_with_the_picture(
    ws: Workspace,
) -> None:
    ivy = ws.user("ivy")
    trigger = ws.fake.new_trigger()
    assert (await ws.slash(ivy, "/imagine", "  ", trigger=trigger))[0] == 200
    (opened,) = await ws.fake.wait_for("views.open")
    assert opened.params["trigger_id"] == trigger
    view = opened.params["view"]
    assert _kinds(view) == {"prompt": "plain_text_input", "image": "file_input"}
    assert FormContext.load(view["private_metadata"]) == FormContext("", CHANNEL)

    uploaded = ws.fake.add_file("sketch.png", make_png("sketch", 256, 256))
    status, _ = await ws.submit(ivy, view, {"prompt": "a lighthouse --n 1"}, files=[uploaded])
    assert status == 200
    result = await ws.result()
    assert "a lighthouse" in result.params["text"] and result.params["channel"] == CHANNEL
    [job] = await ws.jobs()
    assert (job["kind"], job["owner_id"], job["n"]) == ("imagine", ivy, 1)
    assert json.loads(job["request_json"]).get("init_sha")
    assert ws.fake.violations == []


async def test_the_new_image_modal_without_a_picture_is_a_plain_imagine(ws: Workspace) -> None:
    ivy = ws.user("ivy")
    await ws.slash(ivy, "/imagine")
    (opened,) = await ws.fake.wait_for("views.open")
    await ws.submit(ivy, opened.params["view"], {"prompt": "a red kite"})
    await ws.result()
    [job] = await ws.jobs()
    assert not json.loads(job["request_json"]).get("init_sha")


def _global_shortcut(ws: Workspace, uid: str) -> dict[str, Any]:
    """A global shortcut payload, as Slack sends one: no channel, no message."""
    return {
        "type": "shortcut",
        "callback_id": "imagine_new",
        "trigger_id": ws.fake.new_trigger(),
        "action_ts": "1700000000.000200",
        "team": {"id": TEAM_ID, "domain": "fake"},
        "user": {"id": uid, "username": ws.names[uid], "team_id": TEAM_ID},
        "token": "legacy-unused",
    }


async def test_the_global_shortcut_asks_where_to_post_and_answers_there(ws: Workspace) -> None:
    ivy = ws.user("ivy")
    assert (await ws.interactive(_global_shortcut(ws, ivy)))[0] == 200
    (opened,) = await ws.fake.wait_for("views.open")
    view = opened.params["view"]
    assert _kinds(view) == {
        "prompt": "plain_text_input",
        "image": "file_input",
        CHANNEL_BLOCK: "conversations_select",
    }
    menu = next(b for b in view["blocks"] if b["block_id"] == CHANNEL_BLOCK)["element"]
    assert menu["default_to_current_conversation"] is True
    uploaded = ws.fake.add_file("photo.jpg", make_png("photo", 200, 200), mimetype="image/jpeg")
    await ws.submit(ivy, view, {"prompt": "a garden"}, files=[uploaded], conversation=CHANNEL)
    result = await ws.result()
    assert result.params["channel"] == CHANNEL
    [job] = await ws.jobs()
    assert job["channel_id"] == CHANNEL
    assert json.loads(job["request_json"]).get("init_sha")
    assert ws.fake.violations == []
