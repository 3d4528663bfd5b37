"""ComfyUI provider against the fake ComfyUI server, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.providers.base import (
    CheckFailed,
    GenerationRequest,
    InvalidRequest,
    ModelUnavailable,
    NotSupported,
    ProviderUnavailable,
    fit_request,
    generate_split,
)
from bot.providers.comfyui import ComfyUIProvider, ComfyUISettings
from tests.fakes.comfyui import (
    IMG2IMG_WORKFLOW,
    PREVIEW_WORKFLOW,
    TXT2IMG_WORKFLOW,
    ComfyUIFake,
)


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture
def workflows(tmp_path: Path) -> dict[str, str]:
    t = tmp_path / "t2i.json"
    t.write_text(json.dumps(TXT2IMG_WORKFLOW))
    i = tmp_path / "i2i.json"
    i.write_text(json.dumps(IMG2IMG_WORKFLOW))
    return {"workflow": str(t), "img2img_workflow": str(i)}


@pytest.fixture
async def fake() -> AsyncIterator[ComfyUIFake]:
    async with ComfyUIFake(pending_polls=2) as f:
        yield f


@pytest.fixture
async def comfy(fake: ComfyUIFake, workflows: dict[str, str]) -> AsyncIterator[ComfyUIProvider]:
    p = ComfyUIProvider(
        ComfyUISettings.from_mapping(workflows, {"COMFYUI_BASE_URL": fake.base_url}), sleep=no_sleep
    )
    yield p
    await p.aclose()


def test_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"providers\.comfyui\.workflow"):
        ComfyUISettings.from_mapping({}, {})
    bad = tmp_path / "ui.json"
    bad.write_text(json.dumps({"nodes": [], "links": []}))
    with pytest.raises(ConfigError, match="API-format"):
        ComfyUISettings.from_mapping({"workflow": str(bad)}, {})
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"1": {"class_type": "X", "inputs": {"t": "{{promt}}"}}}))
    with pytest.raises(ConfigError, match="promt"):
        ComfyUISettings.from_mapping({"workflow": str(typo)}, {})


async def test_txt2img_fills_typed_placeholders_and_follows_the_websocket(
    fake: ComfyUIFake, comfy: ComfyUIProvider
) -> None:
    progress: list[float] = []
    req = GenerationRequest(
        prompt="a tower",
        negative_prompt="fog",
        n=2,
        width=768,
        height=512,
        seed=99,
        steps=12,
        cfg=5.5,
    )
    res = await comfy.generate(req, progress.append)
    assert fake.violations == []
    [call] = fake.requests_to("/prompt")
    wf = call.json["prompt"]
    assert wf["3"]["inputs"]["seed"] == 99 and wf["3"]["inputs"]["steps"] == 12
    assert wf["3"]["inputs"]["cfg"] == 5.5 and wf["3"]["inputs"]["denoise"] == 1.0
    assert wf["5"]["inputs"] == {"width": 768, "height": 512, "batch_size": 2}
    assert wf["6"]["inputs"]["text"] == "a tower" and wf["7"]["inputs"]["text"] == "fog"
    # Progress came from the socket the prompt was queued for, not from polling.
    assert fake.ws_clients == [call.json["client_id"]]
    assert len(fake.requests_to("/history/")) == 1
    assert any(0.0 < p < 1.0 for p in progress) and progress == sorted(progress)
    assert len(fake.requests_to("/view")) == 2
    assert [i.seed for i in res.images] == [99, 100]
    assert all(i.data.startswith(b"\x89PNG") for i in res.images)


async def test_every_call_has_its_own_socket(fake: ComfyUIFake, comfy: ComfyUIProvider) -> None:
    await asyncio.gather(*(comfy.generate(GenerationRequest(prompt="x", seed=i)) for i in range(3)))
    ids = [r.json["client_id"] for r in fake.requests_to("/prompt")]
    assert len(set(ids)) == 3 and sorted(fake.ws_clients) == sorted(ids)


async def test_without_a_websocket_it_polls_history(workflows: dict[str, str]) -> None:
    async with ComfyUIFake(pending_polls=2, websocket=False) as fake:
        p = ComfyUIProvider(
            ComfyUISettings.from_mapping(workflows, {"COMFYUI_BASE_URL": fake.base_url}),
            sleep=no_sleep,
        )
        progress: list[float] = []
        res = await p.generate(GenerationRequest(prompt="x", seed=1), progress.append)
        await p.aclose()
    assert len(res.images) == 1 and len(fake.requests_to("/history/")) == 3 and progress


async def test_the_socket_can_be_turned_off(fake: ComfyUIFake, workflows: dict[str, str]) -> None:
    p = ComfyUIProvider(
        ComfyUISettings.from_mapping(
            {**workflows, "websocket": False}, {"COMFYUI_BASE_URL": fake.base_url}
        ),
        sleep=no_sleep,
    )
    await p.generate(GenerationRequest(prompt="x", seed=1))
    await p.aclose()
    assert fake.ws_clients == [] and len(fake.requests_to("/history/")) == 3


async def test_a_dropped_socket_falls_back_to_polling(
    fake: ComfyUIFake, comfy: ComfyUIProvider
) -> None:
    fake.run_gate.clear()

    async def drop() -> None:
        await fake.socket_opened.wait()
        await asyncio.sleep(0.05)
        for ws in list(fake.sockets.values()):
            await ws.close()
        fake.run_gate.set()

    dropper = asyncio.create_task(drop())
    res = await comfy.generate(GenerationRequest(prompt="x", seed=5))
    await dropper
    assert len(res.images) == 1 and len(fake.requests_to("/history/")) >= 1


async def test_preview_image_outputs_of_type_temp_are_kept(
    fake: ComfyUIFake, tmp_path: Path
) -> None:
    wf = tmp_path / "preview.json"
    wf.write_text(json.dumps(PREVIEW_WORKFLOW))
    p = ComfyUIProvider(
        ComfyUISettings.from_mapping({"workflow": str(wf)}, {"COMFYUI_BASE_URL": fake.base_url}),
        sleep=no_sleep,
    )
    res = await p.generate(GenerationRequest(prompt="x", n=1, seed=2))
    await p.aclose()
    assert len(res.images) == 1 and res.images[0].data.startswith(b"\x89PNG")
    [view] = fake.requests_to("/view")
    assert view.query["type"] == "temp" and fake.violations == []


async def test_a_missing_checkpoint_names_the_node_and_alerts(
    fake: ComfyUIFake, tmp_path: Path
) -> None:
    wf = tmp_path / "wf.json"
    broken = json.loads(json.dumps(TXT2IMG_WORKFLOW))
    broken["4"]["inputs"]["ckpt_name"] = "sdxl_turbo.safetensors"
    wf.write_text(json.dumps(broken))
    p = ComfyUIProvider(
        ComfyUISettings.from_mapping({"workflow": str(wf)}, {"COMFYUI_BASE_URL": fake.base_url}),
        sleep=no_sleep,
    )
    with pytest.raises(ModelUnavailable) as info:
        await p.generate(GenerationRequest(prompt="x"))
    await p.aclose()
    err = info.value
    assert err.global_failure and err.model == "sdxl_turbo.safetensors"
    assert "providers.comfyui.workflow" in err.user_message
    assert "node 4 (CheckpointLoaderSimple)" in err.user_message
    assert "ckpt_name" in err.user_message


async def test_img2img_uploads_then_references(fake: ComfyUIFake, comfy: ComfyUIProvider) -> None:
    res = await comfy.generate(
        GenerationRequest(prompt="x", init_image=b"\x89PNGinit", strength=0.4, seed=3)
    )
    assert fake.violations == []
    (name,) = fake.uploads
    assert fake.uploads[name] == b"\x89PNGinit"
    wf = fake.requests_to("/prompt")[0].json["prompt"]
    assert wf["10"]["inputs"]["image"] == name and wf["3"]["inputs"]["denoise"] == 0.4
    assert res.images[0].seed == 3


async def test_split_n3_with_batch_limit(fake: ComfyUIFake, workflows: dict[str, str]) -> None:
    p = ComfyUIProvider(
        ComfyUISettings.from_mapping(
            {**workflows, "max_n_per_call": 2}, {"COMFYUI_BASE_URL": fake.base_url}
        ),
        sleep=no_sleep,
    )
    res = await generate_split(p, GenerationRequest(prompt="x", n=3, seed=7), parallel=2)
    await p.aclose()
    assert sorted(
        r.json["prompt"]["5"]["inputs"]["batch_size"] for r in fake.requests_to("/prompt")
    ) == [1, 2]
    assert sorted(i.seed or 0 for i in res.images) == [7, 8, 9]


async def test_a_validation_error_names_the_node_and_the_cause(
    fake: ComfyUIFake, comfy: ComfyUIProvider
) -> None:
    fake.fail_next(
        400,
        path="/prompt",
        json={
            "error": {
                "type": "prompt_outputs_failed_validation",
                "message": "failed",
                "details": "",
                "extra_info": {},
            },
            "node_errors": {
                "3": {
                    "errors": [
                        {
                            "type": "value_bigger_than_max",
                            "message": "Value 200 bigger than max of 150",
                            "details": "steps",
                        }
                    ],
                    "dependent_outputs": ["9"],
                    "class_type": "KSampler",
                }
            },
        },
    )
    with pytest.raises(InvalidRequest) as info:
        await comfy.generate(GenerationRequest(prompt="x"))
    assert "node 3 (KSampler): steps" in info.value.user_message
    assert not info.value.global_failure
    assert len(fake.requests_to("/prompt")) == 1


@pytest.mark.parametrize("websocket", [True, False])
async def test_an_execution_error_names_the_node(
    workflows: dict[str, str], websocket: bool
) -> None:
    async with ComfyUIFake(websocket=websocket) as fake:
        p = ComfyUIProvider(
            ComfyUISettings.from_mapping(workflows, {"COMFYUI_BASE_URL": fake.base_url}),
            sleep=no_sleep,
        )
        fake.fail_execution = "CUDA out of memory"
        with pytest.raises(ProviderUnavailable, match="CUDA") as info:
            await p.generate(GenerationRequest(prompt="x"))
        await p.aclose()
    assert "node 3 (KSampler)" in info.value.user_message
    assert "CUDA" not in info.value.user_message  # the exception text is for the log


async def test_history_500_is_retried(fake: ComfyUIFake, comfy: ComfyUIProvider) -> None:
    fake.fail_next(500, path="/history/", body=b"Internal Server Error")
    res = await comfy.generate(GenerationRequest(prompt="x", seed=1))
    assert len(res.images) == 1 and len(fake.requests_to("/prompt")) == 1


@pytest.mark.parametrize("websocket", [True, False])
async def test_never_finishing_job_hits_deadline(
    workflows: dict[str, str], websocket: bool
) -> None:
    async with ComfyUIFake(pending_polls=10**9, websocket=websocket) as fake:
        fake.run_gate.clear()
        p = ComfyUIProvider(
            ComfyUISettings.from_mapping(
                {**workflows, "deadline_s": 0.3, "poll_interval_s": 0.01},
                {"COMFYUI_BASE_URL": fake.base_url},
            )
        )
        with pytest.raises(ProviderUnavailable, match="in time"):
            await p.generate(GenerationRequest(prompt="x"))
        await p.aclose()
    assert len(fake.requests_to("/prompt")) == 1


async def test_txt2img_only_without_img2img_workflow(
    fake: ComfyUIFake, workflows: dict[str, str]
) -> None:
    p = ComfyUIProvider(
        ComfyUISettings.from_mapping(
            {"workflow": workflows["workflow"]}, {"COMFYUI_BASE_URL": fake.base_url}
        )
    )
    with pytest.raises(NotSupported):
        fit_request(GenerationRequest(prompt="x", init_image=b"i"), p.capabilities, p.label)
    facts = await p.check()
    assert facts["version"] == "0.3.40"
    await p.aclose()


async def test_check_failures_name_the_url_and_cause(workflows: dict[str, str]) -> None:
    async with ComfyUIFake() as fake:
        url = fake.base_url
    p = ComfyUIProvider(
        ComfyUISettings.from_mapping({**workflows, "connect_retries": 0}, {"COMFYUI_BASE_URL": url})
    )
    with pytest.raises(CheckFailed) as info:
        await p.check()
    await p.aclose()
    assert info.value.url == f"{url}/system_stats" and "ConnectError" in info.value.cause
