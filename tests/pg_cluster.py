"""A throwaway PostgreSQL cluster for the tests: Debian's binaries, a temp dir, loopback.

``initdb`` refuses to run as root, so under root (CI) the cluster belongs to ``nobody``. The
server listens on 127.0.0.1 at a free port and on a unix socket inside the temp dir, with
password authentication (so a wrong password is really refused) and without fsync (the data
is thrown away). One cluster per test session; each test gets a fresh database, copied from a
migrated template (``CREATE DATABASE ... TEMPLATE``).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

USER = "imagine"
PASSWORD = "pg-test-secret-7c1f"
TEMPLATE = "imagine_template"
_names = itertools.count(1)
# DELETE, not TRUNCATE: on tables this small it is ten times quicker (no new files).
_EMPTY = """
DELETE FROM picks; DELETE FROM job_posts; DELETE FROM outbox; DELETE FROM images;
DELETE FROM ledger; DELETE FROM jobs; DELETE FROM quota_usage; DELETE FROM quota_limits;
DELETE FROM blocks; DELETE FROM channels; DELETE FROM admin_log; DELETE FROM alerts;
ALTER TABLE ledger ALTER COLUMN id RESTART; ALTER TABLE admin_log ALTER COLUMN id RESTART;
ALTER TABLE outbox ALTER COLUMN id RESTART; ALTER TABLE job_posts ALTER COLUMN seq RESTART;
"""


def find_bindir() -> Path | None:
    """The newest installed PostgreSQL's bin dir (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if Path(p, "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    bindir: Path
    root: Path
    port: int
    owner: str | None  # the user the server runs as, when we are root
    free: list[str] = field(default_factory=list)

    def url(self, database: str, *, password: str = PASSWORD, port: int | None = None) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{port or self.port}/{database}"

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = list(argv)
        if self.owner is not None:
            ids = pwd.getpwnam(self.owner)
            cmd = ["setpriv", f"--reuid={ids.pw_uid}", f"--regid={ids.pw_gid}", "--clear-groups"]
            cmd += list(argv)
        env = {**os.environ, "PGPASSWORD": PASSWORD}  # psql's, never the bot's
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=True, cwd=self.root, env=env
        )

    def psql(self, sql: str, database: str = "postgres") -> str:
        argv = [
            str(self.bindir / "psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(self.root / "sock"),
            "-p",
            str(self.port),
            "-U",
            USER,
            "-d",
            database,
            "-c",
            sql,
        ]
        return self._run(*argv).stdout

    def new_database(self, *, template: str = TEMPLATE) -> str:
        name = f"t{os.getpid()}_{next(_names)}"
        self.psql(f"CREATE DATABASE {name} TEMPLATE {template}")
        return name

    def take(self) -> str:
        """A migrated database with no rows: one given back, else a new copy of the
        template (a copy costs about 0.4 s, emptying one about a tenth of that)."""
        return self.free.pop() if self.free else self.new_database()

    def give_back(self, name: str) -> None:
        """Empty ``name``'s tables (identities restarted) and keep it for the next test."""
        self.psql(_EMPTY, database=name)
        self.free.append(name)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            pg_ctl = str(self.bindir / "pg_ctl")
            self._run(pg_ctl, "-D", str(self.root / "data"), "-m", "immediate", "stop", timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)


def start(bindir: Path) -> Cluster:
    as_root = os.geteuid() == 0
    # Under root, in /tmp (sticky, open to all): TMPDIR may be a folder nobody cannot enter.
    where = "/tmp" if as_root and os.path.isdir("/tmp") else None
    root = Path(tempfile.mkdtemp(prefix="imagine-pg-", dir=where))
    owner: str | None = None
    if as_root:
        owner = "nobody"
        ids = pwd.getpwnam(owner)
        os.chmod(root, 0o755)
        os.chown(root, ids.pw_uid, ids.pw_gid)
    cluster = Cluster(bindir=bindir, root=root, port=free_port(), owner=owner)
    try:
        (root / "sock").mkdir()
        (root / "pw").write_text(PASSWORD + "\n")
        if owner is not None:
            ids = pwd.getpwnam(owner)
            for p in (root / "sock", root / "pw"):
                os.chown(p, ids.pw_uid, ids.pw_gid)
        cluster._run(
            str(bindir / "initdb"),
            "-D",
            str(root / "data"),
            "-U",
            USER,
            f"--pwfile={root / 'pw'}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            timeout=120,
        )
        options = (
            f"-p {cluster.port} -k {root / 'sock'} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=300 -c shared_buffers=32MB"
        )
        cluster._run(
            str(bindir / "pg_ctl"),
            "-D",
            str(root / "data"),
            "-o",
            options,
            "-l",
            str(root / "log"),
            "-w",
            "-t",
            "60",
            "start",
            timeout=90,
        )
        cluster.psql(f"CREATE DATABASE {TEMPLATE}")
    except BaseException:
        cluster.stop()
        raise
    return cluster
