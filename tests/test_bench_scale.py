"""bench/scale.py's two-process half runs end to end (small: figures are the bench's job)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import pg_cluster

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.postgres


def test_two_processes_and_a_kill_finish_everything_with_the_ledger_exact() -> None:
    if pg_cluster.find_bindir() is None:
        pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
    pytest.importorskip("asyncpg", reason="the [postgres] extra (asyncpg) is not installed")
    argv = [sys.executable, "bench/scale.py", "--part", "procs", "--jobs", "12"]
    # The default lease (5 s): with 1 s a loaded machine stalls a live process past its
    # lease now and then, and its job is taken over (attempts 2) with nothing killed.
    argv += ["--latency-ms", "1000", "--concurrency", "2", "--lease-s", "5"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGINE_")}
    out = subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith(("1 process", "2 proc"))]
    assert len(rows) == 3, out.stdout
    for row in rows:
        # done, ledger exact, quota == images, n images per job, one outbox row done per job
        assert "12/12" in row and " exact " in row and "WRONG" not in row and " NO " not in row
    assert '{"1": 12}' in rows[0] and '{"1": 12}' in rows[1]
    killed = rows[2]
    assert '"2":' in killed, "the killed process's jobs were run again, once"
    assert "taken over" in out.stdout
