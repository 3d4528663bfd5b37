"""The Docker image, checked without a Docker engine: the Dockerfile's shape, what the build
context holds, and the HEALTHCHECK probe run against fakes. Building and running the image
itself is ``scripts/docker-smoke.sh`` (root, minutes)."""

from __future__ import annotations

import fcntl
import fnmatch
import http.server
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO

DOCKERFILE = REPO / "Dockerfile"
PROBE = REPO / "scripts" / "docker-healthcheck.py"
SOURCE_DIRS = ("bot", "adapters")


# ----------------------------------------------------------------------------- the Dockerfile
@dataclass(frozen=True)
class Instruction:
    stage: int
    op: str
    args: str


def instructions() -> list[Instruction]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out: list[Instruction] = []
    stage = -1
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, args = line.partition(" ")
        op = op.upper()
        if op == "FROM":
            stage += 1
        out.append(Instruction(stage, op, args.strip()))
    return out


def stages() -> dict[int, list[Instruction]]:
    found: dict[int, list[Instruction]] = {}
    for ins in instructions():
        found.setdefault(ins.stage, []).append(ins)
    return found


def copy_sources(ins: Instruction) -> list[str]:
    """The build-context paths a COPY takes (none for ``COPY --from=stage``)."""
    words = shlex.split(ins.args)
    if any(w.startswith("--from=") for w in words):
        return []
    words = [w for w in words if not w.startswith("--")]
    return words[:-1]


def final_stage() -> list[Instruction]:
    all_stages = stages()
    return all_stages[max(all_stages)]


def test_the_base_is_pinned_by_digest() -> None:
    args = {
        i.args.split("=", 1)[0]: i.args.split("=", 1)[1]
        for i in instructions()
        if i.op == "ARG" and "=" in i.args
    }
    assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", args["BASE"]), args["BASE"]
    names: set[str] = set()
    for ins in instructions():
        if ins.op == "FROM":
            image, *rest = ins.args.split()
            # Every stage starts from the pinned base or from an earlier stage, never a tag.
            assert image == "${BASE}" or image in names, ins.args
            if rest and rest[0].upper() == "AS":
                names.add(rest[1])


def test_dependencies_install_in_a_layer_that_sees_no_source(tmp_path: Path) -> None:
    dep_installs = [
        (stage, ins)
        for stage, body in stages().items()
        for ins in body
        if ins.op == "RUN" and "pip install -r" in ins.args
    ]
    assert len(dep_installs) == 1
    stage, install = dep_installs[0]
    body = stages()[stage]
    before = body[: body.index(install)]
    copied = [src for ins in before if ins.op in ("COPY", "ADD") for src in copy_sources(ins)]
    assert copied == [], f"the dependency stage copies {copied} from the context"
    # Its list comes from pyproject.toml's dependencies, read in a stage of its own.
    assert any(i.op == "COPY" and "requirements.txt" in i.args for i in before)
    reader = [i for i in instructions() if i.op == "RUN" and "'dependencies'" in i.args]
    assert reader and "tomllib" in reader[0].args
    snippet = re.search(r'python -c "(.*?)" > requirements.txt', reader[0].args)
    assert snippet is not None
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    out = subprocess.run(
        [sys.executable, "-c", snippet.group(1)],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert deps and out.splitlines() == deps


def test_the_final_image_installs_a_wheel_and_keeps_no_source() -> None:
    body = final_stage()
    for ins in body:
        for src in copy_sources(ins):
            assert src.split("/")[0] not in (*SOURCE_DIRS, "."), f"source copied: {ins.args}"
    install = [i for i in body if i.op == "RUN" and ".whl" in i.args]
    assert install and "--mount=type=bind" in install[0].args, "the wheel must not stay in a layer"
    assert "--no-deps" in install[0].args
    # A builder that keys a RUN's cache on its text alone (buildah) would keep installing the
    # old wheel: the wheel's checksum, copied just before, changes that layer's parent.
    before = body[body.index(install[0]) - 1]
    assert before.op == "COPY" and "SHA256SUMS" in before.args
    assert "sha256sum -c" in install[0].args


def test_it_runs_as_a_non_root_user_with_the_data_dir_as_a_volume() -> None:
    body = final_stage()
    users = [i.args for i in body if i.op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(i.op == "VOLUME" and "/data" in i.args for i in body)
    env = " ".join(i.args for i in body if i.op == "ENV")
    assert "IMAGINE_BOT__DATA_DIR=/data" in env
    entry = [i.args for i in body if i.op == "ENTRYPOINT"]
    assert entry and entry[-1].startswith("["), "exec form: the bot is PID 1 and gets SIGTERM"


def test_the_healthcheck_follows_the_configured_port() -> None:
    checks = [i.args for i in final_stage() if i.op == "HEALTHCHECK"]
    assert len(checks) == 1
    assert "8080" not in checks[0]
    copied = [i.args for i in final_stage() if i.op == "COPY" and "docker-healthcheck.py" in i.args]
    assert copied, "the probe is copied into the image"
    target = shlex.split(copied[0])[-1]
    assert target in checks[0]


# ----------------------------------------------------------------------------- .dockerignore
def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last pattern matching the path or a folder above it
    decides; ``!`` re-includes; ``**`` matches any number of folders."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, p) for p in prefixes) or fnmatch.fnmatch(path, pattern):
            verdict = not negate
    return verdict


def _patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize(
    "path",
    [
        ".git/config",
        ".venv/bin/python",
        "data/imagine-bot.sqlite3",
        "tests/test_docker.py",
        ".env",
        ".mypy_cache/x",
        "bot/__pycache__/cli.cpython-311.pyc",
        "out/a.png",
        "imagine_bot.egg-info/PKG-INFO",
        "bench/web_load.py",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert _ignored(path, _patterns()), path


def test_dockerignore_keeps_everything_the_build_copies() -> None:
    patterns = _patterns()
    for ins in instructions():
        if ins.op not in ("COPY", "ADD"):
            continue
        for src in copy_sources(ins):
            base = REPO / src
            files = [base] if base.is_file() else [p for p in base.rglob("*.py")]
            assert files, src
            for f in files:
                rel = f.relative_to(REPO).as_posix()
                assert not _ignored(rel, patterns), f"{rel} is needed by: COPY {ins.args}"


def test_readme_docker_run_says_how_to_open_the_playground() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Docker", 1)[1].split("\n## ", 1)[0]
    assert "docker run" in section
    assert "/?token=" in section
    assert "IMAGINE_WEB__PORT" in section


# ----------------------------------------------------------------------------- the probe
def _probe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docker_healthcheck", PROBE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def probe() -> ModuleType:
    return _probe()


def _fake_proc(
    tmp_path: Path, argv: list[str] | None, locks: str = "", cwd: Path | None = None
) -> Path:
    proc = tmp_path / "proc"
    (proc / "1").mkdir(parents=True)
    (proc / "1" / "cmdline").write_bytes(b"/usr/bin/tini\0--\0")
    if argv is not None:
        (proc / "7").mkdir()
        (proc / "7" / "cmdline").write_bytes("\0".join(argv).encode() + b"\0")
        (proc / "7" / "cwd").symlink_to(cwd or tmp_path)
    (proc / "locks").write_text(locks)
    (proc / "self").mkdir()
    return proc


@pytest.fixture
def healthz() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


BOT = ["/opt/imagine-bot/bin/python", "/opt/imagine-bot/bin/imagine-bot"]


def test_options_are_read_from_the_bots_command_line(probe: ModuleType, tmp_path: Path) -> None:
    assert probe.parse_options(["--config", "a.toml", "serve", "--port=9000", "--host", "::"]) == {
        "--config": "a.toml",
        "--port": "9000",
        "--host": "::",
    }
    proc = _fake_proc(tmp_path, ["python3", "-m", "bot", "--data-dir", "/d", "serve"])
    found = probe.find_bot(proc)
    assert found is not None and found.pid == 7 and found.options == {"--data-dir": "/d"}
    assert probe.find_bot(_fake_proc(tmp_path / "none", None)) is None


def test_the_probe_knows_every_option_of_serve() -> None:
    from bot.cli import build_parser

    probe = _probe()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    serve = sub.choices["serve"]  # type: ignore[index]
    options = {
        o
        for p in (parser, serve)
        for a in p._actions
        for o in a.option_strings
        if o.startswith("--") and o not in ("--help", "--version")
    }  # no value to read
    # A new option of serve (or a global one) may move the port or the data dir: the probe
    # must read it, or this list must say why not.
    assert options <= set(probe.OPTIONS), options - set(probe.OPTIONS)


def test_the_probe_uses_the_port_from_the_environment(
    probe: ModuleType, tmp_path: Path, healthz: int
) -> None:
    proc = _fake_proc(tmp_path, [*BOT, "serve"])
    ok, why = probe.check({"IMAGINE_WEB__PORT": str(healthz)}, proc)
    assert ok, why
    assert why == f"http://127.0.0.1:{healthz}/healthz: HTTP 200"
    ok, why = probe.check({"IMAGINE_WEB__PORT": str(_free_port())}, proc)
    assert not ok and "Connection refused" in why


def test_the_probe_uses_the_port_from_serve_port_and_the_config(
    probe: ModuleType, tmp_path: Path, healthz: int
) -> None:
    proc = _fake_proc(tmp_path, [*BOT, "serve", "--port", str(healthz)])
    ok, why = probe.check({"IMAGINE_WEB__PORT": str(_free_port())}, proc)
    assert ok, why
    (tmp_path / "imagine.toml").write_text(f"[web]\nport = {healthz}\n")
    # A relative --config is the bot's working directory's, not the probe's.
    proc = _fake_proc(tmp_path / "b", [*BOT, "--config", "imagine.toml", "serve"], cwd=tmp_path)
    ok, why = probe.check({}, proc)
    assert ok, why


def test_the_probe_reports_a_bad_config_without_values(probe: ModuleType, tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, [*BOT, "serve"])
    ok, why = probe.check({"IMAGINE_WEB__PORT": "0", "WEB_ACCESS_TOKEN": "tok-SENTINEL-1"}, proc)
    assert not ok and "web.port" in why and "SENTINEL" not in why
    assert probe.check({}, _fake_proc(tmp_path / "x", None)) == (
        False,
        "no imagine-bot process is running",
    )


def test_with_the_playground_off_the_probe_checks_the_data_dir_lock(
    probe: ModuleType, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    lock = data / "runner.lock"
    lock.touch()
    env = {"IMAGINE_WEB__ENABLED": "false", "IMAGINE_BOT__DATA_DIR": str(data)}
    held = f"1: FLOCK  ADVISORY  WRITE 7 00:2f:{lock.stat().st_ino} 0 EOF\n"
    ok, why = probe.check(env, _fake_proc(tmp_path / "a", [*BOT, "serve"], locks=held))
    assert ok and why == f"web playground off; imagine-bot holds {lock}"
    waiting = f"1: -> FLOCK  ADVISORY  WRITE 9 00:2f:{lock.stat().st_ino} 0 EOF\n"
    ok, why = probe.check(env, _fake_proc(tmp_path / "b", [*BOT, "serve"], locks=waiting))
    assert not ok and "nothing holds" in why


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks")
def test_the_lock_is_seen_in_proc_locks_without_taking_it(
    probe: ModuleType, tmp_path: Path
) -> None:
    from bot.app import LOCK_NAME, runner_lock

    assert probe.LOCK_NAME == LOCK_NAME
    lock = tmp_path / LOCK_NAME
    assert not probe.lock_is_held(lock)
    with runner_lock(tmp_path):
        assert probe.lock_is_held(lock)
        # Looking did not take it: the bot's own non-blocking flock still sees it held.
        fd = os.open(lock, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    assert not probe.lock_is_held(lock)
