"""The command line, run as a newcomer would: a real subprocess, no keys, no accounts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from bot.cli import RedactSecrets
from tests.conftest import REPO
from tests.fakes.discord_api import TOKEN as DISCORD_TOKEN
from tests.fakes.discord_api import DiscordFake
from tests.fakes.stability import StabilityFake

SENTINEL = "sk-SENTINEL-abcdef123456"


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("IMAGINE_") and not k.endswith(("_API_KEY", "_TOKEN"))
    }
    base["PYTHONPATH"] = str(REPO)
    base.update(extra or {})
    return base


def run(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = clean_env(env)
    return subprocess.run(
        [sys.executable, "-m", "bot", "--data-dir", str(tmp_path / "data"), *args],
        cwd=tmp_path,
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_generate_writes_images_and_prints_json(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run(
        tmp_path,
        "generate",
        "a lighthouse at dusk --n 2 --seed 7 --ar 3:2",
        "--out",
        str(out),
        "--json",
        "--user",
        "dana",
    )
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
    proc = run(
        tmp_path,
        "doctor",
        env={"STABILITY_API_KEY": SENTINEL, "IMAGINE_PROVIDERS__DEFAULT": '"offline"'},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[ok] database ok" in proc.stdout
    assert "[ok] provider offline" in proc.stdout
    assert "STABILITY_API_KEY: set" in proc.stdout
    assert SENTINEL not in proc.stdout + proc.stderr


async def test_doctor_shows_the_stability_balance_and_engines(tmp_path: Path) -> None:
    async with StabilityFake(api_key=SENTINEL) as fake:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("IMAGINE_") and not k.endswith(("_API_KEY", "_TOKEN"))
        }
        env.update(
            {
                "PYTHONPATH": str(REPO),
                "STABILITY_API_KEY": SENTINEL,
                "STABILITY_API_BASE_URL": fake.base_url,
            }
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "--data-dir",
            str(tmp_path / "data"),
            "doctor",
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode() + err.decode()
    assert proc.returncode == 0, text
    assert "[ok] provider stability" in text and "balance=" in text and "credits" in text
    # core is a v2beta model: doctor no longer depends on the legacy v1 engines list.
    assert "model=core" in text and "engines=" not in text
    assert SENTINEL not in text


def test_log_lines_never_carry_a_secret() -> None:
    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "calling with %s and %s", (SENTINEL, "ok"), None
    )
    assert RedactSecrets({"STABILITY_API_KEY": SENTINEL}).filter(record)
    assert record.getMessage() == "calling with *** and ok"
    try:
        raise RuntimeError(f"header was Bearer {SENTINEL}")
    except RuntimeError:
        err = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    RedactSecrets({"OPENAI_API_KEY": SENTINEL}).filter(err)
    assert err.exc_text is not None and SENTINEL not in err.exc_text and "***" in err.exc_text


def test_serve_refuses_an_exposed_address_without_a_token_before_touching_data(
    tmp_path: Path,
) -> None:
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

    async def until(self, wanted: Callable[[str], bool], within: float = 60.0) -> str:
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
        sys.executable,
        "-m",
        "bot",
        "--data-dir",
        str(tmp_path / "data"),
        "serve",
        *args,
        cwd=tmp_path,
        env=clean_env(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
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
        env = {
            "IMAGINE_WEB__ENABLED": "false",
            "IMAGINE_WEB__PORT": str(web_port),
            "DISCORD_TOKEN": DISCORD_TOKEN,
            "DISCORD_API_BASE_URL": fake.base_url,
            "DISCORD_GATEWAY_URL": fake.gateway_url,
        }
        async with serving(tmp_path, env) as served:
            line = await served.until(lambda line: line.startswith("discord:"))
            assert "connected" in line
            # the command sync may still be on its way when the line is printed
            await fake.wait_for(lambda: {c["name"] for c in fake.commands} >= {"imagine"})
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


# ------------------------------------------------------------------------------ CLI words
def test_help_is_plain_text_with_the_exit_codes(tmp_path: Path) -> None:
    proc = run(tmp_path, "--help")
    assert proc.returncode == 0
    assert "``" not in proc.stdout and ":class:" not in proc.stdout
    assert "generate" in proc.stdout and "serve" in proc.stdout
    assert "exit codes:" in proc.stdout and "75" in proc.stdout


def test_version_comes_from_the_package_metadata(tmp_path: Path) -> None:
    import tomllib

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    proc = run(tmp_path, "--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"imagine-bot {version}"


async def test_serve_says_which_provider_which_adapters_and_where_to_open(tmp_path: Path) -> None:
    port = free_port()
    async with serving(tmp_path, {"IMAGINE_WEB__PORT": str(port)}) as served:
        provider = await served.until(lambda line: line.startswith("provider"))
        web = await served.until(lambda line: line.startswith("web:"))
    assert "offline" in provider and "procedural" in provider
    assert web == f"web: open http://127.0.0.1:{port}/"
    assert served.proc.returncode == 0, served.stderr


async def test_serve_with_a_token_shows_where_it_goes_never_the_token(tmp_path: Path) -> None:
    port = free_port()
    token = "web-SENTINEL-0123456789"
    async with StabilityFake(api_key=SENTINEL) as fake:
        env = {
            "IMAGINE_WEB__PORT": str(port),
            "IMAGINE_WEB__HOST": '"0.0.0.0"',
            "WEB_ACCESS_TOKEN": token,
            "STABILITY_API_KEY": SENTINEL,
            "STABILITY_API_BASE_URL": fake.base_url,
        }
        async with serving(tmp_path, env) as served:
            provider = await served.until(lambda line: line.startswith("provider"))
            web = await served.until(lambda line: line.startswith("web:"))
    assert "Stability AI" in provider
    assert f":{port}/?token=<WEB_ACCESS_TOKEN>" in web
    shown = "\n".join(served.lines) + served.stderr
    assert token not in shown and SENTINEL not in shown


def test_quota_says_whose_and_on_which_platform(tmp_path: Path) -> None:
    assert (
        run(
            tmp_path, "generate", "a fox --n 2", "--user", "dana", "--out", str(tmp_path / "o")
        ).returncode
        == 0
    )
    mine = run(tmp_path, "quota", "--user", "dana")
    assert mine.returncode == 0
    assert mine.stdout.startswith("Quota of dana on the command line: ")
    assert "48 of 50" in mine.stdout
    # The same name elsewhere is someone else, with the tenant ids the adapters use.
    web = run(tmp_path, "quota", "--user", "Dana", "--platform", "web")
    assert web.stdout.startswith("Quota of Dana on the web playground: ")
    assert "50 of 50" in web.stdout
    slack = run(tmp_path, "quota", "--user", "U0123", "--platform", "slack:T123")
    assert slack.stdout.startswith("Quota of U0123 on Slack workspace T123: ")
    discord = run(tmp_path, "quota", "--user", "80351110224678912", "--platform", "discord:G123")
    assert discord.stdout.startswith("Quota of 80351110224678912 on Discord server G123: ")


@pytest.mark.parametrize(
    ("platform", "fragment"),
    [
        ("slack", "slack:ID"),
        ("discord", "discord:ID"),
        ("teams:T1", "unknown --platform"),
        ("web:x", "write just web"),
    ],
)
def test_quota_with_a_bad_platform_is_one_line(
    tmp_path: Path, platform: str, fragment: str
) -> None:
    proc = run(tmp_path, "quota", "--user", "U1", "--platform", platform)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert fragment in line


def one_error(proc: subprocess.CompletedProcess[str], code: int, kind: str) -> str:
    """The CLI's answer to a user's mistake: that exit code, one line on stderr (after any
    log lines) and no traceback, and the same as a JSON error object on stdout."""
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.startswith("imagine-bot: ")]
    assert len(lines) == 1 and proc.stderr.rstrip().endswith(lines[0]), proc.stderr
    error = json.loads(proc.stdout)["error"]
    assert error == {
        "kind": kind,
        "message": lines[0].removeprefix("imagine-bot: "),
        "exit_code": code,
    }
    return lines[0]


def test_generate_while_serve_runs_says_what_to_do_instead(tmp_path: Path) -> None:
    from bot.app import runner_lock

    (tmp_path / "data").mkdir()
    with runner_lock(tmp_path / "data"):  # what a running `serve` holds
        proc = run(tmp_path, "generate", "a fox", "--json")
    line = one_error(proc, 75, "already_running")
    assert "already running" in line and "configuration error" not in line
    assert "stop it first" in line and "--data-dir" in line


@pytest.mark.parametrize("image", ["missing.png", "."])
def test_generate_with_an_unreadable_image_touches_nothing(tmp_path: Path, image: str) -> None:
    proc = run(tmp_path, "generate", "a fox", "--image", image, "--json")
    line = one_error(proc, 66, "input")
    assert f"--image {image}" in line
    assert not (tmp_path / "data").exists()


def test_a_refused_prompt_is_a_json_error_too(tmp_path: Path) -> None:
    proc = run(tmp_path, "generate", "a fox --steps 500", "--json")
    assert "--steps" in one_error(proc, 2, "refused")


def test_a_data_dir_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot",
            "--data-dir",
            str(tmp_path / "afile" / "data"),
            "generate",
            "a fox",
            "--json",
        ],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "cannot create the data dir" in one_error(proc, 73, "data_dir")


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[list[str]]:
    """A command prefix under which ``path`` cannot be written, even by root: a private
    read-only bind mount (a `:ro` volume) where user namespaces allow one, else chmod."""
    probe = (
        subprocess.run(["unshare", "-rm", "true"], capture_output=True, check=False)
        if shutil.which("unshare")
        else None
    )
    if probe is not None and probe.returncode == 0:
        yield ["unshare", "-rm", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(path)]
        return
    if os.geteuid() == 0:
        pytest.skip("root ignores file modes and no user namespace is available")
    mode = path.stat().st_mode
    path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        yield []
    finally:
        path.chmod(mode)


def run_under(prefix: list[str], tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "bot", "--data-dir", str(tmp_path / "data"), *args],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_an_unwritable_data_dir_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    with read_only(tmp_path / "data") as prefix:
        proc = run_under(prefix, tmp_path, "generate", "a fox", "--json")
    assert "data dir" in one_error(proc, 73, "data_dir")


def test_a_read_only_database_is_one_line(tmp_path: Path) -> None:
    assert run(tmp_path, "generate", "a fox --n 1", "--out", str(tmp_path / "o")).returncode == 0
    db = tmp_path / "data" / "imagine-bot.sqlite3"
    with read_only(db) as prefix:
        proc = run_under(prefix, tmp_path, "generate", "a fox --n 1", "--json")
    assert "read-only" in one_error(proc, 73, "database")


def test_a_closed_pipe_is_one_line_and_exit_141(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bot",
            "--data-dir",
            str(tmp_path / "data"),
            "generate",
            "a fox --n 1",
            "--json",
            "--out",
            str(tmp_path / "o"),
        ],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(120) == 141
    [line] = err.strip().splitlines()[-1:]
    assert "broken pipe" in line
    assert "Traceback" not in err and "Exception ignored" not in err


def test_generate_json_into_head_shows_no_traceback(tmp_path: Path) -> None:
    command = f"{sys.executable} -m bot --data-dir data generate 'a fox --n 1' --json | head -c 10"
    proc = subprocess.run(
        ["bash", "-c", command],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert len(proc.stdout) == 10
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr


def test_serve_on_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = run(tmp_path, "serve", "--port", str(taken.getsockname()[1]))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.rstrip()
        .splitlines()[-1]
        .startswith(
            "imagine-bot: configuration error: The web playground cannot listen on 127.0.0.1:"
        )
    )
