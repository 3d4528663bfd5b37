"""A job's parameters, typed: what was asked, what is sent to the provider, and who pays.

Stored as ``jobs.request_json``. The JSON is versioned (``"v"``); :meth:`JobRequest.from_json`
reads every version ever written (version 0 had no ``"v"`` key and may lack the ``display_*``
keys), so a job queued by an older bot still runs, renders and continues after an upgrade.
Every reader goes through this class: adding a parameter is one field here, one key in
:meth:`to_json` and one in :meth:`from_json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bot.providers.base import GenerationRequest, WeightedPrompt
from bot.providers.edit_types import Edit

VERSION = 1


def _weights(raw: Any) -> tuple[WeightedPrompt, ...]:
    return tuple(WeightedPrompt(str(t), float(w)) for t, w in (raw or ()))


def _opt_int(raw: Any) -> int | None:
    return None if raw is None else int(raw)


def _opt_float(raw: Any) -> float | None:
    return None if raw is None else float(raw)


def _opt_str(raw: Any) -> str | None:
    return None if raw is None else str(raw)


@dataclass(frozen=True)
class Display:
    """The user's own words, before a style or the avatar preset was applied: what the
    channel sees, and what Vary and Reroll start again from."""

    prompt: str = ""
    style: str = ""
    avatar: bool = False
    weighted: tuple[WeightedPrompt, ...] = ()
    # Saved defaults (bot/defaults.py): whether Vary and Reroll open the prompt first, and
    # where each value came from ("n" -> "your default"), for Info.
    remix: bool = False
    sources: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class JobRequest:
    prompt: str
    negative_prompt: str | None = None
    weighted_prompts: tuple[WeightedPrompt, ...] = ()
    n: int = 1
    width: int = 1024
    height: int = 1024
    seed: int = 0
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    style: str | None = None
    model: str | None = None
    strength: float | None = None
    init_sha: str | None = None
    init_ext: str | None = None
    display: Display = field(default_factory=Display)
    # Who pays, as the platform vouched for them at the time: the result's "N left" line must
    # use the same limits (roles, admin exemption) as the reservation did.
    payer_roles: tuple[str, ...] = ()
    payer_admin: bool = False
    # Remix: Vary and Reroll of this job open the prompt for editing first. Set by --remix, or
    # by the user's stored defaults (another module) before the job is built.
    remix: bool = False
    edit: Edit | None = None  # an image verb's upscale or outpaint of the init image
    cost: int = 1  # quota units per image (an upscale may cost more, per provider)

    @property
    def shown_prompt(self) -> str:
        """The prompt as the user typed it (falls back to what was sent)."""
        return self.display.prompt or self.prompt

    @classmethod
    def from_generation(
        cls,
        req: GenerationRequest,
        *,
        init_sha: str | None = None,
        init_ext: str | None = None,
        display: Display = Display(),
        payer_roles: tuple[str, ...] = (),
        payer_admin: bool = False,
        remix: bool = False,
        cost: int = 1,
    ) -> JobRequest:
        return cls(
            prompt=req.prompt,
            negative_prompt=req.negative_prompt,
            weighted_prompts=req.weighted_prompts,
            n=req.n,
            width=req.width,
            height=req.height,
            seed=req.seed,
            steps=req.steps,
            cfg=req.cfg,
            sampler=req.sampler,
            style=req.style,
            model=req.model,
            strength=req.strength,
            init_sha=init_sha,
            init_ext=init_ext,
            display=display,
            payer_roles=payer_roles,
            payer_admin=payer_admin,
            remix=remix,
            edit=req.edit,
            cost=cost,
        )

    def generation(
        self, *, init_image: bytes | None = None, user_ref: str | None = None
    ) -> GenerationRequest:
        """The provider call this job makes (the init image's bytes are loaded by the runner)."""
        return GenerationRequest(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            weighted_prompts=self.weighted_prompts,
            n=self.n,
            width=self.width,
            height=self.height,
            seed=self.seed,
            steps=self.steps,
            cfg=self.cfg,
            sampler=self.sampler,
            style=self.style,
            model=self.model,
            init_image=init_image,
            strength=self.strength,
            user_ref=user_ref,
            edit=self.edit,
        )

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "v": VERSION,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "weighted_prompts": [[w.text, w.weight] for w in self.weighted_prompts],
            "n": self.n,
            "width": self.width,
            "height": self.height,
            "seed": self.seed,
            "steps": self.steps,
            "cfg": self.cfg,
            "sampler": self.sampler,
            "style": self.style,
            "model": self.model,
            "strength": self.strength,
            "init_sha": self.init_sha,
            "init_ext": self.init_ext,
            "display_prompt": self.display.prompt,
            "display_style": self.display.style,
            "display_avatar": self.display.avatar,
            "display_weighted": [[w.text, w.weight] for w in self.display.weighted],
            "display_remix": self.display.remix,
            "display_sources": [[k, v] for k, v in self.display.sources],
            "payer_roles": list(self.payer_roles),
            "payer_admin": self.payer_admin,
            "remix": self.remix,
            "edit": self.edit.to_dict() if self.edit else None,
            "cost": self.cost,
        }
        return json.dumps(data, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobRequest:
        r = json.loads(text)
        version = int(r.get("v", 0))
        if version > VERSION:
            raise ValueError(f"job request version {version} is newer than this bot ({VERSION})")
        return cls(
            prompt=str(r.get("prompt", "")),
            negative_prompt=_opt_str(r.get("negative_prompt")),
            weighted_prompts=_weights(r.get("weighted_prompts")),
            n=int(r.get("n", 1)),
            width=int(r.get("width", 1024)),
            height=int(r.get("height", 1024)),
            seed=int(r.get("seed", 0)),
            steps=_opt_int(r.get("steps")),
            cfg=_opt_float(r.get("cfg")),
            sampler=_opt_str(r.get("sampler")),
            style=_opt_str(r.get("style")),
            model=_opt_str(r.get("model")),
            strength=_opt_float(r.get("strength")),
            init_sha=r.get("init_sha") or None,
            init_ext=r.get("init_ext") or None,
            display=Display(
                prompt=str(r.get("display_prompt") or ""),
                style=str(r.get("display_style") or ""),
                avatar=bool(r.get("display_avatar")),
                weighted=_weights(r.get("display_weighted")),
                remix=bool(r.get("display_remix")),
                sources=tuple((str(k), str(v)) for k, v in r.get("display_sources") or ()),
            ),
            payer_roles=tuple(str(x) for x in r.get("payer_roles") or ()),
            payer_admin=bool(r.get("payer_admin")),
            remix=bool(r.get("remix") or r.get("display_remix")),
            edit=Edit.from_dict(r.get("edit")),
            cost=max(1, int(r.get("cost") or 1)),
        )


__all__ = ["VERSION", "Display", "JobRequest"]
