"""Slack threads: a job's status message is the root of a thread holding its grid, buttons and
every child; the channel keeps one compact line per job. Through slack-bolt, against the fake.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.slack_api import ApiCall, SlackFake
from tests.slack_workspace import CHANNEL, TOKEN, Workspace, has_buttons, workspace_on


@pytest.fixture(autouse=True)
def _no_slack_oauth_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET", "SLACK_VERIFICATION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def fake() -> AsyncIterator[SlackFake]:
    async with SlackFake(TOKEN) as f:
        yield f


def root_lines(fake: SlackFake, root: str) -> list[str]:
    return [
        str(c.params.get("text")) for c in fake.calls_to("chat.update") if c.params["ts"] == root
    ]


async def line_with(ws: Workspace, root: str, text: str) -> None:
    await ws.fake.wait_until(lambda: any(text in t for t in root_lines(ws.fake, root)))


async def child_from(ws: Workspace, uid: str, message: ApiCall, action: str, n: int) -> ApiCall:
    """Click ``action`` on ``message`` (filling the modal a refine opens); the n-th result."""
    trigger = ws.fake.new_trigger()
    assert (await ws.click(uid, message, action, trigger=trigger))[0] == 200
    if action.startswith("refine"):
        (opened,) = await ws.fake.wait_for(
            "views.open", where=lambda c: c.params["trigger_id"] == trigger
        )
        assert (await ws.submit(uid, opened.params["view"], {"prompt": "a red fox at night"}))[
            0
        ] == 200
    return await ws.result(n)


async def test_a_job_threads_its_result_and_children_under_one_updating_root_line(
    tmp_path: Path, fake: SlackFake
) -> None:
    async with workspace_on(tmp_path, fake) as ws:
        alice = ws.user("alice")
        await ws.slash(alice, "/imagine", "a red fox --n 2")
        result = await ws.result()
        (status,) = [c for c in fake.calls_to("chat.postMessage") if not has_buttons(c)][:1]
        assert status.params.get("thread_ts") is None  # the root is in the channel
        root = (await ws.jobs())[0]["status_ref"]
        assert fake.messages[root].thread_ts is None

        # The grid, its upload and its buttons are in the thread under the status message.
        assert result.params["thread_ts"] == root
        (done,) = fake.calls_to("files.completeUploadExternal")
        assert done.params["thread_ts"] == root and done.params["channel_id"] == CHANNEL
        await line_with(ws, root, "alice: a red fox: 2 images")
        job_id = (await ws.jobs())[0]["id"]

        # A refinement started in the thread stays in it, and the root line counts it.
        refined = await child_from(ws, alice, result, f"refine:{job_id}:1", 2)
        assert refined.params["thread_ts"] == root
        child_status = [
            c for c in fake.calls_to("chat.postMessage") if "Refinement" in c.params.get("text", "")
        ]
        assert all(c.params.get("thread_ts") == root for c in child_status)
        await line_with(ws, root, "alice: a red fox: 2 images, 1 refinement")

    # After a restart the thread is found from the jobs in the database, not from memory.
    async with workspace_on(tmp_path, fake) as ws:
        ws.user("alice")
        child_id = (await ws.jobs())[1]["id"]
        rerolled = await child_from(ws, "UALICE", refined, f"reroll:{child_id}", 3)
        assert rerolled.params["thread_ts"] == root
        await line_with(ws, root, "2 images, 1 refinement, 1 reroll")
        channel_level = [
            c for c in fake.calls_to("chat.postMessage") if not c.params.get("thread_ts")
        ]
        assert len(channel_level) == 1  # one root line per job in the channel
        assert fake.violations == []
