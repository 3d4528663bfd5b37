"""The server icon: the Discord side of the core's ``set_workspace_icon`` capability.

Modify Guild (``PATCH /guilds/{id}``) takes the icon as a data URI ("base64 1024x1024
png/jpeg/gif image") and needs the Manage Server permission, which the interaction tells us
the bot has or not (``app_permissions``), so the bot asks for it before trying.
"""

from __future__ import annotations

from typing import Any

import discord

from bot.errors import UserError

ASK = (
    "I need the Manage Server permission to change the server icon. A server admin can give "
    "my role Manage Server (Server Settings → Roles), then press the button again."
)
MAX_REASON = 512  # the X-Audit-Log-Reason header's limit


async def set_guild_icon(interaction: discord.Interaction[Any], png: bytes, reason: str) -> None:
    guild_id = interaction.guild_id
    if guild_id is None:
        raise UserError("A server icon can only be set from inside a server.")
    perms = interaction.app_permissions
    if not (perms.manage_guild or perms.administrator):
        raise UserError(ASK)
    try:
        await interaction.client.http.edit_guild(
            guild_id, reason=reason[:MAX_REASON], icon=discord.utils._bytes_to_base64_data(png)
        )
    except discord.Forbidden:  # the permission was taken away meanwhile
        raise UserError(ASK) from None
    except discord.HTTPException as exc:
        raise UserError(f"Discord refused the icon ({exc.status}): {exc.text[:120]}") from None


__all__ = ["ASK", "set_guild_icon"]
