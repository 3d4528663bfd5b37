"""The deployment guide: deploy/compose.yaml is valid and names only real settings, the image
installs the PostgreSQL extra, and what docs/deploy.md says a browser sees with two processes
is what two processes on one store really do."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import tomllib
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from adapters.web.server import start
from bot.app import App
from bot.config import ENV_PREFIX, SECRET_ENV, load_settings
from tests.test_web import command, open_socket

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "deploy" / "compose.yaml"
EXAMPLE_ENV = REPO / "deploy" / "example.env"
GUIDE = REPO / "docs" / "deploy.md"
BOTS = ("bot-a", "bot-b")


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def interpolate(value: str) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?error}``, with a stand-in."""
    return re.sub(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}", lambda m: f"x{m.group(1).lower()}", value)


def bot_env(service: str) -> dict[str, str]:
    env = compose()["services"][service]["environment"]
    assert isinstance(env, dict), "environment as a mapping (merged from x-bot-env)"
    return {str(k): interpolate(str(v)) for k, v in env.items()}


def commented_env() -> dict[str, str]:
    """The settings shown commented out (the GPU pool example): they must be real too."""
    found = re.findall(r"^\s*#\s*(IMAGINE_[A-Z0-9_]+):\s*(.+)$", COMPOSE.read_text(), re.M)
    return {name: value.strip().strip("'") for name, value in found}


def test_the_compose_file_parses_with_postgres_and_two_bots_from_the_dockerfile() -> None:
    services = compose()["services"]
    assert {"postgres", *BOTS} <= set(services)
    hosts = []
    for name in BOTS:
        bot = services[name]
        build = bot["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == (
            REPO / "Dockerfile"
        )
        assert build["args"]["EXTRAS"] == "postgres"
        assert bot["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "images:/data" in bot["volumes"], "one image store for every process"
        hosts += [p.split(":")[0] for p in bot["ports"]]
    assert len(hosts) == len(set(hosts)), "each playground on a host port of its own"
    assert "healthcheck" in services["postgres"]
    # Only one process gets the chat tokens: one gateway connection per token.
    assert "DISCORD_TOKEN" in bot_env("bot-a") and "DISCORD_TOKEN" not in bot_env("bot-b")


@pytest.mark.parametrize("service", BOTS)
def test_every_setting_the_compose_file_names_exists(service: str, tmp_path: Path) -> None:
    env = bot_env(service)
    for name in env:
        assert name.startswith(ENV_PREFIX) or name in SECRET_ENV, f"{name} is not a setting"
    # The bot refuses an unknown IMAGINE_ key (naming it), so loading is the check.
    settings = load_settings(None, env={**env, "IMAGINE_BOT__DATA_DIR": str(tmp_path)})
    assert settings.store.url.startswith("postgresql://imagine:")
    assert settings.store.url.endswith("@postgres:5432/imagine")
    assert settings.jobs.lease_s == 5.0 and settings.jobs.claim_poll_s == 1.0
    # The example pool, swapped in for the offline lines, is valid too.
    pool = {k: v for k, v in env.items() if k != "IMAGINE_PROVIDERS__DEFAULT"}
    settings = load_settings(None, env={**pool, **commented_env()})
    assert settings.providers.default == "automatic1111"
    urls = settings.providers.sections["automatic1111"]["base_urls"]
    assert urls == ["http://gpu-1:7860", "http://gpu-2:7860"]


def test_every_variable_the_compose_file_reads_is_in_the_example_env() -> None:
    wanted = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    listed = set(re.findall(r"^([A-Z0-9_]+)=", EXAMPLE_ENV.read_text(), re.M))
    assert wanted and wanted <= listed, wanted - listed
    assert (REPO / ".gitignore").read_text().count("deploy/.env") == 1


def test_the_guide_names_only_real_settings() -> None:
    text = GUIDE.read_text()
    sections = {"bot", "grammar", "quota", "jobs", "images", "actions", "web", "store"}
    named = set(re.findall(r"`([a-z]+)\.([a-z_]+)`", text))
    checked = {(s, k) for s, k in named if s in sections}
    assert ("store", "url") in checked and ("jobs", "lease_s") in checked
    defaults = load_settings(None, env={})
    for section, key in checked:
        assert hasattr(getattr(defaults, section), key), f"{section}.{key}"
    samples = {
        "IMAGINE_STORE__URL": "postgresql://imagine:pw@postgres:5432/imagine",
        "IMAGINE_PROVIDERS__AUTOMATIC1111__BASE_URLS": '["http://gpu-1:7860"]',
        "IMAGINE_BOT__DATA_DIR": "/data",
    }
    names = set(re.findall(r"\b(IMAGINE_[A-Z0-9_]+)", text))
    assert "IMAGINE_STORE__URL" in names
    for name in names:
        # Unknown IMAGINE_ names are refused by the loader, naming them.
        load_settings(None, env={name: samples.get(name, "1")})


def test_the_image_installs_the_postgres_extra() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    snippet = re.search(r'python -c "(.*?)" > requirements.txt', dockerfile)
    assert snippet is not None and "ARG EXTRAS=postgres" in dockerfile
    code = snippet.group(1)
    env = {**os.environ, "EXTRAS": "postgres"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, check=True, capture_output=True, text=True
    ).stdout.splitlines()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert out == project["dependencies"] + project["optional-dependencies"]["postgres"]


# ------------------------------------------------------------ a browser and two processes


def web_settings(tmp_path: Path, store: dict[str, Any], latency_ms: int, slots: int) -> Any:
    return load_settings(
        None,
        env={},
        overrides={
            "bot": {"data_dir": str(tmp_path / "data")},  # one image store for both
            "grammar": {"base_side": 256},
            "providers": {
                "default": "offline",
                "offline": {"latency_ms": latency_ms, "concurrency": slots},
            },
            "jobs": {"lease_s": 5.0, "claim_poll_s": 0.1},
            **store,
        },
    )


async def job_row(app: App, job_id: str) -> dict[str, Any]:
    row = await app.store.fetchone("SELECT state, lease_owner FROM jobs WHERE id = ?", (job_id,))
    assert row is not None
    return dict(row)


async def until(check: Any, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_a_page_on_one_process_sees_a_job_the_other_finished(
    tmp_path: Path, store_overrides: dict[str, Any]
) -> None:
    # A has one slot, kept busy by a job that never ends, so the next job is B's to run.
    slow = web_settings(tmp_path, store_overrides, latency_ms=600_000, slots=1)
    quick = web_settings(tmp_path, store_overrides, latency_ms=50, slots=2)
    async with AsyncExitStack() as stack, aiohttp.ClientSession() as http:
        a = await stack.enter_async_context(App.open(slow, shared=True))
        web_a = await start(a, "127.0.0.1", 0)
        stack.push_async_callback(web_a.close)
        body = await command(http, web_a, "Ann", "/imagine keeps process a busy --n 1")
        blocker = next(r["job_id"] for r in body["replies"] if r["job_id"])

        async def a_runs_it() -> bool:
            return (await job_row(a, blocker))["state"] == "running"

        await until(a_runs_it)
        a_owner = (await job_row(a, blocker))["lease_owner"]
        b = await stack.enter_async_context(App.open(quick, shared=True))
        web_b = await start(b, "127.0.0.1", 0)
        stack.push_async_callback(web_b.close)
        page_a, _ = await open_socket(http, web_a, "ann")
        page_b, _ = await open_socket(http, web_b, "bo")
        body = await command(http, web_a, "Ann", "/imagine a red fox --n 1")
        job = next(r["job_id"] for r in body["replies"] if r["job_id"])

        async def delivered() -> bool:
            row = await b.store.fetchone(
                "SELECT state FROM outbox WHERE job_id = ? AND kind = 'result'", (job,)
            )
            return row is not None and row["state"] == "done"

        await until(delivered)
        row = await job_row(b, job)
        assert row["state"] == "done" and row["lease_owner"] not in ("", a_owner)
        # B's pages get the result live: B delivered it, to its own pages.
        done_b = await page_b.reply(job_id=job, state="done")
        assert "a red fox" in done_b["text"]
        if store_overrides:
            # PostgreSQL: B's notice reaches A, whose page shows the result live too.
            done_a = await page_a.reply(job_id=job, state="done")
            assert done_a["tiles"]
        else:
            # The SQLite stand-in has no notices (one process owns a SQLite store): A's page,
            # where it was asked for, sees it only on reload.
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(2):
                    await page_a.reply(job_id=job, state="done")
            assert {r["state"] for r in page_a.replies if r["job_id"] == job} == {"queued"}
        # Reloaded (a new socket: the history from the database), A's page has it, with
        # images that A serves from the shared image store.
        _, history = await open_socket(http, web_a, "ann")
        card = next(r for r in history if r["job_id"] == job)
        assert card["state"] == "done"
        grid = next(i for i in card["images"] if i["kind"] == "grid")
        async with http.get(web_a.url + grid["url"]) as resp:
            assert resp.status == 200 and resp.content_type.startswith("image/")
