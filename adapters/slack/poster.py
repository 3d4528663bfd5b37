"""Posting to Slack: the core's :class:`~bot.types.ChannelPoster` over the Web API.

A result is an ordinary channel message (a ``response_url`` dies after 30 min); its images are
uploaded once with ``files_upload_v2`` and a retry resumes from the steps recorded in the
outbox row. slack_sdk's failures become the core's :class:`~bot.errors.DeliveryError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.render import PostedFile, fallback_text, reply_blocks
from bot.errors import DeliveryError
from bot.types import ImageFile, PostSteps, Reply, Target

log = logging.getLogger(__name__)


def slack_error(exc: SlackApiError) -> str:
    """The API's error code only: never the request, which may hold user text."""
    try:
        return str(exc.response.get("error") or "unknown")
    except Exception:
        return "unknown"


# ------------------------------------------------------------------------------ posting
class SlackPoster:
    """The core's :class:`~bot.types.ChannelPoster` for Slack: ordinary channel messages,
    so a result lands however long the job waited (a ``response_url`` dies after 30 min)."""

    # Each job's status message is the root of a thread holding its result, its buttons and
    # every refine, vary and reroll started from it; the core keeps the root one line.
    threads = True

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client

    async def post(
        self, target: Target, reply: Reply, steps: PostSteps | None = None
    ) -> str | None:
        if reply.ephemeral and target.user_id:
            with _delivery_errors("chat.postEphemeral"):
                await self._client.chat_postEphemeral(
                    channel=target.channel_id,
                    user=target.user_id,
                    thread_ts=_thread(target),
                    text=fallback_text(reply),
                    blocks=reply_blocks(reply),
                )
            return None  # an ephemeral message cannot be updated with chat.update
        files = await self._files(target, reply, steps)
        ids = ",".join(f.file_id for f in files)
        if steps is not None:
            found = await self._already_posted(target, steps)
            if found is not None:
                return _ref(found, ids)
            await steps.record("posting", f"{time.time() - 5:.6f}")
        with _delivery_errors("chat.postMessage"):
            resp = await self._client.chat_postMessage(
                channel=target.channel_id,
                thread_ts=_thread(target),
                text=fallback_text(reply),
                blocks=reply_blocks(reply, files),
                unfurl_links=False,
                unfurl_media=False,
                metadata=(
                    {"event_type": METADATA_EVENT, "event_payload": {"key": steps.key}}
                    if steps is not None
                    else None
                ),
            )
        ts = resp.get("ts")
        return _ref(str(ts), ids) if ts else None

    async def update(self, target: Target, ref: str, reply: Reply) -> None:
        with _delivery_errors("chat.update"):
            await self._client.chat_update(
                channel=target.channel_id,
                ts=_ts(ref),
                text=fallback_text(reply),
                blocks=reply_blocks(reply),
            )

    async def delete(self, target: Target, ref: str) -> None:
        """The message, then the bot's own uploads shown in it (``files.delete``)."""
        ts, _, ids = ref.partition("|")
        if ts:
            with _delivery_errors("chat.delete", gone=("message_not_found",)):
                await self._client.chat_delete(channel=target.channel_id, ts=ts)
        for file_id in filter(None, ids.split(",")):
            with _delivery_errors("files.delete", gone=("file_not_found", "file_deleted")):
                await self._client.files_delete(file=file_id)

    async def _already_posted(self, target: Target, steps: PostSteps) -> str | None:
        """A previous attempt sent chat.postMessage and died before hearing the answer: find
        that message by its metadata instead of posting a second one."""
        since = steps.get("posting")
        if since is None:
            return None
        try:
            if thread := _thread(target):
                resp = await self._client.conversations_replies(
                    channel=target.channel_id,
                    ts=thread,
                    oldest=since,
                    include_all_metadata=True,
                    limit=100,
                )
            else:
                resp = await self._client.conversations_history(
                    channel=target.channel_id, oldest=since, include_all_metadata=True, limit=100
                )
        except SlackApiError as exc:  # e.g. missing_scope: posting again is all we can do
            log.warning("could not look for an earlier post (%s)", slack_error(exc))
            return None
        for message in resp.get("messages") or []:
            meta = message.get("metadata") if isinstance(message, Mapping) else None
            if (
                isinstance(meta, Mapping)
                and meta.get("event_type") == METADATA_EVENT
                and (meta.get("event_payload") or {}).get("key") == steps.key
            ):
                return str(message.get("ts"))
        return None

    async def _files(
        self, target: Target, reply: Reply, steps: PostSteps | None
    ) -> tuple[PostedFile, ...]:
        """Upload the reply's images once: a retry reuses the files already uploaded."""
        if steps is not None and steps.get("files"):
            return tuple(PostedFile(*f) for f in json.loads(steps.get("files") or "[]"))
        files = await self._upload(target, reply.images, reply)
        if steps is not None and files:
            await steps.record(
                "files", json.dumps([[f.file_id, f.title, f.permalink] for f in files])
            )
            await steps.record("undo", _ref("", ",".join(f.file_id for f in files)))
        return files

    async def _upload(
        self, target: Target, images: tuple[ImageFile, ...], reply: Reply
    ) -> tuple[PostedFile, ...]:
        if not images:
            return ()
        uploads: list[dict[str, Any]] = []
        alt = (reply.meta.get("prompt") or reply.text)[:1000]
        for img in images:
            # The SDK would read a path synchronously on the event loop; read it in a thread.
            data = await asyncio.to_thread(img.path.read_bytes)
            uploads.append(
                {"file": data, "filename": img.filename, "title": img.filename, "alt_txt": alt}
            )
        with _delivery_errors("files_upload_v2"):
            resp = await self._client.files_upload_v2(
                file_uploads=uploads,
                channel=target.channel_id,
                thread_ts=_thread(target),
            )
        out = []
        for f in resp.get("files") or []:
            if isinstance(f, Mapping):
                out.append(
                    # Slack answers with id and title only (no permalink).
                    PostedFile(str(f.get("id", "")), str(f.get("title") or ""))
                )
        return tuple(out)


METADATA_EVENT = "imagine_bot_post"
# Slack errors that retrying cannot cure.
_PERMANENT = frozenset(
    {
        "channel_not_found",
        "is_archived",
        "not_in_channel",
        "account_inactive",
        "invalid_auth",
        "token_revoked",
        "not_authed",
        "missing_scope",
        "restricted_action",
        "msg_too_long",
        "message_not_found",
        "cant_update_message",
        "cant_delete_message",
        "cant_delete_file",
        "file_not_found",
        "file_deleted",
        "channel_is_archived",
        "ekm_access_denied",
    }
)


def _ref(ts: str, file_ids: str) -> str:
    """The poster's reference: the message's ts, and after a bar the files it shows."""
    return f"{ts}|{file_ids}" if file_ids else ts


def _ts(ref: str) -> str:
    return ref.partition("|")[0]


def _thread(target: Target) -> str | None:
    """The thread a post goes to: the one it was asked in, else the one under the message it
    answers (a job's status message). Slack threads hang off a root, never a reply, and a
    job started inside a thread carries that root as its ``thread_id``."""
    if target.thread_id:
        return target.thread_id
    return _ts(target.reply_to) if target.reply_to else None


@contextlib.contextmanager
def _delivery_errors(method: str, *, gone: tuple[str, ...] = ()) -> Iterator[None]:
    """slack_sdk's failures as the core's :class:`DeliveryError` (``gone``: an error that means
    the thing is already deleted, which is success for a delete)."""
    try:
        yield
    except SlackApiError as exc:
        code = slack_error(exc)
        if code in gone:
            return
        retry_after = None
        if code == "ratelimited":
            header = exc.response.headers.get("Retry-After") or exc.response.headers.get(
                "retry-after"
            )
            retry_after = float(header) if header else 1.0
        raise DeliveryError(
            f"{method}: {code}", permanent=code in _PERMANENT, retry_after=retry_after
        ) from exc
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise DeliveryError(f"{method}: {type(exc).__name__}") from exc
