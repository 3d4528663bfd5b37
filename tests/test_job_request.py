"""The stored job request: typed, versioned, and readable in every version ever written."""

from __future__ import annotations

import json

import pytest

from bot.job_request import VERSION, Display, JobRequest
from bot.providers.base import GenerationRequest, WeightedPrompt

FULL = JobRequest(
    prompt="a lighthouse, oil painting",
    negative_prompt="fog",
    weighted_prompts=(
        WeightedPrompt("a lighthouse, oil painting", 2.0),
        WeightedPrompt("fog", -0.5),
    ),
    n=4,
    width=1216,
    height=832,
    seed=123,
    steps=30,
    cfg=7.5,
    sampler="euler",
    style=None,
    model="sdxl",
    strength=0.4,
    init_sha="ab" * 32,
    init_ext="png",
    display=Display(
        prompt="a lighthouse",
        style="oil",
        avatar=True,
        weighted=(WeightedPrompt("a lighthouse", 2.0), WeightedPrompt("fog", -0.5)),
    ),
    payer_roles=("vip",),
    payer_admin=True,
)


def test_round_trip() -> None:
    assert JobRequest.from_json(FULL.to_json()) == FULL
    assert JobRequest.from_json(JobRequest(prompt="x").to_json()) == JobRequest(prompt="x")


def test_the_json_keeps_the_keys_and_formatting_jobs_were_stored_with() -> None:
    text = FULL.to_json()
    data = json.loads(text)
    assert data.pop("v") == VERSION
    assert set(data) == {
        "prompt",
        "negative_prompt",
        "weighted_prompts",
        "n",
        "width",
        "height",
        "seed",
        "steps",
        "cfg",
        "sampler",
        "style",
        "model",
        "strength",
        "init_sha",
        "init_ext",
        "display_prompt",
        "display_remix",
        "display_sources",
        "display_style",
        "display_avatar",
        "display_weighted",
        "remix",
        "edit",
        "cost",
        "payer_roles",
        "payer_admin",
    }
    assert data["weighted_prompts"] == [["a lighthouse, oil painting", 2.0], ["fog", -0.5]]
    # Sorted keys, default separators, no ASCII escaping: what operators grep for.
    assert '"strength": 0.4' in text and f'"init_sha": "{"ab" * 32}"' in text
    assert text == json.dumps(json.loads(text), ensure_ascii=False, sort_keys=True)
    assert "é" in JobRequest(prompt="café").to_json()


def test_a_version_0_request_without_v_or_display_keys_is_read() -> None:
    # As the first releases wrote it: no "v", no display_* keys, no payer.
    old = json.dumps(
        {
            "prompt": "a red fox",
            "negative_prompt": None,
            "weighted_prompts": [["a red fox", 1]],
            "n": 2,
            "width": 1024,
            "height": 1024,
            "seed": 9,
            "steps": None,
            "cfg": 7,
            "sampler": None,
            "style": None,
            "model": None,
            "strength": None,
            "init_sha": None,
            "init_ext": None,
        },
        sort_keys=True,
    )
    r = JobRequest.from_json(old)
    assert r.display == Display()
    assert r.shown_prompt == "a red fox"  # nothing typed apart from what was sent
    assert r.weighted_prompts == (WeightedPrompt("a red fox", 1.0),)
    assert (r.n, r.seed, r.cfg, r.payer_roles, r.payer_admin) == (2, 9, 7.0, (), False)
    assert json.loads(r.to_json())["v"] == VERSION  # written back in the current version


def test_an_empty_init_sha_means_no_init_image() -> None:
    r = JobRequest.from_json('{"prompt": "p", "init_sha": "", "init_ext": ""}')
    assert (r.init_sha, r.init_ext) == (None, None)


def test_a_newer_version_is_refused_rather_than_misread() -> None:
    with pytest.raises(ValueError, match="newer"):
        JobRequest.from_json(json.dumps({"v": VERSION + 1, "prompt": "p"}))


def test_generation_is_the_provider_call_and_from_generation_its_inverse() -> None:
    gen = FULL.generation(init_image=b"png", user_ref="user:web:local:alice")
    assert isinstance(gen, GenerationRequest)
    assert (gen.prompt, gen.n, gen.seed, gen.strength, gen.init_image, gen.user_ref) == (
        FULL.prompt,
        4,
        123,
        0.4,
        b"png",
        "user:web:local:alice",
    )
    back = JobRequest.from_generation(
        gen,
        init_sha=FULL.init_sha,
        init_ext=FULL.init_ext,
        display=FULL.display,
        payer_roles=("vip",),
        payer_admin=True,
    )
    assert back == FULL


def test_an_image_verb_request_round_trips_and_older_rows_read_without_it() -> None:
    from bot.providers.edit_types import Edit

    verb = JobRequest(prompt="a bay", remix=True, cost=3, edit=Edit("outpaint", 1.0, 8, 0, 16, 24))
    assert JobRequest.from_json(verb.to_json()) == verb
    assert verb.generation(init_image=b"x").edit == Edit("outpaint", 1.0, 8, 0, 16, 24)
    old = JobRequest.from_json('{"v": 1, "prompt": "a bay"}')
    assert (old.remix, old.edit, old.cost) == (False, None, 1)
