"""Vendor schema excerpts and the helper that validates against them (see README.md)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

HERE = Path(__file__).resolve().parent


@cache
def _document(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((HERE / name).read_text())
    return data


def errors(
    document: str, schema: str, instance: object, patch: dict[str, dict[str, Any]] | None = None
) -> list[str]:
    """Why ``instance`` breaks ``#/components/schemas/<schema>`` of a vendored excerpt (empty
    when it is valid). ``patch`` maps a schema name to properties that replace or add to its
    own, where the vendor's current docs are ahead of the excerpt; the README explains each."""
    doc = json.loads(json.dumps(_document(document)))
    for name, props in (patch or {}).items():
        doc["components"]["schemas"][name].setdefault("properties", {}).update(props)
    root = {"$ref": f"#/components/schemas/{schema}", "components": doc["components"]}
    validator = Draft202012Validator(root)
    return sorted(
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(instance)
    )
