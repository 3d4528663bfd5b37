"""The provider protocol's shared pieces: errors, progress notes, fitting a request."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.providers.base import (
    Capabilities,
    CheckFailed,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    InvalidRequest,
    ModelRetired,
    ModelUnavailable,
    NotFound,
    NotSupported,
    Progress,
    ProgressCallback,
    ProviderError,
    fit_request,
    generate_split,
    nearest_size,
    progress_note,
    wrap_seed,
)


def test_an_error_may_carry_its_own_user_message() -> None:
    plain = InvalidRequest("HTTP 400")
    assert plain.user_message == InvalidRequest.user_message
    precise = InvalidRequest("HTTP 400", user_message="No sampler 'eulr'. Did you mean 'Euler'?")
    assert precise.user_message.startswith("No sampler") and precise.message == "HTTP 400"
    assert InvalidRequest.user_message != precise.user_message  # the class default is untouched


def test_model_unavailable_alerts_with_the_setting_to_change() -> None:
    err = ModelRetired(
        "HTTP 404 model_not_found",
        model="gpt-image-1",
        setting="providers.openai.model",
        replacement="gpt-image-2.6-flare",
    )
    assert isinstance(err, ModelUnavailable) and isinstance(err, NotFound)
    assert err.global_failure and not NotFound.global_failure
    assert "providers.openai.model" in err.user_message
    assert "gpt-image-1" in err.user_message and "gpt-image-2.6-flare" in err.user_message
    assert "retired" in err.user_message
    gone = ModelUnavailable(model="x.safetensors", setting="providers.comfyui.workflow")
    assert "does not offer" in gone.user_message and gone.global_failure


def test_check_failed_names_the_url_and_the_cause() -> None:
    err = CheckFailed("http://127.0.0.1:7860/sdapi/v1/samplers", "cannot connect (ConnectError)")
    assert isinstance(err, ProviderError)
    assert err.user_message == (
        "http://127.0.0.1:7860/sdapi/v1/samplers: cannot connect (ConnectError)"
    )


def test_progress_is_a_float_with_an_optional_note() -> None:
    p = Progress(0.25, "#12 in the Horde's queue, about 40 s")
    assert p == 0.25 and isinstance(p, float) and min(1.0, p) == 0.25
    assert progress_note(p) == "#12 in the Horde's queue, about 40 s"
    assert progress_note(0.5) is None and progress_note(Progress(0.5)) is None
    seen: list[float] = []
    old_style: ProgressCallback = seen.append  # a callback that knows nothing of notes
    old_style(p)
    assert seen == [0.25]


class _Noted:
    """A provider that reports a queue note before it answers."""

    name = "noted"
    label = "Noted"

    def __init__(self) -> None:
        self.seeds: list[int] = []

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(max_n_per_call=1, seed_max=4294967294, seed_zero_random=True)

    async def generate(
        self, req: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        self.seeds.append(req.seed)
        if progress is not None:
            progress(Progress(0.5, f"#{len(self.seeds)} in line"))
        return GenerationResult(images=(GeneratedImage(b"x", seed=req.seed),))

    async def check(self) -> dict[str, str]:
        return {}

    async def aclose(self) -> None:
        return None


async def test_split_calls_pass_the_note_on_and_never_wrap_a_seed_onto_zero() -> None:
    provider = _Noted()
    seen: list[float] = []
    await generate_split(
        provider, GenerationRequest("p", n=3, seed=4294967293), parallel=1, progress=seen.append
    )
    # 4294967293, 4294967294, then the wrap: 1, not 0 ("random" on Stability)
    assert provider.seeds == [4294967293, 4294967294, 1]
    assert [progress_note(p) for p in seen if progress_note(p)][:1] == ["#1 in line"]
    provider.seeds.clear()
    await generate_split(provider, GenerationRequest("p", n=2, seed=0), parallel=1)
    assert provider.seeds == [0, 0]  # "random" stays random for every call


def test_wrap_seed() -> None:
    v2 = Capabilities(seed_max=4294967294, seed_zero_random=True)
    assert wrap_seed(4294967295, v2) == 1
    assert wrap_seed(0, v2) == 0 and wrap_seed(7, v2) == 7
    plain = Capabilities(seed_max=999)
    assert wrap_seed(1000, plain) == 0 and wrap_seed(1001, plain) == 1
    assert wrap_seed(5, Capabilities(seed_max=None)) == 5


def test_nearest_size_keeps_area_and_ratio_limits() -> None:
    caps = Capabilities(
        size_multiple=16,
        min_side=16,
        max_side=3840,
        max_pixels=2560 * 1440,
        min_pixels=655_360,
        max_aspect=3.0,
    )
    for want in ((512, 512), (1024, 1024), (4000, 500), (300, 3000), (1344, 768), (3840, 2160)):
        w, h = nearest_size(*want, caps)
        assert w % 16 == 0 and h % 16 == 0, (want, w, h)
        assert 655_360 <= w * h <= 2560 * 1440, (want, w, h)
        assert max(w, h) / min(w, h) <= 3.0, (want, w, h)
    assert nearest_size(1024, 1024, caps) == (1024, 1024)
    assert nearest_size(1536, 864, caps) == (1536, 864)


def test_fit_offers_a_did_you_mean_and_splits_a_combined_sampler_name() -> None:
    caps = Capabilities(
        samplers=("Euler a", "Euler", "DPM++ 2M"),
        sampler_aliases=(("k_euler_a", "Euler a"),),
        schedulers=("Automatic", "Karras", "Exponential"),
    )
    with pytest.raises(NotSupported, match=r"no sampler 'Eulr a'\. Did you mean 'Euler a'\?"):
        fit_request(GenerationRequest("p", sampler="Eulr a"), caps, "webui")
    assert (
        fit_request(GenerationRequest("p", sampler="k_euler_a"), caps, "webui").request.sampler
        == "Euler a"
    )
    fitted = fit_request(GenerationRequest("p", sampler="dpm++ 2m karras"), caps, "webui")
    # Kept combined (the job stores only the sampler), in the provider's spelling.
    assert (fitted.request.sampler, fitted.request.scheduler) == ("DPM++ 2M Karras", None)
    with pytest.raises(NotSupported, match=r"no scheduler 'karas'\. Did you mean 'Karras'\?"):
        fit_request(GenerationRequest("p", scheduler="karas"), caps, "webui")
    exact = fit_request(GenerationRequest("p", scheduler="exponential"), caps, "webui")
    assert exact.request.scheduler == "Exponential"
    with pytest.raises(NotSupported, match=r"Did you mean 'sd3\.5-large'\?"):
        fit_request(
            GenerationRequest("p", model="sd3.5-larg"),
            replace(caps, models=("sd3.5-large", "core")),
            "Stability",
        )
