"""Reproducible jobs: Info's command line reads back to the same job; --from makes it again."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from bot import grammar
from bot.reproduce import command_line
from tests.conftest import Chat, open_chat


async def _job(chat: Chat, user: str, line: str, **kw: object) -> str:
    sent = await chat.say(user, f"/imagine {line}", **kw)  # type: ignore[arg-type]
    ids = [r.job_id for r in sent if r.job_id]
    assert ids, [r.text for r in sent]
    await chat.settle()
    return ids[-1]


async def _seeds(chat: Chat, job_id: str) -> list[int | None]:
    return [i.seed for i in await chat.app.runner.load_images(job_id)]


async def _sha(chat: Chat, job_id: str) -> list[bytes]:
    """The pixels of the job's images (the files differ: each names its job)."""
    out = []
    for img in await chat.app.runner.load_images(job_id):
        path = chat.app.image_path(img.sha256)
        assert path is not None
        with Image.open(path) as im:
            out.append(im.tobytes())
    return out


async def test_info_prints_a_line_that_parses_back_to_the_same_request(chat: Chat) -> None:
    line = (
        'a castle::2 fog::-0.5 {at dusk} --n 2 --ar 3:2 --style anime --steps 20 --no "text, logo"'
    )
    job_id = await _job(chat, "alice", line.replace("{at dusk}", "\\{at dusk\\}"))
    job = await chat.app.runner.load(job_id)
    assert job is not None
    [info] = await chat.click("alice", f"info:{job_id}")
    repro = next(x for x in info.text.splitlines() if x.startswith("Reproduce: "))
    assert repro == "Reproduce: " + command_line(job)
    assert f"--seed {job.seed}" in repro
    parsed = grammar.parse(repro.removeprefix("Reproduce: /imagine "))
    assert isinstance(parsed, grammar.ParsedImagine) and parsed.permutations == 1
    r = parsed.requests[0]
    assert (r.n, r.width, r.height, r.seed) == (2, job.request.width, job.request.height, job.seed)
    assert (r.style, r.steps, r.negative_prompt) == ("anime", 20, "text, logo")
    assert r.weighted_prompts == job.request.display.weighted
    # Typed again, the line makes the very same pictures.
    again = await _job(chat, "alice", repro.removeprefix("Reproduce: /imagine "))
    assert await _sha(chat, again) == await _sha(chat, job_id)


def test_a_prompt_with_flag_like_words_is_put_after_the_end_marker() -> None:
    from bot.job_request import Display, JobRequest
    from bot.storage.records import Job

    request = JobRequest(prompt="a --5 sign", seed=9, display=Display(prompt="a --fake sign"))
    job = Job(
        id="j" * 12, platform="test", tenant="t", channel_id="c", thread_id=None,
        owner_id="o", owner_name="O", kind="imagine", parent_job_id=None, parent_index=None,
        state="done", request=request, provider="offline", model=None, seed=9, n=1,
        attempts=1, error=None, notice="", status_ref=None, result_ref=None, grid_sha=None,
        grid_ext=None, deleted=False, created_at=0.0, finished_at=None,
    )  # fmt: skip
    line = command_line(job)
    assert line.endswith("-- a --fake sign")
    parsed = grammar.parse(line.removeprefix("/imagine "))
    assert isinstance(parsed, grammar.ParsedImagine)
    assert parsed.requests[0].prompt == "a --fake sign"


async def test_from_repeats_parameters_and_seeds_and_is_charged(chat: Chat) -> None:
    first = await _job(chat, "alice", "a red fox --n 3 --ar 2:3 --style origami")
    again = await _job(chat, "alice", f"--from {first}")
    a, b = await chat.app.runner.load(first), await chat.app.runner.load(again)
    assert a is not None and b is not None and a.id != b.id
    assert (b.n, b.seed, b.provider) == (a.n, a.seed, a.provider)
    assert (b.request.width, b.request.height, b.request.prompt) == (
        a.request.width,
        a.request.height,
        a.request.prompt,
    )
    assert await _seeds(chat, again) == await _seeds(chat, first)
    assert await _sha(chat, again) == await _sha(chat, first)
    assert f"Repeats job {first}" in (b.notice or "")
    assert (await chat.app.store.ledger.totals()).committed == 6


async def test_from_follows_the_info_rule_and_says_what_is_wrong(chat: Chat) -> None:
    first = await _job(chat, "alice", "a secret fox --n 1")
    # In its own channel anyone may continue (collaboration is on); elsewhere only Alice.
    [refused] = await chat.say("mallory", f"/imagine --from {first}", channel="random")
    assert refused.ephemeral and "Only Alice" in refused.text
    [unknown] = await chat.say("alice", "/imagine --from nosuchjob123")
    assert unknown.ephemeral and "I know no job" in unknown.text
    [mixed] = await chat.say("alice", f"/imagine a dog --from {first}")
    assert mixed.ephemeral and "takes nothing else" in mixed.text
    [elsewhere] = await chat.say("alice", f"/imagine --from {first}", tenant="other-team")
    assert "I know no job" in elsewhere.text
    rows = await chat.app.store.fetchall("SELECT id FROM jobs")
    assert len(rows) == 1  # nothing was made or charged by the refusals


async def test_info_by_command_and_from_survive_a_restart(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat:
        first = await _job(chat, "bob", "a lantern --n 2 --seed 5")
    async with open_chat(tmp_path) as chat:
        [info] = await chat.say("bob", f"/imagine info {first}")
        assert info.ephemeral and "--seed 5" in info.text and f"--from {first}" in info.text
        again = await _job(chat, "bob", f"--from {first}")
        row = await chat.app.store.fetchone("SELECT request_json FROM jobs WHERE id = ?", (again,))
        assert row is not None and json.loads(row["request_json"])["seed"] == 5
