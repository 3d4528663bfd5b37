"""ComfyUI workflows: reading an API-format workflow with ``{{placeholders}}`` from the file a
setting names, and filling it per request (split from :mod:`bot.providers.comfyui`).

A string that *is* a placeholder becomes the typed value (``"{{seed}}"`` -> ``1234``); one
inside a longer string is replaced as text. ``{{scale}}`` is the Upscale workflow's factor.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bot.errors import ConfigError
from bot.providers.policy import get_str

PREFIX = "providers.comfyui"

PLACEHOLDERS = (
    "prompt",
    "negative",
    "seed",
    "steps",
    "cfg",
    "width",
    "height",
    "denoise",
    "init_image",
    "batch_size",
    "scale",
)
_PH = re.compile(r"\{\{(\w+)\}\}")


def load_workflow(section: Mapping[str, object], key: str, needs: str = "prompt") -> str | None:
    path = get_str(section, key, "", PREFIX).strip()
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = json.loads(text)
    except OSError as exc:
        raise ConfigError(f"{PREFIX}.{key}: cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"{PREFIX}.{key}: {path} is not JSON") from exc
    if (
        not isinstance(data, dict)
        or not data
        or not all(isinstance(v, dict) and "class_type" in v for v in data.values())
    ):
        raise ConfigError(
            f"{PREFIX}.{key}: {path} is not an API-format workflow (use 'Save (API Format)')"
        )
    unknown = set(_PH.findall(text)) - set(PLACEHOLDERS)
    if unknown:
        raise ConfigError(f"{PREFIX}.{key}: unknown placeholders {sorted(unknown)}")
    if "{{" + needs + "}}" not in text:
        raise ConfigError(f"{PREFIX}.{key}: the workflow has no {{{{{needs}}}}} placeholder")
    return text


def fill(template: str, values: Mapping[str, object]) -> Any:
    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str):
            whole = _PH.fullmatch(node)
            if whole and whole.group(1) in values:
                return values[whole.group(1)]
            return _PH.sub(lambda m: str(values.get(m.group(1), m.group(0))), node)
        return node

    return walk(json.loads(template))


# The old private name, kept for code that imported it.
_load_workflow = load_workflow

__all__ = ["PLACEHOLDERS", "fill", "load_workflow"]
