"""doctor on the providers, run as an admin would: a real subprocess against loopback fakes."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from pathlib import Path

from bot.cli import RedactSecrets
from tests.fakes.openai import OpenAIFake
from tests.test_cli import clean_env, run

HORDE_KEY = "TEST-SENTINEL-horde-doctor-91ab"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_webui_is_reported_with_the_url_and_the_cause(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    proc = run(
        tmp_path,
        "doctor",
        env={"IMAGINE_PROVIDERS__DEFAULT": '"automatic1111"', "AUTOMATIC1111_BASE_URL": url},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    [failed] = [x for x in out.splitlines() if x.startswith("[FAIL] provider automatic1111")]
    assert f"{url}/sdapi/v1/" in failed and "ConnectError" in failed
    assert "unavailable right now" not in out  # not the chat apology
    # Its base URL setting is listed with the secrets and addresses doctor reads.
    assert f"AUTOMATIC1111_BASE_URL: {url}" in out
    assert "AUTOMATIC1111_PASSWORD: not set" in out


def test_a_missing_key_is_a_failed_line_and_the_rest_is_still_checked(tmp_path: Path) -> None:
    proc = run(
        tmp_path,
        "doctor",
        env={"IMAGINE_PROVIDERS__DEFAULT": '"openai"', "IMAGINE_PROVIDERS__FALLBACK": '"offline"'},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "configuration error" not in out
    [failed] = [x for x in out.splitlines() if x.startswith("[FAIL] provider openai")]
    assert "OPENAI_API_KEY" in failed
    assert "[ok] database ok" in out and "[ok] provider offline" in out


async def test_an_announced_shutdown_is_a_warning_line(tmp_path: Path) -> None:
    async with OpenAIFake(api_key="sk-doctor") as fake:
        fake.shutdown_dates["gpt-image-2.6-flare"] = "2027-02-01"
        env = clean_env(
            {
                "IMAGINE_PROVIDERS__DEFAULT": '"openai"',
                "OPENAI_API_KEY": "sk-doctor",
                "OPENAI_API_BASE_URL": fake.api_url,
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
        out_b, err_b = await asyncio.wait_for(proc.communicate(), 60)
    out = out_b.decode() + err_b.decode()
    assert proc.returncode == 0, out  # a warning is not a failure
    assert "[ok] provider openai" in out
    [warning] = [x for x in out.splitlines() if x.startswith("[warn] provider openai")]
    assert "2027-02-01" in warning and "providers.openai.model" in warning
    assert "sk-doctor" not in out


def test_the_horde_key_is_listed_and_redacted_like_the_others(tmp_path: Path) -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "key %s", (HORDE_KEY,), None)
    assert RedactSecrets({"AI_HORDE_API_KEY": HORDE_KEY}).filter(record)
    assert HORDE_KEY not in record.getMessage()
    proc = run(
        tmp_path,
        "doctor",
        env={
            "IMAGINE_PROVIDERS__DEFAULT": '"offline"',
            "IMAGINE_PROVIDERS__FALLBACK": '"horde"',
            "AI_HORDE_API_KEY": HORDE_KEY,
            "AI_HORDE_BASE_URL": f"http://127.0.0.1:{closed_port()}",
            "IMAGINE_PROVIDERS__HORDE": "{connect_retries = 0}",
        },
    )
    out = proc.stdout + proc.stderr
    assert "AI_HORDE_API_KEY: set" in out and HORDE_KEY not in out
    assert "[FAIL] provider horde" in out and "/v2/find_user" in out
