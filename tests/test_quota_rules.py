"""Quota rules, through the public API and a real SQLite store: how limits are merged from
config, roles and admin overrides, what a workspace shares and what it never does, blocks,
when windows reset, and the /quota reply a user reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.app import App
from bot.config import QuotaSettings
from bot.errors import QuotaExceeded, UserError
from bot.quotas import Quotas, QuotaStatus, workspace_scope
from bot.quotas import user_scope as _user_scope
from bot.store import Store
from bot.types import Actor
from tests.conftest import Chat, make_settings

UTC = ZoneInfo("UTC")
ALICE = Actor("test", "team", "alice", "Alice")
BOB = Actor("test", "team", "bob", "Bob")


def scope_of(actor: Actor) -> str:
    return _user_scope(actor.platform, actor.tenant, actor.user_id)


class Clock:
    def __init__(self, when: datetime) -> None:
        self.now = when.timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(any_store: Any) -> Any:
    """Each rule on SQLite and on PostgreSQL (tests/conftest.py's any_store)."""
    return any_store


def quotas_for(
    store: Store, clock: Clock | None = None, *, admins: Sequence[str] = (), **limits: object
) -> Quotas:
    settings = QuotaSettings(**limits)  # type: ignore[arg-type]
    return Quotas(
        store,
        settings,
        is_admin=lambda a: a.is_admin or a.user_id in admins,
        clock=clock or Clock(datetime(2026, 5, 14, 12, 0, tzinfo=UTC)),
    )


class Ledger:
    """Reserve and settle jobs the way the job layer does: job row and reservation in one
    transaction, so a refused reservation leaves no job."""

    def __init__(self, store: Store, quotas: Quotas, prefix: str = "job") -> None:
        self.store = store
        self.quotas = quotas
        self.prefix = prefix
        self.count = 0

    async def reserve(self, actor: Actor, *units: int) -> list[str]:
        """One reservation for jobs of these sizes (a job holds 1 to 10 images)."""
        ids = []
        async with self.store.transaction() as db:
            for n in units:
                self.count += 1
                job_id = f"{self.prefix}{self.count}"
                await db.execute(
                    "INSERT INTO jobs (id, platform, tenant, channel_id, owner_id, kind, state, "
                    "request_json, provider, seed, n, created_at) VALUES (?, ?, ?, 'c', ?, "
                    "'imagine', 'queued', '{}', 'offline', 0, ?, 0)",
                    (job_id, actor.platform, actor.tenant, actor.user_id, n),
                )
                ids.append(job_id)
            await self.quotas.reserve(db, actor, list(zip(ids, units, strict=True)))
        return ids

    async def refused(self, actor: Actor, n: int = 1) -> str:
        before = self.count
        with pytest.raises(UserError) as info:
            await self.reserve(actor, n)
        self.count = before
        return info.value.message

    async def settle(self, job_id: str, delivered: int, state: str = "done") -> None:
        async with self.store.transaction() as db:
            await db.execute("UPDATE jobs SET state = ? WHERE id = ?", (state, job_id))
            await self.quotas.settle(db, job_id, delivered)


async def limits_of(quotas: Quotas, actor: Actor) -> tuple[int, int]:
    st = await quotas.status(actor)
    return st.daily_limit, st.monthly_limit


# ------------------------------------------------------------------------------ role merging
ROLES: Mapping[str, Mapping[str, int]] = {
    "plus": {"daily": 20, "monthly": 300},
    "pro": {"daily": 40, "monthly": 200},
    "free-days": {"daily": 0},
    "free-months": {"monthly": 0},
    "stingy": {"daily": 2, "monthly": 10},
    "monthly-only": {"monthly": 5000},
    "empty": {},
}


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        ((), (10, 100)),  # config
        (("nobody-configured-this",), (10, 100)),
        (("empty",), (10, 100)),
        (("stingy",), (10, 100)),  # a role never lowers a limit
        (("plus",), (20, 300)),
        (("plus", "pro"), (40, 300)),  # the most generous wins, per window
        (("pro", "plus"), (40, 300)),  # whatever the order
        (("monthly-only",), (10, 5000)),  # a window the role does not name keeps the config
        (("free-days",), (0, 100)),  # 0 = unlimited, the most generous of all
        (("plus", "free-days"), (0, 300)),
        (("free-days", "plus"), (0, 300)),
        (("free-months", "pro"), (40, 0)),
        (("pro", "free-months", "stingy"), (40, 0)),
    ],
)
async def test_roles_merge_to_the_most_generous_limit(
    store: Store, roles: tuple[str, ...], expected: tuple[int, int]
) -> None:
    quotas = quotas_for(store, user_daily=10, user_monthly=100, roles=ROLES)
    actor = Actor("test", "team", "carol", roles=roles)
    assert await limits_of(quotas, actor) == expected


async def test_a_user_who_never_generated_has_used_nothing(store: Store) -> None:
    quotas = quotas_for(store, user_daily=10, user_monthly=100)
    await Ledger(store, quotas).reserve(BOB, 3)
    st = await quotas.status(ALICE)
    assert (st.daily_used, st.monthly_used, st.daily_left, st.monthly_left) == (0, 0, 10, 100)
    assert (st.exempt, st.blocked) == (False, None)


async def test_an_unlimited_config_stays_unlimited_whatever_the_role(store: Store) -> None:
    quotas = quotas_for(store, user_daily=0, user_monthly=0, roles=ROLES)
    actor = Actor("test", "team", "carol", roles=("stingy", "plus"))
    assert await limits_of(quotas, actor) == (0, 0)


async def test_role_limits_are_enforced_not_only_shown(store: Store) -> None:
    quotas = quotas_for(store, user_daily=2, user_monthly=100, roles=ROLES)
    ledger = Ledger(store, quotas)
    plus = Actor("test", "team", "carol", roles=("plus",))
    await ledger.reserve(plus, 10, 10)
    assert await ledger.refused(plus) == (
        "That needs 1 image, but your daily quota has 0 of 20 left. It resets at 00:00 UTC."
    )
    free = Actor("test", "team", "dan", roles=("free-days",))
    await ledger.reserve(free, *[10] * 10)  # no daily limit; the monthly one still holds
    assert "your monthly quota has 0 of 100 left" in await ledger.refused(free)


async def test_an_admin_override_beats_roles_and_none_keeps_the_merged_value(
    store: Store,
) -> None:
    quotas = quotas_for(store, user_daily=10, user_monthly=100, roles=ROLES)
    pro = Actor("test", "team", "carol", roles=("pro",))
    await quotas.set_limits(scope_of(pro), 3, None)
    assert await limits_of(quotas, pro) == (3, 200)
    await quotas.set_limits(scope_of(pro), None, 7)  # replaces the whole override
    assert await limits_of(quotas, pro) == (40, 7)


# --------------------------------------------------------------------- admin monthly limits
async def test_an_admin_set_monthly_limit_is_enforced_and_resets_next_month(
    store: Store,
) -> None:
    clock = Clock(datetime(2026, 5, 31, 12, 0, tzinfo=UTC))
    quotas = quotas_for(store, clock, user_daily=50, user_monthly=1000)
    ledger = Ledger(store, quotas)
    await quotas.set_limits(scope_of(ALICE), None, 3)
    assert await limits_of(quotas, ALICE) == (50, 3)
    await ledger.reserve(ALICE, 2, 1)
    assert await ledger.refused(ALICE, 2) == (
        "That needs 2 images, but your monthly quota has 0 of 3 left. "
        "It resets at the start of next month."
    )
    assert await limits_of(quotas, BOB) == (50, 1000)  # one user's override only
    clock.now += 24 * 3600  # 1 June
    await ledger.reserve(ALICE, 3)
    assert (await quotas.status(ALICE)).monthly_used == 3


async def test_an_admin_monthly_limit_of_zero_means_unlimited(store: Store) -> None:
    quotas = quotas_for(store, user_daily=0, user_monthly=2)
    ledger = Ledger(store, quotas)
    await quotas.set_limits(scope_of(ALICE), None, 0)
    await ledger.reserve(ALICE, 5)
    st = await quotas.status(ALICE)
    assert (st.monthly_limit, st.monthly_used, st.monthly_left, st.left()) == (0, 5, None, None)
    assert st.badge() == "unlimited"


async def test_a_workspace_monthly_limit_is_shared_by_its_users(store: Store) -> None:
    quotas = quotas_for(store, user_daily=0, user_monthly=0)
    ledger = Ledger(store, quotas)
    await quotas.set_limits(workspace_scope("test", "team"), None, 4)
    await ledger.reserve(ALICE, 3)
    assert await ledger.refused(BOB, 2) == (
        "That needs 2 images, but this workspace's monthly quota has 1 of 4 left. "
        "It resets at the start of next month."
    )
    await ledger.reserve(BOB, 1)
    # A workspace limit is not a user's limit: it does not show as theirs.
    assert await limits_of(quotas, BOB) == (0, 0)


async def test_the_configured_workspace_monthly_limit_holds_without_an_override(
    store: Store,
) -> None:
    quotas = quotas_for(store, user_daily=0, user_monthly=0, workspace_monthly=3)
    ledger = Ledger(store, quotas)
    await ledger.reserve(ALICE, 2)
    await ledger.reserve(BOB, 1)
    assert await ledger.refused(Actor("test", "team", "erin")) == (
        "That needs 1 image, but this workspace's monthly quota has 0 of 3 left. "
        "It resets at the start of next month."
    )


async def test_a_lowered_limit_shows_nothing_left_never_a_negative(store: Store) -> None:
    quotas = quotas_for(store, user_daily=10, user_monthly=10)
    await Ledger(store, quotas).reserve(ALICE, 6)
    await quotas.set_limits(scope_of(ALICE), 2, 3)
    st = await quotas.status(ALICE)
    assert (st.daily_left, st.monthly_left, st.left()) == (0, 0, 0)
    assert st.badge() == "0 of 2 images left today"


# ---------------------------------------------------------------------- workspace isolation
async def test_two_tenants_never_share_a_counter(store: Store) -> None:
    quotas = quotas_for(store, user_daily=2, user_monthly=100, workspace_daily=3)
    ledger = Ledger(store, quotas)
    alice_elsewhere = Actor("test", "other", "alice")  # the same user id in another tenant
    alice_on_slack = Actor("slack", "team", "alice")  # the same tenant name elsewhere
    await ledger.reserve(ALICE, 2)
    assert "your daily quota has 0 of 2 left" in await ledger.refused(ALICE)
    await ledger.reserve(alice_elsewhere, 2)
    await ledger.reserve(alice_on_slack, 2)
    for actor in (ALICE, alice_elsewhere, alice_on_slack):
        assert (await quotas.status(actor)).daily_used == 2
    # The workspace counter is per tenant too: team has 1 of 3 left, other has 1 of 3.
    await ledger.reserve(BOB, 1)
    assert "this workspace's daily quota has 0 of 3 left" in await ledger.refused(
        Actor("test", "team", "erin")
    )
    await ledger.reserve(Actor("test", "other", "bob"), 1)


async def test_limits_grants_resets_and_blocks_stay_in_their_tenant(store: Store) -> None:
    quotas = quotas_for(store, user_daily=5, user_monthly=100)
    ledger = Ledger(store, quotas)
    twin = Actor("test", "other", "alice")
    await ledger.reserve(ALICE, 4)
    await ledger.reserve(twin, 4)
    await quotas.set_limits(scope_of(ALICE), 9, None)
    await quotas.grant(scope_of(ALICE), 2)
    assert (await quotas.status(twin)).daily_limit == 5
    assert (await quotas.status(twin)).daily_used == 4
    await quotas.reset(scope_of(twin))
    assert (await quotas.status(ALICE)).daily_used == 2  # 4 charged, 2 granted back
    await quotas.block(workspace_scope("test", "other"), "")
    assert (await quotas.status(ALICE)).blocked is None
    await ledger.reserve(ALICE, 1)


# ------------------------------------------------------------------------------------ blocks
async def test_a_workspace_block_stops_everyone_in_it_until_unblocked(store: Store) -> None:
    quotas = quotas_for(store)
    ledger = Ledger(store, quotas)
    ws = workspace_scope("test", "team")
    await quotas.block(ws, "unpaid invoice")
    for actor in (ALICE, BOB):
        assert await ledger.refused(actor) == (
            "You are blocked from generating images here: unpaid invoice"
        )
        assert (await quotas.status(actor)).blocked == "unpaid invoice"
    await ledger.reserve(Actor("test", "other", "alice"), 1)  # other tenants are not
    await quotas.block(ws, "")  # a second block replaces the reason
    assert await ledger.refused(ALICE) == "You are blocked from generating images here."
    assert (await quotas.status(ALICE)).blocked == ""
    await quotas.unblock(ws)
    assert (await quotas.status(ALICE)).blocked is None
    await ledger.reserve(ALICE, 1)
    assert (await quotas.status(ALICE)).daily_used == 1  # a refused block charged nothing


async def test_a_block_is_not_a_quota_refusal_and_keeps_usage(store: Store) -> None:
    quotas = quotas_for(store, user_daily=5)
    ledger = Ledger(store, quotas)
    await ledger.reserve(ALICE, 2)
    await quotas.block(scope_of(ALICE), "spam")
    with pytest.raises(UserError) as info:
        await ledger.reserve(ALICE, 1)
    assert not isinstance(info.value, QuotaExceeded)
    assert (await quotas.status(ALICE)).daily_used == 2
    assert (await quotas.status(BOB)).blocked is None  # a user block is that user's


# ----------------------------------------------------------------------- exemption, ledger
async def test_admins_are_exempt_only_when_the_config_says_so(store: Store) -> None:
    root = Actor("test", "team", "root", is_admin=True)
    exempting = quotas_for(store, user_daily=1)
    assert exempting.exempt(root) and not exempting.exempt(ALICE)
    await Ledger(store, exempting).reserve(root, 5, 5)
    st = await exempting.status(root)
    assert (st.exempt, st.daily_used, st.left(), st.badge()) == (True, 0, None, "unlimited (admin)")
    counting = quotas_for(store, user_daily=1, exempt_admins=False)
    assert not counting.exempt(root)
    counted = Ledger(store, counting, prefix="counted")
    assert "your daily quota has 1 of 1 left" in await counted.refused(root, 2)


async def test_one_reservation_charges_the_sum_of_its_jobs(store: Store) -> None:
    quotas = quotas_for(store, user_daily=10)
    ledger = Ledger(store, quotas)
    await ledger.reserve(ALICE, 2, 3, 1)
    assert (await quotas.status(ALICE)).daily_used == 6
    assert await ledger.refused(ALICE, 5) == (
        "That needs 5 images, but your daily quota has 4 of 10 left. It resets at 00:00 UTC."
    )


async def test_settle_clamps_what_it_is_told_was_delivered(store: Store) -> None:
    quotas = quotas_for(store, user_daily=10)
    ledger = Ledger(store, quotas)
    over, under, exact = await ledger.reserve(ALICE, 2, 3, 4)
    await ledger.settle(over, 7)  # more than reserved: commits 2, refunds nothing
    await ledger.settle(under, -1, "failed")  # less than nothing: refunds all 3
    await ledger.settle(exact, 4)
    await ledger.settle("no-such-job", 1)  # nothing to settle
    assert (await quotas.status(ALICE)).daily_used == 6
    rows = await store.fetchall(
        "SELECT job_id, kind, units FROM ledger WHERE kind != 'reserve' ORDER BY job_id, kind"
    )
    assert [(r["job_id"], r["kind"], r["units"]) for r in rows] == [
        (over, "commit", 2),
        (over, "refund", 0),
        (under, "commit", 0),
        (under, "refund", 3),
        (exact, "commit", 4),
        (exact, "refund", 0),
    ]


async def test_a_grant_adds_room_in_the_day_and_the_month(store: Store) -> None:
    quotas = quotas_for(store, user_daily=2, user_monthly=5)
    ledger = Ledger(store, quotas)
    await quotas.grant(scope_of(ALICE), 4)  # before any usage: the windows are created
    st = await quotas.status(ALICE)
    assert (st.daily_used, st.monthly_used, st.daily_left, st.monthly_left) == (-4, -4, 6, 9)
    for _ in range(3):
        await ledger.reserve(ALICE, 2)
    assert await ledger.refused(ALICE) == (
        "That needs 1 image, but your daily quota has 0 of 2 left. It resets at 00:00 UTC."
    )
    st = await quotas.status(ALICE)
    assert (st.daily_used, st.monthly_used, st.monthly_left) == (2, 2, 3)


async def test_granted_room_holds_one_reservation_larger_than_the_limit(store: Store) -> None:
    quotas = quotas_for(store, user_daily=2, user_monthly=100)
    await quotas.grant(scope_of(ALICE), 4)
    # "That needs 6 images, but your daily quota has 6 of 2 left." today.
    await Ledger(store, quotas).reserve(ALICE, 6)


async def test_a_reset_forgets_the_current_windows_only(store: Store) -> None:
    clock = Clock(datetime(2026, 5, 13, 12, 0, tzinfo=UTC))
    quotas = quotas_for(store, clock, user_daily=10, user_monthly=100)
    ledger = Ledger(store, quotas)
    [yesterday_done] = await ledger.reserve(ALICE, 2)
    await ledger.settle(yesterday_done, 2)
    [yesterday_running] = await ledger.reserve(ALICE, 3)  # still running when reset
    clock.now += 24 * 3600
    [today_done] = await ledger.reserve(ALICE, 4)
    await ledger.settle(today_done, 4)
    [today_queued] = await ledger.reserve(ALICE, 1)
    await ledger.reserve(BOB, 5)
    await quotas.reset(scope_of(ALICE))
    st = await quotas.status(ALICE)
    # Today keeps only today's job in flight; the month keeps both jobs in flight.
    assert (st.daily_used, st.monthly_used) == (1, 4)
    assert (await quotas.status(BOB)).daily_used == 5
    clock.now -= 24 * 3600
    assert (await quotas.status(ALICE)).daily_used == 5  # yesterday is history, untouched
    for job_id in (yesterday_running, today_queued):
        await ledger.settle(job_id, 0, "failed")
    clock.now += 24 * 3600
    st = await quotas.status(ALICE)
    assert (st.daily_used, st.monthly_used) == (0, 0)


# ------------------------------------------------------------------- windows and next_reset
@pytest.mark.parametrize(
    ("zone", "now", "reset"),
    [
        ("UTC", datetime(2026, 5, 14, 23, 59, 59), datetime(2026, 5, 15)),
        ("UTC", datetime(2026, 5, 14, 0, 0, 0), datetime(2026, 5, 15)),  # midnight: the next
        ("UTC", datetime(2026, 5, 31, 23, 0), datetime(2026, 6, 1)),
        ("UTC", datetime(2026, 12, 31, 23, 0), datetime(2027, 1, 1)),
        ("Asia/Tokyo", datetime(2026, 5, 14, 23, 30), datetime(2026, 5, 15)),
        ("America/New_York", datetime(2026, 3, 7, 23, 0), datetime(2026, 3, 8)),  # DST day next
        ("America/New_York", datetime(2026, 3, 8, 12, 0), datetime(2026, 3, 9)),
    ],
)
async def test_next_reset_is_the_next_local_midnight(
    store: Store, zone: str, now: datetime, reset: datetime
) -> None:
    tz = ZoneInfo(zone)
    quotas = quotas_for(store, Clock(now.replace(tzinfo=tz)), timezone=zone)
    got = quotas.next_reset()
    assert got == reset.replace(tzinfo=tz)
    assert got.utcoffset() == reset.replace(tzinfo=tz).utcoffset()


async def test_next_reset_and_windows_follow_the_zone_not_utc(store: Store) -> None:
    # 15:30 UTC on 1 March is already 00:30 on 2 March in Tokyo.
    clock = Clock(datetime(2026, 3, 1, 15, 30, tzinfo=UTC))
    tokyo = quotas_for(store, clock, timezone="Asia/Tokyo")
    utc = quotas_for(store, clock)
    assert tokyo.windows() == ("d:2026-03-02", "m:2026-03")
    assert utc.windows() == ("d:2026-03-01", "m:2026-03")
    assert tokyo.next_reset() == datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    assert tokyo.next_reset() - utc.next_reset() == timedelta(hours=-9 + 24)
    # 1 May 00:30 in Tokyo is still April in UTC: the month window moves with the zone too.
    clock.now = datetime(2026, 4, 30, 15, 30, tzinfo=UTC).timestamp()
    assert tokyo.windows() == ("d:2026-05-01", "m:2026-05")
    assert utc.windows() == ("d:2026-04-30", "m:2026-04")
    # An explicit time is used instead of the clock.
    assert tokyo.windows(datetime(2026, 1, 1, 12, tzinfo=UTC).timestamp()) == (
        "d:2026-01-01",
        "m:2026-01",
    )


async def test_the_refusal_and_the_status_name_the_zones_midnight(store: Store) -> None:
    clock = Clock(datetime(2026, 5, 14, 22, 0, tzinfo=ZoneInfo("Asia/Tokyo")))
    quotas = quotas_for(store, clock, user_daily=1, timezone="Asia/Tokyo")
    ledger = Ledger(store, quotas)
    await ledger.reserve(ALICE, 1)
    assert (await ledger.refused(ALICE)).endswith("It resets at 00:00 JST.")
    st = await quotas.status(ALICE)
    assert (
        st.resets_at == quotas.next_reset() == datetime(2026, 5, 15, tzinfo=ZoneInfo("Asia/Tokyo"))
    )
    clock.now += 2 * 3600  # past Tokyo's midnight
    await ledger.reserve(ALICE, 1)


# --------------------------------------------------------------------------- status values
@pytest.mark.parametrize(
    ("status", "left", "badge"),
    [
        (QuotaStatus(False, 3, 10, 50, 100, datetime(2026, 1, 1)), 7, "7 of 10 images left today"),
        (
            QuotaStatus(False, 3, 10, 95, 100, datetime(2026, 1, 1)),
            5,
            "7 of 10 images left today",
        ),  # the badge shows the day; left() the tighter window
        (
            QuotaStatus(False, 3, 0, 95, 100, datetime(2026, 1, 1)),
            5,
            "5 of 100 images left this month",
        ),
        (QuotaStatus(False, 3, 0, 95, 0, datetime(2026, 1, 1)), None, "unlimited"),
        (QuotaStatus(True, 3, 10, 95, 100, datetime(2026, 1, 1)), None, "unlimited (admin)"),
    ],
)
def test_status_left_and_badge(status: QuotaStatus, left: int | None, badge: str) -> None:
    assert status.left() == left
    assert status.badge() == badge


# --------------------------------------------------------------------------- the /quota text
async def quota_text(tmp_path: Path, quota: Mapping[str, object], *, spend: int = 0) -> str:
    clock = Clock(datetime(2026, 5, 14, 20, 50, tzinfo=UTC))  # 3 h 10 min before midnight
    settings = make_settings(tmp_path, {"quota": dict(quota)})
    async with App.open(settings, clock=clock) as app:
        chat = Chat(app)
        if spend:
            sent = await chat.say("alice", f"/imagine a lighthouse --n {spend}")
            assert any(r.job_id for r in sent), [r.text for r in sent]
            await chat.settle()
        [reply] = await chat.say("alice", "/quota")
        assert reply.ephemeral
        return reply.text


async def test_quota_text_has_a_this_month_line(tmp_path: Path) -> None:
    text = await quota_text(tmp_path, {"user_daily": 5, "user_monthly": 7}, spend=4)
    assert text == (
        "Today: 1 of 5 images left (resets at 00:00 UTC, in 3 h). This month: 3 of 7 left."
    )


async def test_quota_text_without_a_daily_limit_still_shows_the_month(tmp_path: Path) -> None:
    text = await quota_text(tmp_path, {"user_daily": 0, "user_monthly": 7}, spend=2)
    assert text == "Today: 2 images, no daily limit. This month: 5 of 7 left."


async def test_quota_text_has_no_month_line_without_a_monthly_limit(tmp_path: Path) -> None:
    text = await quota_text(tmp_path, {"user_daily": 5, "user_monthly": 0})
    assert text == "Today: 5 of 5 images left (resets at 00:00 UTC, in 3 h)."
