"""Saved defaults: the merge rule on its own, then /imagine settings as people use it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot import defaults, grammar
from bot.defaults import BUILTIN, CHANNEL, FLAG, YOURS, Defaults, merge, parse_assignments
from bot.errors import UserError
from bot.quotas import ledger_balances
from tests.conftest import Chat, open_chat

LIMITS = grammar.GrammarLimits()


def one(text: str) -> grammar.ImagineRequest:
    parsed = grammar.parse(text, LIMITS)
    assert isinstance(parsed, grammar.ParsedImagine)
    return parsed.requests[0]


# ------------------------------------------------------------------------- the pure rule
def test_a_flag_wins_then_yours_then_the_channels_then_built_in() -> None:
    mine = Defaults(n=2, style="anime")
    chan = Defaults(n=3, ar="3:2", style="cinematic", remix=True)
    m = merge(one("a fox --style pixel-art"), mine, chan, LIMITS)
    src = dict(m.sources)
    assert (m.request.n, src["n"]) == (2, YOURS)
    assert (m.request.style, src["style"]) == ("pixel-art", FLAG)
    assert ((m.request.width, m.request.height), src["size"]) == (
        grammar.size_for_aspect(3, 2, LIMITS),
        CHANNEL,
    )
    assert (m.remix, src["remix"]) == (True, CHANNEL)
    assert (m.request.model, src["model"]) == (None, BUILTIN)
    assert (m.provider, src["provider"]) == (None, BUILTIN)


def test_explicit_flags_beat_every_default() -> None:
    saved = Defaults(n=1, ar="16:9", style="anime", model="sdxl", remix=True)
    m = merge(one("a fox --n 4 --ar 1:1 --style origami --model other"), saved, saved, LIMITS)
    assert (m.request.n, m.request.width, m.request.height) == (4, 1024, 1024)
    assert (m.request.style, m.request.model) == ("origami", "other")
    assert {k: v for k, v in m.sources if k in ("n", "size", "style", "model")} == {
        "n": FLAG,
        "size": FLAG,
        "style": FLAG,
        "model": FLAG,
    }


def test_avatar_stays_square_and_an_upload_keeps_its_shape() -> None:
    saved = Defaults(ar="16:9")
    assert merge(one("me --avatar"), saved, saved, LIMITS).request.width == 1024
    kept = merge(one("me"), saved, saved, LIMITS, keep_size=True)
    assert dict(kept.sources)["size"] == "input image" and kept.request.size_explicit is False


def test_a_default_no_longer_valid_falls_back() -> None:
    saved = Defaults(n=50, style="gone-style", provider="gone")
    m = merge(one("a fox"), saved, Defaults(), LIMITS, providers=["offline"])
    assert m.request.n == LIMITS.max_images  # clamped to today's limit
    assert (m.request.style, dict(m.sources)["style"]) == (None, BUILTIN)
    assert m.provider is None


def test_assignments_are_checked_with_the_grammars_own_messages() -> None:
    got, cleared = parse_assignments(
        ["n=2", "ar=3:2", "style=Anime", "remix=on", "model=none"], LIMITS, ["offline"]
    )
    assert got == Defaults(n=2, ar="3:2", style="anime", remix=True)
    assert cleared == {"model"}
    with pytest.raises(UserError, match="--n must be a whole number from 1 to 10"):
        parse_assignments(["n=99"], LIMITS, [])
    with pytest.raises(UserError, match="Did you mean anime"):
        parse_assignments(["style=anme"], LIMITS, [])
    with pytest.raises(UserError, match="not set up here"):
        parse_assignments(["provider=openai"], LIMITS, ["offline"])
    with pytest.raises(UserError, match="key=value"):
        parse_assignments(["colour=red"], LIMITS, [])
    with pytest.raises(UserError, match="one value"):
        parse_assignments(["n={1,2}"], LIMITS, [])


def test_json_round_trip_and_updates() -> None:
    d = Defaults(n=2, remix=False)
    assert Defaults.from_json(d.to_json()) == d
    assert d.updated(Defaults(style="anime"), {"n"}) == Defaults(style="anime", remix=False)
    assert Defaults.from_json(None).is_empty()


# ------------------------------------------------------------------------ through the handler
async def _job(chat: Chat, user: str, line: str, **kw: object) -> str:
    sent = await chat.say(user, f"/imagine {line}", **kw)  # type: ignore[arg-type]
    ids = [r.job_id for r in sent if r.job_id]
    assert ids, [r.text for r in sent]
    await chat.settle()
    return ids[-1]


async def test_settings_apply_to_the_next_job_and_info_says_where_from(chat: Chat) -> None:
    [shown] = await chat.say("alice", "/imagine settings")
    assert shown.ephemeral and "Your defaults: (none)" in shown.text
    [saved] = await chat.say("alice", "/imagine settings n=2 ar=3:2 style=anime remix=on")
    assert saved.ephemeral and "n=2 ar=3:2 style=anime remix=on" in saved.text
    job_id = await _job(chat, "alice", "a red fox --n 1")
    job = await chat.app.runner.load(job_id)
    assert job is not None
    assert job.n == 1  # the flag wins
    assert (job.request.width, job.request.height) == grammar.size_for_aspect(3, 2)
    assert job.request.display.style == "anime" and job.request.remix is True
    [info] = await chat.click("alice", f"info:{job_id}")
    assert "n: flag" in info.text and "size: your default" in info.text
    assert "style: your default" in info.text and "provider: built-in" in info.text
    assert "Remix: on" in info.text
    # Bob has none of Alice's defaults.
    bob_job = await chat.app.runner.load(await _job(chat, "bob", "a red fox"))
    assert bob_job is not None and bob_job.n == 4 and bob_job.request.remix is False


async def test_channel_defaults_are_for_admins_and_lose_to_your_own(chat: Chat) -> None:
    [refused] = await chat.say("bob", "/imagine settings --channel n=1")
    assert refused.ephemeral and "Only admins" in refused.text
    [ok] = await chat.say("root", "/imagine settings --channel n=1 style=origami", admin=True)
    assert "This channel's defaults: n=1 style=origami" in ok.text
    await chat.say("bob", "/imagine settings style=anime")
    job = await chat.app.runner.load(await _job(chat, "bob", "a boat"))
    assert job is not None and job.n == 1 and job.request.display.style == "anime"
    assert dict(job.request.display.sources)["n"] == CHANNEL
    # Another channel has none of them.
    other = await chat.app.runner.load(await _job(chat, "bob", "a boat", channel="random"))
    assert other is not None and other.n == 4
    rows = await chat.app.store.fetchall("SELECT action FROM admin_log")
    assert [r["action"] for r in rows] == ["channel-defaults"]
    [reset] = await chat.say("bob", "/imagine settings reset")
    assert "cleared" in reset.text
    [shown] = await chat.say("bob", "/imagine settings")
    assert "Your defaults: (none)" in shown.text and "n=1 style=origami" in shown.text


async def test_bad_settings_get_a_clear_message_and_nothing_is_saved(chat: Chat) -> None:
    [bad] = await chat.say("carol", "/imagine settings n=0 style=anime")
    assert bad.ephemeral and "--n must be a whole number" in bad.text
    rows = await chat.app.store.fetchall("SELECT * FROM preferences")
    assert rows == []
    # "settings" followed by prose is a prompt, not the command.
    job = await chat.app.runner.load(await _job(chat, "carol", "settings of a fantasy novel"))
    assert job is not None and job.prompt == "settings of a fantasy novel"


async def test_defaults_survive_a_restart_and_charge_what_they_ask(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat:
        await chat.say("dan", "/imagine settings n=3")
    async with open_chat(tmp_path) as chat:
        job_id = await _job(chat, "dan", "a lamp")
        job = await chat.app.runner.load(job_id)
        assert job is not None and job.n == 3
        assert json.loads(job.request.to_json())["display_sources"][0] == ["n", YOURS]
        assert await ledger_balances(chat.app.store)
        assert (await chat.app.store.ledger.totals()).committed == 3  # the default's n
    assert defaults.KEYS == ("n", "ar", "style", "provider", "model", "remix")


async def test_the_settings_form_opens_prefilled_and_saves(chat: Chat) -> None:
    await chat.say("erin", "/imagine settings n=3 style=anime")
    [shown] = await chat.say("erin", "/imagine settings")
    assert [b.action for b in shown.buttons] == ["settings:yourdefaults"]  # not an admin
    [opened] = await chat.click("erin", "settings:yourdefaults")
    assert opened.form is not None and len(opened.form.fields) <= 5  # Discord's modal limit
    values = {f.name: f.value for f in opened.form.fields}
    assert values == {
        "n": "3",
        "ar": "default",
        "style": "anime",
        "engine": "default",
        "remix": "default",
    }
    fields = {**values, "n": "", "ar": "16:9", "engine": "offline", "remix": "on"}
    [saved] = await chat.click("erin", "settings:yourdefaults", fields=fields)
    assert "Your defaults: ar=16:9 style=anime provider=offline remix=on" in saved.text
    mine, _ = await defaults.load(chat.app.handler.ctx, chat.actor("erin"), "general")
    assert mine == Defaults(ar="16:9", style="anime", provider="offline", remix=True)
    [bad] = await chat.click("erin", "settings:yourdefaults", fields={**fields, "ar": "9:1"})
    assert bad.ephemeral and "--ar must be W:H" in bad.text
    [refused] = await chat.click("erin", "settings:channeldefts")
    assert "Only admins" in refused.text
    [admin] = await chat.say("root", "/imagine settings", admin=True)
    assert "settings:channeldefts" in [b.action for b in admin.buttons]


async def test_help_lists_the_team_words_and_fits_one_discord_message(chat: Chat) -> None:
    [h] = await chat.say("zoe", "/imagine help")
    for word in ("/imagine settings", "/imagine info JOB", "/imagine tree JOB", "--from JOB"):
        assert word in h.text
    assert "/imagine avatar" in h.text and len(h.text) <= 2000
