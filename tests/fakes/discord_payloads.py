"""Interaction payloads as Discord sends them (a slash command, a click, a modal submit), built
for the Discord fake's tests; a mixin of :class:`tests.fakes.discord_api.DiscordFake`."""

from __future__ import annotations

from typing import Any

from tests.fakes.discord_model import (
    APP_ID,
    CHANNEL_ID,
    GUILD_ID,
    MAX_FILE,
    FakeInteraction,
    Msg,
)


class InteractionPayloads:
    """Needs ``snowflake()``, ``interactions``, ``files``, ``base_url`` and ``message_json``."""

    interactions: dict[str, FakeInteraction]
    files: dict[str, bytes]
    threads: dict[str, dict[str, Any]]
    base_url: str

    def snowflake(self) -> str:
        raise NotImplementedError

    def message_json(self, m: Msg) -> dict[str, Any]:
        raise NotImplementedError

    def _interaction(
        self,
        itype: int,
        data: dict[str, Any],
        *,
        user_id: str,
        permissions: int,
        guild: bool,
        message: dict[str, Any] | None,
        channel_id: str = CHANNEL_ID,
    ) -> dict[str, Any]:
        iid = self.snowflake()
        token = f"itok-{iid}"
        self.interactions[iid] = FakeInteraction(iid, token, itype, channel_id)
        user = {
            "id": user_id,
            "username": f"user{user_id[-3:]}",
            "discriminator": "0",
            "avatar": None,
            "global_name": f"User {user_id[-3:]}",
        }
        payload: dict[str, Any] = {
            "id": iid,
            "application_id": APP_ID,
            "type": itype,
            "token": token,
            "version": 1,
            "data": data,
            "attachment_size_limit": MAX_FILE,
            "locale": "en-US",
            "channel_id": channel_id,
            "channel": (
                {**self.threads[channel_id], "permissions": str(permissions)}
                if channel_id in self.threads  # in a thread: the thread is the channel
                else {
                    "id": CHANNEL_ID,
                    "type": 0,
                    "name": "general",
                    "position": 0,
                    "guild_id": GUILD_ID,
                    "parent_id": None,
                    "nsfw": False,
                    "topic": None,
                    "permission_overwrites": [],
                    "rate_limit_per_user": 0,
                    "flags": 0,
                    "last_message_id": None,
                    "permissions": str(permissions),
                }
                if guild
                else {
                    "id": CHANNEL_ID,
                    "type": 1,
                    "flags": 0,
                    "last_message_id": None,
                    "recipients": [user],
                }
            ),
            "app_permissions": str(getattr(self, "bot_permissions", 2147483647)),
            "entitlements": [],
            "authorizing_integration_owners": {"0": GUILD_ID} if guild else {"1": user_id},
            "context": 0 if guild else 1,
        }
        if guild:
            payload["guild_id"] = GUILD_ID
            payload["guild"] = {"id": GUILD_ID, "locale": "en-US", "features": []}
            payload["member"] = {
                "user": user,
                "roles": [],
                "permissions": str(permissions),
                "joined_at": "2024-01-01T00:00:00+00:00",
                "deaf": False,
                "mute": False,
                "flags": 0,
                "nick": None,
            }
        else:
            payload["user"] = user
        if message is not None:
            payload["message"] = message
        return payload

    def slash(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user_id: str = "1400000000000000001",
        permissions: int = 0,
        guild: bool = True,
        attachment: tuple[str, bytes] | None = None,
    ) -> dict[str, Any]:
        opts = [{"name": k, "type": 3, "value": v} for k, v in (options or {}).items()]
        data: dict[str, Any] = {
            "id": "1500000000000000001",
            "name": name,
            "type": 1,
            "options": opts,
        }
        if attachment is not None:
            filename, blob = attachment
            aid = self.snowflake()
            self.files[filename] = blob
            opts.append({"name": "image", "type": 11, "value": aid})
            data["resolved"] = {
                "attachments": {
                    aid: {
                        "id": aid,
                        "filename": filename,
                        "size": len(blob),
                        "content_type": "image/png",
                        "url": f"{self.base_url}/attachments/{filename}",
                        "proxy_url": f"{self.base_url}/attachments/{filename}",
                    }
                }
            }
        return self._interaction(
            2, data, user_id=user_id, permissions=permissions, guild=guild, message=None
        )

    def message_command(
        self,
        name: str,
        content: str,
        *,
        attachment: tuple[str, bytes, str] | None = None,
        user_id: str = "1400000000000000001",
    ) -> dict[str, Any]:
        """A message context-menu command (type 3) on a message someone posted, with its
        attachment (filename, bytes, content type) served by the fake."""
        mid = self.snowflake()
        attachments = []
        if attachment is not None:
            filename, blob, kind = attachment
            self.files[filename] = blob
            url = f"{self.base_url}/attachments/{filename}"
            attachments.append(
                {
                    "id": self.snowflake(),
                    "filename": filename,
                    "size": len(blob),
                    "content_type": kind,
                    "url": url,
                    "proxy_url": url,
                }
            )
        author = {"id": "1400000000000000099", "username": "poster", "discriminator": "0"}
        message = {
            "id": mid,
            "channel_id": CHANNEL_ID,
            "type": 0,
            "content": content,
            "author": {**author, "avatar": None, "global_name": None},
            "attachments": attachments,
            "embeds": [],
            "mentions": [],
            "mention_roles": [],
            "pinned": False,
            "mention_everyone": False,
            "tts": False,
            "timestamp": "2026-01-01T00:00:00+00:00",
            "edited_timestamp": None,
            "flags": 0,
            "components": [],
        }
        data = {
            "id": "1500000000000000003",
            "name": name,
            "type": 3,
            "target_id": mid,
            "resolved": {"messages": {mid: message}},
        }
        return self._interaction(2, data, user_id=user_id, permissions=0, guild=True, message=None)

    def click(
        self,
        custom_id: str,
        message: Msg,
        *,
        user_id: str = "1400000000000000001",
        permissions: int = 0,
    ) -> dict[str, Any]:
        """A button press on ``message`` (whose components must hold the button), from the
        channel or thread the message is in."""
        return self._interaction(
            3,
            {"custom_id": custom_id, "component_type": 2},
            user_id=user_id,
            permissions=permissions,
            guild=True,
            message=self.message_json(message),
            channel_id=message.channel_id,
        )

    def submit(
        self,
        custom_id: str,
        values: dict[str, str],
        *,
        user_id: str = "1400000000000000001",
        channel_id: str = CHANNEL_ID,
    ) -> dict[str, Any]:
        comps = [
            {
                "type": 18,
                "id": i + 1,
                "component": {"type": 4, "id": i + 10, "custom_id": k, "value": v},
            }
            for i, (k, v) in enumerate(values.items())
        ]
        return self._interaction(
            5,
            {"custom_id": custom_id, "components": comps},
            user_id=user_id,
            permissions=0,
            guild=True,
            message=None,
            channel_id=channel_id,
        )

    # ----------------------------------------------------------------------- gateway
