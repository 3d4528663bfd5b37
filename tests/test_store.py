"""Numbered migrations: each applied once, in order, in its own transaction."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from importlib import resources
from pathlib import Path

import pytest

from bot.store import Store, _migrations


def test_migrations_are_numbered_without_gaps() -> None:
    versions = [v for v, _ in _migrations()]
    assert versions == list(range(1, len(versions) + 1))
    names = {e.name for e in resources.files("bot.migrations").iterdir()}
    assert "V1__init.sql" in names


async def test_an_old_database_is_upgraded_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # a database as version 1 left it
        db.executescript(_migrations()[0][1])
        db.execute("PRAGMA user_version=1")
        db.execute(
            "INSERT INTO jobs (id, platform, tenant, channel_id, owner_id, kind, state, "
            "request_json, provider, seed, n, created_at) VALUES ('j1', 'web', 'local', "
            "'general', 'alice', 'imagine', 'done', '{}', 'offline', 1, 1, 0)"
        )
    async with Store.open(path) as store:
        version = await store.fetchone("PRAGMA user_version")
        assert version is not None and version[0] == len(_migrations())
        row = await store.fetchone("SELECT id, result_ref FROM jobs")
        # V3: a job finished before V2 had its result posted already; nothing is re-posted
        assert row is not None and (row["id"], row["result_ref"]) == ("j1", "")
    async with Store.open(path) as store:  # opening again applies nothing twice
        assert (await store.fetchone("PRAGMA user_version"))[0] == len(_migrations())  # type: ignore[index]


def _version_1_database(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(_migrations()[0][1])
        db.execute("PRAGMA user_version=1")


async def test_two_processes_opening_a_fresh_data_dir_at_once_both_succeed(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    # The other process (say `doctor` beside `quota`): it took the write lock first and is
    # building the schema while we open the same file.
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("PRAGMA journal_mode=WAL")
        other.execute("BEGIN IMMEDIATE")

        async def open_ours() -> int:
            async with Store.open(path) as store:
                row = await store.fetchone("PRAGMA user_version")
                assert row is not None
                return int(row[0])

        ours = asyncio.create_task(open_ours())
        await asyncio.sleep(0.5)  # ours has seen version 0 and waits for the write lock
        latest = _migrations()[-1][0]
        for _, sql in _migrations():
            for statement in sql.split(";\n"):
                if statement.strip():
                    other.execute(statement)
        other.execute(f"PRAGMA user_version={latest}")
        other.execute("COMMIT")
        assert await ours == latest  # not "table jobs already exists"
    finally:
        other.close()


async def test_a_brand_new_database_is_built_without_info_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot")
    async with Store.open(tmp_path / "new.db"):
        pass
    ours = [r for r in caplog.records if r.name.startswith("bot.")]
    assert [r for r in ours if r.levelno >= logging.INFO] == []
    assert [r.getMessage() for r in ours] == [
        f"database migrated to version {v}" for v, _ in _migrations()
    ]


async def test_an_upgrade_is_one_info_line_and_a_current_database_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.db"
    _version_1_database(path)
    caplog.set_level(logging.INFO, logger="bot")
    async with Store.open(path):
        pass
    latest = _migrations()[-1][0]
    assert [r.getMessage() for r in caplog.records if r.name.startswith("bot.")] == [
        f"database upgraded from version 1 to {latest}"
    ]
    caplog.clear()
    async with Store.open(path):
        pass
    assert [r for r in caplog.records if r.name.startswith("bot.")] == []
