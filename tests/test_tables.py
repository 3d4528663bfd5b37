"""The verb and admin tables: one entry is all a new verb or admin command needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot import admin
from bot.actions import VERBS, Call, Verb, VerbTable
from bot.errors import UserError
from bot.jobs import JobSpec
from bot.providers.base import Capabilities
from bot.types import Action, Reply
from tests.conftest import Chat, open_chat


async def _finished(chat: Chat, line: str = "a red fox --n 2 --seed 3") -> str:
    [status] = await chat.say("alice", f"/imagine {line}")
    assert status.job_id
    await chat.settle()
    return status.job_id


async def test_a_test_only_verb_registered_through_the_table_alone(chat: Chat) -> None:
    seen: list[tuple[str, int | None]] = []

    async def shout(c: Call) -> None:
        seen.append((c.job.id, c.index))
        await c.responder.send(Reply(f"{c.job.prompt.upper()}!", ephemeral=True))

    chat.app.handler.verbs.add(
        Verb(
            "shout",
            "Shout",
            "continue",
            "only {owner}",
            run=shout,
            per_image=True,
            places={"grid": "secondary"},
        )
    )
    job = await _finished(chat)
    result = chat.result(job)
    shouts = [b for b in result.buttons if b.label.startswith("Shout")]
    assert [b.label for b in shouts] == ["Shout 1", "Shout 2"]
    assert shouts[1].action == f"shout:{job}:2"
    [reply] = await chat.click("bob", shouts[1].action)
    assert reply.text == "A RED FOX!" and reply.ephemeral
    assert seen == [(job, 2)]
    # and its permission rule is applied from the table: collaboration off keeps it to alice
    await chat.say("root", "/admin collab off", admin=True)
    [refused] = await chat.click("bob", shouts[0].action)
    assert refused.text == "only Alice" and seen == [(job, 2)]


async def test_a_verb_that_builds_a_child_job_charges_the_clicker(chat: Chat) -> None:
    from bot import specs

    async def again(c: Call) -> JobSpec:
        name, provider = c.ctx.provider()
        return specs.build_spec(
            specs.reparse(c.job),
            kind="reroll",
            provider_name=name,
            caps=provider.capabilities,
            provider_label=provider.label,
            styles=c.ctx.styles,
            parent=(c.job.id, None),
            n=1,
        )

    chat.app.handler.verbs.add(
        Verb("again", "Again", "continue", build=again, places={"grid": "secondary"})
    )
    job = await _finished(chat)
    before = (await chat.app.quotas.status(chat.actor("bob"))).daily_used
    sent = await chat.click("bob", f"again:{job}")
    assert sent and sent[0].parent_job_id == job
    await chat.settle()
    assert (await chat.app.quotas.status(chat.actor("bob"))).daily_used == before + 1


async def test_a_verb_whose_capability_is_missing_shows_no_button(chat: Chat) -> None:
    chat.app.handler.verbs.add(
        Verb(
            "zoom",
            "Zoom",
            "continue",
            run=lambda c: _never(),
            needs=lambda caps: False,
            places={"grid": "secondary"},
        )
    )
    job = await _finished(chat)
    assert not [b for b in chat.result(job).buttons if b.label == "Zoom"]


async def _never() -> None:
    raise AssertionError("not reachable")


async def test_an_unknown_verb_is_refused_before_the_job_is_read(chat: Chat) -> None:
    [reply] = await chat.click("alice", "explode:abcdefghijkm")
    assert reply.ephemeral and "not one of ours" in reply.text


def test_the_table_refuses_a_duplicate_or_malformed_verb() -> None:
    table = VerbTable(VERBS)
    with pytest.raises(ValueError, match="already"):
        table.add(VERBS[0])
    with pytest.raises(ValueError, match="exactly one"):
        table.add(Verb("nothing", "Nothing", "anyone"))
    with pytest.raises(ValueError, match="codec"):
        table.add(Verb("Bad Verb", "Bad", "anyone", run=lambda c: _never()))


def test_buttons_follow_table_order_and_capabilities() -> None:
    table = VerbTable(VERBS)
    assert table.names() == [
        "pick",
        "upscale",
        "refine",
        "vary",
        "vary-subtle",
        "vary-strong",
        "reroll",
        "zoom-out",
        "zoom-out-double",
        "pan-left",
        "pan-right",
        "pan-up",
        "pan-down",
        "info",
        "delete",
        "cancel",
        "tree",
        "sizes",
        "icon",
    ]
    no_img2img = Capabilities(img2img=False)
    assert "refine" not in [v.name for v in table._for("grid", no_img2img)]
    # The image verbs are gated by the capabilities that make them work.
    plain = Capabilities()
    pick = [v.name for v in table._for("pick", plain)]
    assert "upscale" not in pick and not any(n.startswith(("zoom", "pan")) for n in pick)
    full = Capabilities(upscale="model", outpaint=True)
    pick = [v.name for v in table._for("pick", full)]
    assert {"upscale", "zoom-out", "zoom-out-double", "pan-left", "pan-down"} <= set(pick)
    assert "upscale" in [v.name for v in table._for("pick", Capabilities(upscale="resize"))]


def test_buttons_fit_every_platform() -> None:
    """A grid of 4 and a picked image with every verb fit Discord's 5 rows of 5 buttons and
    Slack's 25 elements per actions block; the image verbs are on the Pick reply only."""
    table = VerbTable(VERBS)
    full = Capabilities(upscale="model", outpaint=True)
    grid = [v for v in table._for("grid", full)]
    assert sum(4 if v.per_image else 1 for v in grid) <= 25
    assert not {"upscale", "zoom-out", "pan-left"} & {v.name for v in grid}
    assert len(table._for("pick", full)) <= 15
    # The old single Vary is still in the table, so its buttons keep working, but not shown.
    assert table.get("vary") is not None
    assert all("vary" not in [v.name for v in table._for(p, full)] for p in ("grid", "pick"))


@pytest.mark.parametrize(
    "text, action",
    [
        ("pick:abcdefghijkm:3", Action("pick", "abcdefghijkm", 3)),
        ("reroll:abcdefghijkm", Action("reroll", "abcdefghijkm", None)),
        ("zoom-out:abcdefghijkm:12", Action("zoom-out", "abcdefghijkm", 12)),
        ("pick:abcdefghijk:3", None),  # an id is 12 characters
        ("pick:abcdefghijkm:123", None),
        ("PICK:abcdefghijkm", None),
        ("pick:abcdefghijkm:3:4", None),
        ("", None),
    ],
)
def test_the_one_button_codec(text: str, action: Action | None) -> None:
    assert Action.decode(text) == action
    if action is not None:
        assert action.encode() == text


def test_admin_usage_is_generated_from_the_table() -> None:
    text = admin.usage()
    assert text.startswith("Admin commands:")
    for cmd in admin.COMMANDS:
        assert cmd.usage in text and cmd.help in text
    assert "/admin limit USER DAILY [MONTHLY]" in text


async def test_admin_refuses_a_shape_that_fits_no_entry(chat: Chat) -> None:
    [reply] = await chat.say("root", "/admin grant @bob", admin=True)
    assert "did not understand" in reply.text and "/admin grant USER UNITS" in reply.text
    [reply] = await chat.say("root", "/admin grant @bob ten", admin=True)
    assert reply.text == "UNITS must be a whole number (got ten)."
    rows = await chat.app.store.fetchall("SELECT action FROM admin_log")
    assert rows == []
    [reply] = await chat.say("root", "/admin block @bob spamming the channel", admin=True)
    assert reply.text == "Blocked bob."
    [blocked] = await chat.say("bob", "/quota")
    assert "spamming the channel" in blocked.text


@pytest.mark.parametrize(
    "platform, token, uid",
    [
        ("slack", "<@U0BOB>", "U0BOB"),
        ("slack", "<@U0BOB|bob>", "U0BOB"),
        ("slack", "<@W0BOB|bob.smith>", "W0BOB"),
        ("slack", "U0BOB", "U0BOB"),
        ("discord", "<@140000000000000002>", "140000000000000002"),
        ("discord", "<@!140000000000000002>", "140000000000000002"),
        ("discord", "140000000000000002", "140000000000000002"),
        ("web", "bob", "bob"),
    ],
)
def test_every_mention_form_resolves(platform: str, token: str, uid: str) -> None:
    assert admin.resolve_user(token, platform) == uid


@pytest.mark.parametrize(
    "platform, token",
    [
        ("slack", "@bob"),
        ("slack", "bob"),
        ("discord", "@bob"),
        ("discord", "<@bob>"),
        ("web", "<script>"),
    ],
)
def test_a_name_that_cannot_be_resolved_is_refused(platform: str, token: str) -> None:
    with pytest.raises(UserError):
        admin.resolve_user(token, platform)


@pytest.mark.parametrize(
    "line",
    [
        "block @bob",
        "unblock @bob",
        "grant @bob 5",
        "limit @bob 3",
        "reset @bob",
    ],
)
async def test_no_admin_command_reports_success_for_an_unresolved_user(
    tmp_path: Path, line: str
) -> None:
    async with open_chat(tmp_path) as chat:
        slack = Chat(chat.app, platform="slack", tenant="T0FAKE")
        [reply] = await slack.say("root", f"/admin {line}", admin=True)
        assert reply.ephemeral and "could not tell who @bob is" in reply.text
        assert "Blocked" not in reply.text and "Granted" not in reply.text
        assert await chat.app.store.fetchall("SELECT * FROM admin_log") == []
        assert await chat.app.store.fetchall("SELECT * FROM blocks") == []
