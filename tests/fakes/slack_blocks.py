"""Slack's Block Kit and modal limits, as the Slack fake checks them (``slack_api.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.fakes import ContractViolation, require


def _text_obj(obj: Any, where: str, limit: int, kinds: tuple[str, ...] = ("plain_text",)) -> None:
    require(isinstance(obj, Mapping), f"{where}: a text object is required", name="invalid_blocks")
    require(
        obj.get("type") in kinds,
        f"{where}: text type must be one of {kinds}",
        name="invalid_blocks",
    )
    text = obj.get("text")
    require(
        isinstance(text, str) and 0 < len(text) <= limit,
        f"{where}: text must be 1..{limit} characters",
        name="invalid_blocks",
    )


def check_message_blocks(blocks: Any) -> None:
    """Slack's Block Kit limits for a message surface."""
    require(
        isinstance(blocks, list) and 0 < len(blocks) <= 50,
        "a message holds 1..50 blocks",
        name="invalid_blocks",
    )
    block_ids: set[str] = set()
    action_ids: set[str] = set()
    for i, block in enumerate(blocks):
        where = f"blocks[{i}]"
        require(isinstance(block, Mapping), f"{where}: not an object", name="invalid_blocks")
        bid = block.get("block_id")
        if bid is not None:
            require(
                isinstance(bid, str) and 0 < len(bid) <= 255 and bid not in block_ids,
                f"{where}: block_id must be unique and at most 255 characters",
                name="invalid_blocks",
            )
            block_ids.add(bid)
        kind = block.get("type")
        if kind == "section":
            _text_obj(block.get("text"), where, 3000, ("plain_text", "mrkdwn"))
        elif kind == "context":
            elements = block.get("elements")
            require(
                isinstance(elements, list) and 0 < len(elements) <= 10,
                f"{where}: a context holds 1..10 elements",
                name="invalid_blocks",
            )
            for el in elements:
                _text_obj(el, where, 3000, ("plain_text", "mrkdwn"))
        elif kind == "actions":
            elements = block.get("elements")
            require(
                isinstance(elements, list) and 0 < len(elements) <= 25,
                f"{where}: an actions block holds 1..25 elements",
                name="invalid_blocks",
            )
            for el in elements:
                require(
                    isinstance(el, Mapping) and el.get("type") == "button",
                    f"{where}: only buttons are expected here",
                    name="invalid_blocks",
                )
                _text_obj(el.get("text"), f"{where} button", 75)
                aid = el.get("action_id")
                require(
                    isinstance(aid, str) and 0 < len(aid) <= 255,
                    f"{where}: action_id must be 1..255 characters",
                    name="invalid_blocks",
                )
                require(
                    aid not in action_ids,
                    f"{where}: duplicate action_id {aid!r}",
                    name="invalid_blocks",
                )
                action_ids.add(aid)
                value = el.get("value")
                require(
                    value is None or (isinstance(value, str) and len(value) <= 2000),
                    f"{where}: value must be at most 2000 characters",
                    name="invalid_blocks",
                )
                require(
                    el.get("style") in (None, "primary", "danger"),
                    f"{where}: style must be primary or danger",
                    name="invalid_blocks",
                )
        elif kind == "image":
            require(
                isinstance(block.get("alt_text"), str),
                f"{where}: alt_text is required",
                name="invalid_blocks",
            )
        else:
            require(
                kind in ("divider", "header"),
                f"{where}: unexpected block type {kind!r}",
                name="invalid_blocks",
            )


def check_modal(view: Any) -> None:
    require(
        isinstance(view, Mapping) and view.get("type") == "modal",
        "view.type must be modal",
        name="invalid_arguments",
    )
    _text_obj(view.get("title"), "view.title", 24)
    for key in ("submit", "close"):
        if view.get(key) is not None:
            _text_obj(view.get(key), f"view.{key}", 24)
    meta = view.get("private_metadata", "")
    require(
        isinstance(meta, str) and len(meta) <= 3000,
        "private_metadata must be at most 3000 characters",
        name="invalid_arguments",
    )
    cid = view.get("callback_id", "")
    require(
        isinstance(cid, str) and len(cid) <= 255, "callback_id too long", name="invalid_arguments"
    )
    blocks = view.get("blocks")
    require(
        isinstance(blocks, list) and 0 < len(blocks) <= 100,
        "a modal holds 1..100 blocks",
        name="invalid_arguments",
    )
    has_input = False
    for i, block in enumerate(blocks):
        where = f"view.blocks[{i}]"
        if not isinstance(block, Mapping) or block.get("type") != "input":
            continue
        has_input = True
        _text_obj(block.get("label"), f"{where}.label", 2000)
        el = block.get("element")
        require(isinstance(el, Mapping), f"{where}: element is required", name="invalid_arguments")
        aid = el.get("action_id")
        require(
            isinstance(aid, str) and 0 < len(aid) <= 255,
            f"{where}: action_id 1..255",
            name="invalid_arguments",
        )
        kind = el.get("type")
        if kind == "plain_text_input":
            # docs.slack.dev plain-text input element: max_length 1..3000, min_length 0..3000;
            # an initial_value longer than max_length makes Slack refuse the view.
            init = el.get("initial_value")
            max_len = el.get("max_length", 3000)
            min_len = el.get("min_length", 0)
            require(
                isinstance(max_len, int) and 1 <= max_len <= 3000,
                f"{where}: max_length must be 1..3000",
                name="invalid_arguments",
            )
            require(
                isinstance(min_len, int) and 0 <= min_len <= 3000,
                f"{where}: min_length must be 0..3000",
                name="invalid_arguments",
            )
            require(
                init is None or (isinstance(init, str) and len(init) <= min(3000, max_len)),
                f"{where}: initial_value longer than max_length",
                name="invalid_arguments",
            )
        elif kind == "number_input":
            require(
                isinstance(el.get("is_decimal_allowed"), bool),
                f"{where}: number_input needs is_decimal_allowed",
                name="invalid_arguments",
            )
            for key in ("initial_value", "min_value", "max_value"):
                val = el.get(key)
                require(
                    val is None or isinstance(val, str),
                    f"{where}: {key} must be a string",
                    name="invalid_arguments",
                )
            if el.get("initial_value") is not None:
                init_f = float(el["initial_value"])
                lo = float(el.get("min_value", "-inf"))
                hi = float(el.get("max_value", "inf"))
                require(
                    lo <= init_f <= hi,
                    f"{where}: initial_value outside min..max",
                    name="invalid_arguments",
                )
        elif kind == "file_input":
            # docs.slack.dev file input element: filetypes a list of extensions, max_files
            # 1..10 (default 10); only in an input block (this loop only sees those).
            types = el.get("filetypes")
            require(
                types is None
                or (isinstance(types, list) and all(isinstance(t, str) for t in types)),
                f"{where}: filetypes must be a list of extensions",
                name="invalid_arguments",
            )
            max_files = el.get("max_files", 10)
            require(
                isinstance(max_files, int) and 1 <= max_files <= 10,
                f"{where}: max_files must be 1..10",
                name="invalid_arguments",
            )
        elif kind == "conversations_select":
            # docs.slack.dev conversations select: response_url_enabled only in a modal's
            # input block; filter.include of im, mpim, private, public.
            for key in ("default_to_current_conversation", "response_url_enabled"):
                require(
                    isinstance(el.get(key, False), bool),
                    f"{where}: {key} must be a boolean",
                    name="invalid_arguments",
                )
            include = (el.get("filter") or {}).get("include", [])
            require(
                isinstance(include, list) and set(include) <= {"im", "mpim", "private", "public"},
                f"{where}: filter.include takes im, mpim, private, public",
                name="invalid_arguments",
            )
        else:
            raise ContractViolation(
                f"{where}: unexpected element {kind!r}", name="invalid_arguments"
            )
    block_ids = [b.get("block_id") for b in blocks if isinstance(b, Mapping) and b.get("block_id")]
    require(
        len(block_ids) == len(set(block_ids)),
        "block_id must be unique in a view",
        name="invalid_arguments",
    )
    # A view_submission only fires for a modal with inputs and a submit button.
    require(
        has_input and view.get("submit") is not None,
        "a form modal needs inputs and submit",
        name="invalid_arguments",
    )
