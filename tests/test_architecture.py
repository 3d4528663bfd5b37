"""House rules that code review alone would miss."""

from __future__ import annotations

import ast
import re

from tests.conftest import REPO

FORBIDDEN = {"discord", "slack_bolt", "slack_sdk", "aiohttp"}


def _imports(path):  # type: ignore[no-untyped-def]
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_core_never_imports_a_platform_library() -> None:
    for path in (REPO / "bot").rglob("*.py"):
        for name in _imports(path):
            assert name.split(".")[0] not in FORBIDDEN, f"{path} imports {name}"


def test_core_never_imports_adapters_statically() -> None:
    for path in (REPO / "bot").rglob("*.py"):
        for name in _imports(path):
            assert not name.startswith("adapters"), f"{path} imports {name}"


def test_no_blocking_calls_in_async_code() -> None:
    pattern = re.compile(
        r"\btime\.sleep\(|^\s*import requests|\brequests\.(get|post|put|delete)\(|"
        r"\burllib\.request", re.M)
    for folder in ("bot", "adapters"):
        for path in (REPO / folder).rglob("*.py"):
            assert not pattern.search(path.read_text()), path


def test_every_write_transaction_begins_immediate() -> None:
    for path in (REPO / "bot").rglob("*.py"):
        for line in path.read_text().splitlines():
            if re.search(r"[\"']BEGIN(\s+DEFERRED)?[\"']", line):
                raise AssertionError(f"bare BEGIN in {path}: {line.strip()}")
