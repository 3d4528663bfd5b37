"""Shared fixtures. A core test reads like a conversation:

reply = await chat.say("alice", "/imagine a red fox --n 4")
assert len(reply.buttons) == ...
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.app import App
from bot.config import load_settings
from bot.types import Actor, Invocation, PostSteps, Reply, Target

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Channel:
    """A fake chat surface: the Responder for each invocation and the platform's poster."""

    posted: list[Reply] = field(default_factory=list)
    updated: list[Reply] = field(default_factory=list)

    deleted: list[str] = field(default_factory=list)

    async def post(
        self, target: Target, reply: Reply, steps: PostSteps | None = None
    ) -> str | None:
        self.posted.append(reply)
        return f"msg-{len(self.posted)}"

    async def update(self, target: Target, ref: str, reply: Reply) -> None:
        self.updated.append(reply)

    async def delete(self, target: Target, ref: str) -> None:
        self.deleted.append(ref)


@dataclass
class Responses:
    sent: list[Reply] = field(default_factory=list)

    async def send(self, reply: Reply) -> str | None:
        self.sent.append(reply)
        return reply.job_id or f"r{len(self.sent)}"

    async def edit(self, ref: str, reply: Reply) -> None:
        self.sent.append(reply)


class Chat:
    def __init__(self, app: App, platform: str = "test", tenant: str = "team") -> None:
        self.app = app
        self.platform = platform
        self.tenant = tenant
        self.channel = Channel()
        app.handler.register_poster(platform, self.channel)

    def actor(
        self,
        user: str,
        *,
        admin: bool = False,
        roles: tuple[str, ...] = (),
        tenant: str | None = None,
    ) -> Actor:
        return Actor(self.platform, tenant or self.tenant, user, user.title(), roles, admin)

    async def say(
        self,
        user: str,
        line: str,
        *,
        channel: str = "general",
        admin: bool = False,
        roles: tuple[str, ...] = (),
        tenant: str | None = None,
        init_image: bytes | None = None,
        interaction_id: str | None = None,
    ) -> list[Reply]:
        command, _, rest = line.partition(" ")
        inv = Invocation(
            self.actor(user, admin=admin, roles=roles, tenant=tenant),
            channel,
            command=command.lstrip("/"),
            text=rest,
            init_image=init_image,
            interaction_id=interaction_id,
        )
        out = Responses()
        await self.app.handler.handle(inv, out)
        return out.sent

    async def click(
        self,
        user: str,
        action: str,
        *,
        channel: str = "general",
        fields: Mapping[str, str] | None = None,
        admin: bool = False,
        tenant: str | None = None,
        init_image: bytes | None = None,
    ) -> list[Reply]:
        inv = Invocation(
            self.actor(user, admin=admin, tenant=tenant),
            channel,
            command="action",
            action=action,
            fields=dict(fields or {}),
            init_image=init_image,
        )
        out = Responses()
        await self.app.handler.handle(inv, out)
        return out.sent

    async def settle(self) -> None:
        await self.app.runner.wait_idle(30)

    def result(self, job_id: str) -> Reply:
        """The final message posted for a job."""
        for reply in reversed(self.channel.posted):
            if reply.job_id == job_id:
                return reply
        raise AssertionError(f"no result posted for {job_id}")


def make_settings(
    tmp_path: Path, overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> Any:
    base: dict[str, Any] = {"bot": {"data_dir": str(tmp_path / "data")}}
    for key, value in (overrides or {}).items():
        base[key] = {**base.get(key, {}), **value}
    return load_settings(None, env=dict(env or {}), overrides=base)


@asynccontextmanager
async def open_chat(
    tmp_path: Path, overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> AsyncIterator[Chat]:
    async with App.open(make_settings(tmp_path, overrides, env)) as app:
        yield Chat(app)


@pytest.fixture
async def chat(tmp_path: Path) -> AsyncIterator[Chat]:
    async with open_chat(tmp_path) as c:
        yield c


@pytest.fixture(autouse=True)
def _no_real_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests build settings from explicit env mappings; make sure a developer's real keys in
    # the shell never reach a fake server or a log.
    for name in list(os.environ):
        if name.endswith(("_API_KEY", "_TOKEN", "_SECRET")) or name.startswith("IMAGINE_"):
            monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------- a real PostgreSQL
@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """One throwaway PostgreSQL cluster for the session (see tests/pg_cluster.py), with a
    migrated template database; skipped only where the server binaries are not installed."""
    from tests import pg_cluster as pg

    bindir = pg.find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
    pytest.importorskip("asyncpg", reason="the [postgres] extra (asyncpg) is not installed")
    cluster = pg.start(bindir)
    try:
        import asyncio
        import concurrent.futures

        from bot.storage.postgres import Store as PgStore
        from bot.storage.url import parse

        async def migrate_template() -> None:
            async with PgStore.open(parse(cluster.url(pg.TEMPLATE))):
                pass

        # On a thread of its own: the first test to ask may already be running a loop.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, migrate_template()).result(timeout=120)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: Any) -> Iterator[str]:
    """The URL of a migrated database of its own, with no rows (emptied after each test)."""
    name = pg_cluster.take()
    yield str(pg_cluster.url(name))
    pg_cluster.give_back(name)


@asynccontextmanager
async def open_store(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Any]:
    """A store of ``kind`` ("sqlite" or "postgres"), empty and migrated."""
    if kind == "sqlite":
        from bot.storage.sqlite import Store as SqliteStore

        async with SqliteStore.open(tmp_path / "store.sqlite3") as s:
            yield s
        return
    from bot.storage.postgres import Store as PgStore
    from bot.storage.url import parse

    url = request.getfixturevalue("pg_url")
    async with PgStore.open(parse(url)) as s:
        yield s


STORE_KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=STORE_KINDS)
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """The same contract test on each store: SQLite in a temp dir and a fresh PostgreSQL
    database."""
    async with open_store(request.param, tmp_path, request) as s:
        yield s


@pytest.fixture(params=STORE_KINDS)
def store_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings overrides for each store: none (SQLite in the data dir), or store.url."""
    if request.param == "sqlite":
        return {}
    return {"store": {"url": request.getfixturevalue("pg_url")}}


@pytest.fixture
async def any_chat(tmp_path: Path, store_overrides: dict[str, Any]) -> AsyncIterator[Chat]:
    """:func:`chat` on each store."""
    async with open_chat(tmp_path, store_overrides) as c:
        yield c
