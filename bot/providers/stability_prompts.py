"""Stability AI's prompt shapes and a lenient integer reader (split from ``stability``).

v1 takes weighted ``text_prompts`` (``--no`` a negative weight); v2beta one prompt with
``(text:weight)`` parts and a separate negative prompt.
"""

from __future__ import annotations

from bot.providers.base import GenerationRequest, WeightedPrompt


def v1_text_prompts(req: GenerationRequest) -> list[WeightedPrompt]:
    """Our ``::`` weights map to ``text_prompts`` weights; ``--no`` is a negative weight."""
    prompts = [p for p in req.weighted_prompts if p.text.strip()] or [
        WeightedPrompt(req.prompt, 1.0)
    ]
    if req.negative_prompt:
        prompts.append(WeightedPrompt(req.negative_prompt, -1.0))
    return [WeightedPrompt(p.text[:2000], p.weight) for p in prompts]


def v2_prompt(req: GenerationRequest) -> tuple[str, str | None]:
    """v2beta takes ``(text:weight)`` in the prompt; negative weights go to the negative."""
    if not req.weighted_prompts:
        return req.prompt, req.negative_prompt
    pos: list[str] = []
    neg: list[str] = [req.negative_prompt] if req.negative_prompt else []
    for p in req.weighted_prompts:
        if p.weight < 0:
            neg.append(p.text)
        elif p.weight == 1.0:
            pos.append(p.text)
        else:
            pos.append(f"({p.text}:{p.weight:g})")
    return ", ".join(pos) or req.prompt, ", ".join(neg) or None


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None
