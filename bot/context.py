"""The services a command needs, in one object built once by the handler.

Verbs, admin commands, ``/imagine`` and delivery all take a :class:`Context` instead of a
dozen arguments. It also gathers what a job's message shows (:meth:`Context.view`) for the
pure :mod:`bot.render`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from bot import grammar, images, render
from bot.access import Access
from bot.config import Settings
from bot.errors import JobNotFound, UserError
from bot.jobs import Job, JobRunner, StoredJobImage
from bot.providers.base import Capabilities, Provider
from bot.providers.hub import ProviderHub
from bot.quotas import Quotas
from bot.storage.protocols import Storage
from bot.styles import StyleBook
from bot.types import Actor, Reply

if TYPE_CHECKING:
    from bot.actions import VerbTable


@dataclass
class Context:
    settings: Settings
    store: Storage
    quotas: Quotas
    runner: JobRunner
    providers: ProviderHub
    styles: StyleBook
    access: Access
    verbs: VerbTable
    clock: Callable[[], float] = time.time
    limits: grammar.GrammarLimits = field(init=False)
    image_limits: images.ImageLimits = field(init=False)

    def __post_init__(self) -> None:
        g, i = self.settings.grammar, self.settings.images
        self.limits = grammar.GrammarLimits(
            max_images=g.max_images,
            default_n=g.default_n,
            max_prompt_chars=g.max_prompt_chars,
            max_permutations=g.max_permutations,
            styles=self.styles.names(),
            base_side=g.base_side,
        )
        self.image_limits = images.ImageLimits(
            max_input_bytes=i.max_input_bytes,
            max_input_pixels=i.max_input_pixels,
            preview_max_bytes=i.preview_max_bytes,
            preview_max_side=i.preview_max_side,
        )

    # ----------------------------------------------------------------------- providers
    def provider(self) -> tuple[str, Provider]:
        """The provider new work goes to."""
        name = self.providers.default
        return name, self.providers.get(name)

    @property
    def capabilities(self) -> Capabilities:
        """What the verbs may offer: the provider's own capabilities, plus the plain resize
        standing in for an upscaler where the settings allow it."""
        caps = self.provider()[1].capabilities
        if caps.upscale == "none" and self.settings.actions.upscale_resize:
            return replace(caps, upscale="resize")
        return caps

    def provider_label(self, name: str) -> str:
        return self.providers.get(name).label if name in self.providers.names() else name

    # ---------------------------------------------------------------------------- jobs
    async def image(self, job: Job, index: int | None) -> StoredJobImage:
        if job.state != "done":
            raise UserError("That job has no images yet.")
        imgs = await self.runner.load_images(job.id)
        if index is None or not 1 <= index <= len(imgs):
            raise JobNotFound(f"That job has images 1 to {len(imgs)}.")
        return imgs[index - 1]

    async def left_text(self, job: Job) -> str:
        """The payer's "N left" line, with the limits the reservation used."""
        actor = Actor(
            job.platform,
            job.tenant,
            job.owner_id,
            job.owner_name,
            roles=job.request.payer_roles,
            is_admin=job.request.payer_admin,
        )
        return render.left_text(job.owner_name, await self.quotas.status(actor))

    async def view(self, job: Job, *, with_quota: bool = True) -> render.JobView:
        imgs: list[StoredJobImage] = []
        if job.state == "done":
            imgs = await self.runner.load_images(job.id)
        left = ""
        if with_quota and job.state not in ("queued", "running"):
            left = await self.left_text(job)
        return render.JobView(
            job=job,
            data_dir=self.settings.data_dir,
            images=imgs,
            position=self.runner.position(job.id) if job.state == "queued" else None,
            buttons=self.verbs.buttons(job, imgs, self.capabilities),
            left=left,
        )

    async def render(self, job: Job, *, with_quota: bool = True) -> Reply:
        return render.job_reply(await self.view(job, with_quota=with_quota))


__all__ = ["Context"]
