"""The PostgreSQL store on a real server: its migrations, the ledger under concurrent
reservations from two processes' pools, a bad store.url as one line, the password kept out of
every output, and the bot end to end on it."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bot.app import App
from bot.config import QuotaSettings
from bot.errors import QuotaExceeded, StoreUnavailable
from bot.quotas import Quotas, ledger_balances
from bot.storage.url import BadStoreUrl, masked, parse, password_of
from bot.types import Actor
from tests import pg_cluster as pg
from tests.conftest import Chat, make_settings

pytestmark = pytest.mark.postgres


# ------------------------------------------------------------------ the URL, no server
def test_the_url_is_shown_only_with_its_password_masked() -> None:
    url = "postgresql://bot:s3cr%40t-pw@db.example:6543/imagine?sslmode=require"
    assert masked(url) == "postgresql://bot:***@db.example:6543/imagine?sslmode=require"
    assert password_of(url) == "s3cr@t-pw"
    checked = parse(url)
    assert (checked.host, checked.port, checked.database, checked.user) == (
        "db.example",
        6543,
        "imagine",
        "bot",
    )
    assert "s3cr" not in checked.shown and "s3cr" not in repr(masked(url))
    assert masked("postgresql://h/db?user=u&password=hunter22") == (
        "postgresql://h/db?user=u&password=***"
    )
    assert password_of("postgresql://h/db?password=hunter22") == "hunter22"
    assert masked("postgresql://bot@h/db") == "postgresql://bot@h/db"  # nothing to hide


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://bot:pw@h/db", "must start with postgresql://"),
        ("bot:pw@h/db", "must start with postgresql://"),
        ("postgresql://bot:pw@h:99999/db", "port"),
        ("postgresql://bot:pw@h:fivefour/db", "port"),
        ("postgresql://bot:pw@h:5432/", "names no database"),
        ("postgresql:///db", "names no host"),
    ],
)
def test_a_bad_url_is_refused_saying_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(BadStoreUrl, match=says) as caught:
        parse(url)
    assert "pw" not in str(caught.value).replace("password", "")


def test_question_marks_become_numbered_parameters_outside_quoted_text() -> None:
    from bot.storage.postgres import to_dollar

    assert to_dollar("SELECT '?', \"a?\" FROM t WHERE a = ? AND b IN (?, ?)") == (
        "SELECT '?', \"a?\" FROM t WHERE a = $1 AND b IN ($2, $3)"
    )
    assert to_dollar("SELECT 'it''s ?' WHERE x = ?") == "SELECT 'it''s ?' WHERE x = $1"


# --------------------------------------------------------------------------- migrations
async def test_a_new_database_is_built_by_numbered_migrations_once(
    pg_cluster: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from bot.storage.postgres import Store, _migrations

    versions = [v for v, _ in _migrations()]
    assert versions == list(range(1, len(versions) + 1))
    from bot.storage.sqlite import _migrations as sqlite_migrations

    # The same numbers as SQLite's: "schema version N" means the same schema on both.
    assert versions == [v for v, _ in sqlite_migrations()]
    url = parse(pg_cluster.url(pg_cluster.new_database(template="template0")))
    caplog.set_level(logging.DEBUG, logger="bot")
    # Two processes opening the fresh database at once: one builds, the other waits.
    async with Store.open(url) as a, Store.open(url) as b:
        assert (await a.health())[0] and (await b.health())[0]
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("bot.")]
    assert ours == [f"database migrated to version {v}" for v in versions]
    caplog.clear()
    async with Store.open(url) as again:
        good, what = await again.health()
        assert good and f"schema version {versions[-1]}" in what
        assert pg.PASSWORD not in what and "***" in what
    assert [r for r in caplog.records if r.name.startswith("bot.")] == []


# ------------------------------------------------------------------ the ledger, racing
def _payer(i: int) -> Actor:
    return Actor("test", "team", "ann" if i % 2 else "ben")


async def test_concurrent_reservations_from_two_processes_never_overspend(pg_url: str) -> None:
    from bot.storage.postgres import Store

    daily = 7
    async with Store.open(parse(pg_url)) as one, Store.open(parse(pg_url)) as two:
        now = 1_790_000_000.0
        quotas = [
            Quotas(s, QuotaSettings(user_daily=daily), is_admin=lambda a: False, clock=lambda: now)
            for s in (one, two)
        ]

        async def reserve(i: int) -> int:
            store, q = (one, quotas[0]) if i % 3 else (two, quotas[1])
            units = 1 + i % 3
            try:
                async with store.transaction() as tx:
                    await tx.execute(
                        "INSERT INTO jobs (id, platform, tenant, channel_id, owner_id, kind, "
                        "state, request_json, provider, seed, n, created_at) VALUES (?, 'test', "
                        "'team', 'c', ?, 'imagine', 'queued', '{}', 'offline', 0, ?, 0)",
                        (f"j{i}", _payer(i).user_id, units),
                    )
                    await q.reserve(tx, _payer(i), [(f"j{i}", units)])
            except QuotaExceeded:
                return 0
            return units

        won = await asyncio.gather(*(reserve(i) for i in range(60)))
        for name in ("ann", "ben"):
            used = await one.fetchall(
                "SELECT win, used FROM quota_usage WHERE scope = ?", (f"user:test:team:{name}",)
            )
            spent = sum(u for i, u in enumerate(won) if _payer(i).user_id == name)
            assert used and all(r["used"] == spent for r in used)
            assert daily - 2 <= spent <= daily  # full but for less than the next job's units
        assert await ledger_balances(one)
        totals = await two.ledger.totals()
        assert totals.reserved == sum(won) == totals.in_flight


async def test_the_charge_alone_is_the_check_without_any_lock(pg_url: str) -> None:
    """Outside a unit of work (no advisory lock), on separate connections, admission's
    conditional upsert still lets exactly as many charges through as fit."""
    from bot.storage.admission import Charge
    from bot.storage.postgres import Store

    async with Store.open(parse(pg_url), pool_max=20) as store:

        async def charge() -> bool:
            async with store.reading() as conn:  # autocommit: one statement of its own
                ok = await store.admission.write(conn, (), [Charge("user:x", "d:1", 3, 10)], ())
                return bool(ok)

        results = await asyncio.gather(*(charge() for _ in range(20)))
        assert results.count(True) == 3
        row = await store.fetchone("SELECT used FROM quota_usage WHERE scope = 'user:x'")
        assert row is not None and row["used"] == 9


async def test_units_queueing_for_the_lock_never_use_up_the_pool(pg_url: str) -> None:
    """Many units at once on a pool of two, each also reading on its own (as SQLite's
    reader allows): the queue forms before a connection is taken, so nothing waits forever."""
    from bot.storage.postgres import Store

    async with Store.open(parse(pg_url), pool_max=2) as store:

        async def unit(i: int) -> None:
            async with store.transaction() as tx:
                await store.quota.grant(tx, "user:x", "d:1", 1)
                assert await store.jobs.get(f"none-{i}") is None  # a read of its own

        async with asyncio.timeout(30):
            await asyncio.gather(
                *(unit(i) for i in range(12)), *(store.jobs.get("x") for _ in range(6))
            )
        row = await store.fetchone("SELECT used FROM quota_usage WHERE scope = 'user:x'")
        assert row is not None and row["used"] == -12


async def test_two_outbox_claims_on_two_pools_never_share_a_row(pg_url: str) -> None:
    from bot.storage.postgres import Store
    from bot.types import Target

    async with Store.open(parse(pg_url)) as one, Store.open(parse(pg_url)) as two:
        for i in range(30):
            await one.outbox.enqueue(
                job_id=None, kind="alert", target=Target("web", "local", f"c{i}"), at=1.0
            )
        claims = await asyncio.gather(
            *(
                s.outbox.claim_due(now=2.0, lease_s=60.0, platforms=["web"], limit=4)
                for s in (one, two) * 6
            )
        )
        ids = [r.id for rows in claims for r in rows]
        assert len(ids) == len(set(ids)) == 30


# --------------------------------------------------------------- the bot on PostgreSQL
async def test_the_bot_runs_on_postgresql_and_processes_share_it(
    tmp_path: Path, pg_url: str
) -> None:
    overrides = {"store": {"url": pg_url}, "quota": {"user_daily": 6}}
    settings = make_settings(tmp_path, overrides)
    other = make_settings(tmp_path, overrides)
    # No data-dir lock with store.url: a second process on the same data dir starts too.
    async with App.open(settings) as app, App.open(other, start=False) as second:
        chat = Chat(app)
        [queued] = await chat.say("alice", "/imagine a red fox --n 4")
        assert queued.job_id is not None
        await chat.settle()
        result = chat.result(queued.job_id)
        assert "red fox" in result.text and result.images
        refused = await chat.say("alice", "/imagine a blue fox --n 4")
        assert "quota" in " ".join(r.text for r in refused).lower()
        job = await second.storage.jobs.get(queued.job_id)
        assert job is not None and job.state == "done"
        assert len(await second.storage.images.of_job(queued.job_id)) == 4
        totals = await second.storage.ledger.totals()
        assert (totals.reserved, totals.committed, totals.in_flight) == (4, 4, 0)


async def test_jobs_on_postgresql_survive_a_restart_and_settle_once(
    tmp_path: Path, pg_url: str
) -> None:
    slow = {"store": {"url": pg_url}, "providers": {"offline": {"latency_ms": 5000}}}
    async with App.open(make_settings(tmp_path, slow)) as app:
        chat = Chat(app)
        for line in ("/imagine one --n 1", "/imagine two --n 2"):
            await chat.say("alice", line)
        await asyncio.sleep(0.2)
    # A graceful stop: the running job went back to the queue, the other stayed queued.
    async with App.open(make_settings(tmp_path, {"store": {"url": pg_url}})) as app:
        rows = await app.store.fetchall("SELECT state, attempts FROM jobs ORDER BY created_at")
        assert [r["state"] for r in rows] == ["queued", "queued"]
        await app.runner.wait_idle(30)
        rows = await app.store.fetchall("SELECT state FROM jobs")
        assert {r["state"] for r in rows} == {"done"}
        assert await ledger_balances(app.store)
        totals = await app.storage.ledger.totals()
        assert (totals.reserved, totals.committed, totals.refunded) == (3, 3, 0)


async def test_opening_a_bad_database_is_one_line_naming_no_password(pg_cluster: Any) -> None:
    from bot.storage.postgres import Store

    url = pg_cluster.url("no_such_db")
    with pytest.raises(StoreUnavailable) as caught:
        async with Store.open(parse(url)):
            pass
    text = str(caught.value)
    assert "no_such_db does not exist" in text and pg.PASSWORD not in text and "***" in text


def _bad_urls(cluster: Any) -> dict[str, tuple[str, str]]:
    """kind: (store.url, what the one line must say)."""
    return {
        "closed port": (cluster.url("imagine", port=pg.free_port()), "connection refused"),
        "wrong password": (
            cluster.url("postgres", password="not-the-password-9"),
            "password for user imagine was refused",
        ),
        "unknown database": (cluster.url("nowhere"), "nowhere does not exist"),
        "wrong scheme": (
            cluster.url("imagine").replace("postgresql://", "mysql://"),
            "must start with postgresql://",
        ),
        "bad port": (cluster.url("imagine", port=70000), "port"),
    }


async def _cli(tmp_path: Path, url: str, *args: str) -> tuple[int, str, str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGINE_", "PG"))}
    env |= {"IMAGINE_STORE__URL": url, "IMAGINE_WEB__PORT": str(pg.free_port())}
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "--data-dir",
        str(tmp_path / "data"),
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode(), time.monotonic() - started


async def test_a_bad_store_url_stops_serve_generate_and_quota_in_one_line(
    tmp_path: Path, pg_cluster: Any
) -> None:
    """Every kind of bad URL, each with each command: 15 real processes, four at a time."""
    commands = [("serve",), ("generate", "a red fox --n 1"), ("quota",)]
    cases = [
        (kind, url, says, cmd)
        for kind, (url, says) in _bad_urls(pg_cluster).items()
        for cmd in commands
    ]
    gate = asyncio.Semaphore(4)

    async def run(i: int, url: str, cmd: tuple[str, ...]) -> tuple[int, str, str, float]:
        async with gate:
            return await _cli(tmp_path / str(i), url, *cmd)

    runs = await asyncio.gather(*(run(i, c[1], c[3]) for i, c in enumerate(cases)))
    for (kind, _, says, cmd), (code, out, err, took) in zip(cases, runs, strict=True):
        lines = [line for line in err.splitlines() if line.strip()]
        assert code not in (0, 70), (kind, cmd, code, err)
        assert len(lines) == 1 and says in lines[0], (kind, cmd, err)
        assert "Traceback" not in err + out and pg.PASSWORD not in err + out
        assert "not-the-password-9" not in err + out
        assert took < 30, (kind, cmd, took)


async def test_doctor_masks_the_password_and_checks_the_database(
    tmp_path: Path, pg_cluster: Any, pg_url: str
) -> None:
    code, out, err, _ = await _cli(tmp_path / "good", pg_url, "doctor")
    assert code == 0, out + err
    assert pg.PASSWORD not in out + err
    assert f"store.url: {masked(pg_url)}" in out
    assert "[ok] database ok: PostgreSQL" in out and "schema version" in out
    bad, says = _bad_urls(pg_cluster)["wrong password"]
    code, out, err, _ = await _cli(tmp_path / "bad", bad, "doctor")
    assert code == 1 and "Traceback" not in out + err
    assert f"[FAIL] database: cannot open the PostgreSQL store {masked(bad)}: " in out
    assert says in out
    assert "not-the-password-9" not in out + err


async def test_generate_and_quota_work_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    code, out, err, _ = await _cli(tmp_path, pg_url, "generate", "a red fox --n 1")
    assert code == 0, err
    code, out, err, _ = await _cli(tmp_path, pg_url, "quota")
    assert code == 0 and "Quota of" in out, err
    assert pg.PASSWORD not in out + err


def test_the_log_hides_the_password_wherever_the_url_was_set(tmp_path: Path) -> None:
    from bot.logs import setup_logging

    secret = "only-in-the-file-42"
    settings = make_settings(
        tmp_path, {"store": {"url": f"postgresql://bot:{secret}@localhost/imagine"}}
    )
    root = logging.getLogger()
    kept, level = root.handlers[:], root.level
    try:
        setup_logging(settings)
        [handler] = root.handlers
    finally:
        root.handlers[:], root.level = kept, level
    record = logging.LogRecord("bot", logging.ERROR, __file__, 1, "dsn=%s", (secret,), None)
    assert handler.filter(record) and secret not in record.getMessage()


async def test_url_options_the_driver_cannot_read_are_one_line() -> None:
    pytest.importorskip("asyncpg", reason="the [postgres] extra (asyncpg) is not installed")
    from bot.storage.postgres import Store

    with pytest.raises(StoreUnavailable, match="options were not understood") as caught:
        async with Store.open(parse("postgresql://u:hunter22@127.0.0.1:1/db?sslmode=bogus")):
            pass
    assert "hunter22" not in str(caught.value)


async def test_without_the_driver_store_url_is_one_line_saying_what_to_install(
    tmp_path: Path,
) -> None:
    """As on an install without the [postgres] extra: asyncpg cannot be imported."""
    url = "postgresql://bot:hunter22-secret@127.0.0.1:5432/imagine"
    code = (
        "import sys; sys.modules['asyncpg'] = None; from bot.cli import main; "
        f"sys.exit(main(['--data-dir', {str(tmp_path / 'data')!r}, *sys.argv[1:]]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGINE_", "PG"))}
    for args, expected in ((["quota"], 2), (["doctor"], 1)):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            *args,
            env=env | {"IMAGINE_STORE__URL": url},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = (b.decode() for b in await asyncio.wait_for(proc.communicate(), 60))
        assert proc.returncode == expected, out + err
        assert "pip install 'imagine-bot[postgres]'" in out + err
        assert "hunter22" not in out + err and "Traceback" not in out + err
