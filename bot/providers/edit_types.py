"""What an image verb asks of a provider besides generating: upscale or outpaint one image.

An :class:`Edit` rides on a :class:`bot.providers.base.GenerationRequest` whose ``init_image``
is the picked image and whose ``width`` x ``height`` is that image's size. Kept apart from
``base`` so the job request can store it without importing the provider protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

EditOp = Literal["upscale", "outpaint"]


@dataclass(frozen=True)
class Edit:
    """``upscale``: ``scale`` times the image's size. ``outpaint``: pixels added on each side
    (Zoom out pads all four, Pan one)."""

    op: EditOp
    scale: float = 2.0
    left: int = 0
    top: int = 0
    right: int = 0
    bottom: int = 0

    def out_size(self, width: int, height: int) -> tuple[int, int]:
        if self.op == "upscale":
            return round(width * self.scale), round(height * self.scale)
        return width + self.left + self.right, height + self.top + self.bottom

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "scale": self.scale,
            "pad": [self.left, self.top, self.right, self.bottom],
        }

    @classmethod
    def from_dict(cls, raw: Any) -> Edit | None:
        if not isinstance(raw, dict) or raw.get("op") not in ("upscale", "outpaint"):
            return None
        left, top, right, bottom = (int(x) for x in (raw.get("pad") or (0, 0, 0, 0)))
        return cls(raw["op"], float(raw.get("scale", 2.0)), left, top, right, bottom)


def zoom_out(width: int, height: int, factor: float, multiple: int = 8) -> Edit:
    """Pad all four sides so the canvas is ``factor`` times the image, centred; the new size a
    multiple of ``multiple`` (the diffusion services want multiples of 8)."""
    new_w = _round_up(round(width * factor), multiple)
    new_h = _round_up(round(height * factor), multiple)
    left, top = (new_w - width) // 2, (new_h - height) // 2
    return Edit("outpaint", 1.0, left, top, new_w - width - left, new_h - height - top)


def pan(width: int, height: int, direction: str, fraction: float, multiple: int = 8) -> Edit:
    """Extend one side by ``fraction`` of the image along that axis (Midjourney pans by half)."""
    along = width if direction in ("left", "right") else height
    grow = _round_up(max(multiple, round(along * fraction)), multiple)
    pads = {"left": (grow, 0, 0, 0), "up": (0, grow, 0, 0), "right": (0, 0, grow, 0)}
    left, top, right, bottom = pads.get(direction, (0, 0, 0, grow))
    return Edit("outpaint", 1.0, left, top, right, bottom)


def _round_up(value: int, multiple: int) -> int:
    m = max(1, multiple)
    return -(-value // m) * m


__all__ = ["Edit", "EditOp", "pan", "zoom_out"]
