"""Slack rendering against Slack's documented limits (the fake's own checks)."""

from __future__ import annotations

import json

from adapters.slack.render import FormContext, PostedFile, modal_view, reply_blocks
from bot.types import Form, FormField, Reply
from tests.fakes.slack_blocks import check_message_blocks, check_modal


def test_a_long_prompt_fits_the_text_input_slack_allows() -> None:
    prompt = "a red fox " * 600  # 6000 characters: the grammar allows up to 10000
    form = Form("Refine", "refine:abc:1", (FormField("prompt", "Prompt", prompt),))
    view = modal_view(form, FormContext("refine:abc:1", "C1"))
    check_modal(view)  # max_length 1..3000 and initial_value within it, as Slack requires
    element = view["blocks"][0]["element"]
    assert element["max_length"] == 3000
    assert element["initial_value"] == prompt[:3000]


def test_uploaded_files_are_named_without_links_slack_never_gave() -> None:
    # files.completeUploadExternal answers with id and title only: no permalink to link to.
    blocks = reply_blocks(Reply("done"), (PostedFile("F1", "fox_1.png"),))
    check_message_blocks(blocks)
    text = json.dumps(blocks)
    assert "fox\\\\_1.png" in text or "fox_1.png" in text
    assert "<http" not in text and "|fox" not in text
