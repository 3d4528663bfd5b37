"""The command line, run as a newcomer would: a real subprocess, no keys, no accounts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from bot.cli import RedactSecrets
from tests.conftest import REPO
from tests.fakes.discord_api import TOKEN as DISCORD_TOKEN
from tests.fakes.discord_api import DiscordFake
from tests.fakes.stability import StabilityFake

SENTINEL = "sk-SENTINEL-abcdef123456"


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("IMAGINE_") and not k.endswith(("_API_KEY", "_TOKEN"))}
    base["PYTHONPATH"] = str(REPO)
    base.update(extra or {})
    return base


def run(tmp_path: Path, *args: str,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = clean_env(env)
    return subprocess.run([sys.executable, "-m", "bot", "--data-dir", str(tmp_path / "data"),
                           *args], cwd=tmp_path, env=base, capture_output=True, text=True,
                          timeout=120, check=False)


def test_generate_writes_images_and_prints_json(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run(tmp_path, "generate", "a lighthouse at dusk --n 2 --seed 7 --ar 3:2",
               "--out", str(out), "--json", "--user", "dana")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    [job] = data["jobs"]
    assert job["state"] == "done" and job["provider"] == "offline"
    assert [i["seed"] for i in job["images"]] == [7, 8]
    for img in job["images"]:
        with Image.open(img["path"]) as im:
            assert im.size == (img["width"], img["height"]) == (1280, 832)
            assert im.text["prompt"] == "a lighthouse at dusk"  # type: ignore[attr-defined]
    assert data["quota"] == "48 of 50 images left today"
    # the same user's quota is what `quota` reports
    quota = run(tmp_path, "quota", "--user", "dana")
    assert "48 of 50" in quota.stdout


def test_generate_plain_output_labels_the_offline_renderer(tmp_path: Path) -> None:
    proc = run(tmp_path, "generate", "a fox --n 1", "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    assert "not a diffusion model" in proc.stdout and "seed" in proc.stdout


def test_bad_flag_is_a_friendly_error_and_exit_2(tmp_path: Path) -> None:
    proc = run(tmp_path, "generate", "a fox --steps 500", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "--steps" in proc.stderr and "10" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[quota]\nuser_dialy = 3\n")
    proc = run(tmp_path, "--config", str(cfg), "doctor")
    assert proc.returncode == 2 and "quota.user_dialy" in proc.stderr


def test_doctor_checks_everything_and_never_prints_a_secret(tmp_path: Path) -> None:
    proc = run(tmp_path, "doctor", env={"STABILITY_API_KEY": SENTINEL,
                                        "IMAGINE_PROVIDERS__DEFAULT": '"offline"'})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[ok] database ok" in proc.stdout
    assert "[ok] provider offline" in proc.stdout
    assert "STABILITY_API_KEY: set" in proc.stdout
    assert SENTINEL not in proc.stdout + proc.stderr


async def test_doctor_shows_the_stability_balance_and_engines(tmp_path: Path) -> None:
    async with StabilityFake(api_key=SENTINEL) as fake:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("IMAGINE_") and not k.endswith(("_API_KEY", "_TOKEN"))}
        env.update({"PYTHONPATH": str(REPO), "STABILITY_API_KEY": SENTINEL,
                    "STABILITY_API_BASE_URL": fake.base_url})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "--data-dir", str(tmp_path / "data"), "doctor",
            cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode() + err.decode()
    assert proc.returncode == 0, text
    assert "[ok] provider stability" in text and "balance=" in text and "credits" in text
    assert "engines=stable-diffusion" in text
    assert SENTINEL not in text


def test_log_lines_never_carry_a_secret() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1,
                               "calling with %s and %s", (SENTINEL, "ok"), None)
    assert RedactSecrets({"STABILITY_API_KEY": SENTINEL}).filter(record)
    assert record.getMessage() == "calling with *** and ok"
    try:
        raise RuntimeError(f"header was Bearer {SENTINEL}")
    except RuntimeError:
        err = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    RedactSecrets({"OPENAI_API_KEY": SENTINEL}).filter(err)
    assert err.exc_text is not None and SENTINEL not in err.exc_text and "***" in err.exc_text


def test_serve_refuses_an_exposed_address_without_a_token_before_touching_data(
        tmp_path: Path) -> None:
    proc = run(tmp_path, "serve", "--host", "0.0.0.0", "--port", "1")
    assert proc.returncode == 2 and "WEB_ACCESS_TOKEN" in proc.stderr
    assert not (tmp_path / "data").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@dataclass
class Served:
    """A running ``imagine-bot serve``: its stdout lines so far, and its exit code once done."""

    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    stderr: str = ""

    async def until(self, wanted: Callable[[str], bool], within: float = 30.0) -> str:
        assert self.proc.stdout is not None
        async with asyncio.timeout(within):
            for line in self.lines:
                if wanted(line):
                    return line
            while raw := await self.proc.stdout.readline():
                line = raw.decode().rstrip("\n")
                self.lines.append(line)
                if wanted(line):
                    return line
        raise AssertionError(f"serve ended without that line; stdout: {self.lines}")


@asynccontextmanager
async def serving(tmp_path: Path, env: dict[str, str], *args: str) -> AsyncIterator[Served]:
    """``serve`` in a subprocess; stopped with SIGTERM, as a container runtime stops it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--data-dir", str(tmp_path / "data"), "serve", *args,
        cwd=tmp_path, env=clean_env(env), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    served = Served(proc)
    try:
        yield served
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        served.lines += out.decode().splitlines()
        served.stderr = err.decode()


async def test_serve_runs_discord_alone_and_never_binds_the_web_port(tmp_path: Path) -> None:
    web_port = free_port()
    async with DiscordFake() as fake:
        env = {"IMAGINE_WEB__ENABLED": "false", "IMAGINE_WEB__PORT": str(web_port),
               "DISCORD_TOKEN": DISCORD_TOKEN, "DISCORD_API_BASE_URL": fake.base_url,
               "DISCORD_GATEWAY_URL": fake.gateway_url}
        async with serving(tmp_path, env) as served:
            line = await served.until(lambda line: line.startswith("discord:"))
            assert "connected" in line
            assert fake.identify_tokens == [DISCORD_TOKEN]
            assert {c["name"] for c in fake.commands} >= {"imagine", "quota"}
            assert port_is_closed(web_port)
    assert served.proc.returncode == 0, served.stderr
    assert not any(line.startswith("web:") for line in served.lines)
    assert DISCORD_TOKEN not in "\n".join(served.lines) + served.stderr
    assert "Traceback" not in served.stderr


def test_serve_with_nothing_enabled_says_so_in_one_line(tmp_path: Path) -> None:
    proc = run(tmp_path, "serve", env={"IMAGINE_WEB__ENABLED": "false"})
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert "nothing to serve" in line.lower() and "DISCORD_TOKEN" in line
    assert not (tmp_path / "data").exists()
