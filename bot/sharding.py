"""Discord gateway shards from ``[discord] shards`` and ``shard_ids`` (no discord import here).

Discord splits a bot's guilds over gateway connections ("shards"): a guild's events go to
shard ``(guild_id >> 22) % shard_count``, direct messages to shard 0, and a bot in 2,500 or
more guilds must shard. ``shards`` unset keeps one unsharded connection; ``"auto"`` asks
Discord for its recommended count (``GET /gateway/bot``) and runs them all in this process;
a whole number fixes the total over all processes, and ``shard_ids`` picks the ones this
process runs (e.g. ``[0, 1]`` and ``[2, 3]`` of 4 for two processes).
"""

from __future__ import annotations

from dataclasses import dataclass


class BadShards(ValueError):
    """A shard setting that cannot work: ``key`` is the setting, ``what`` says why."""

    def __init__(self, key: str, what: str) -> None:
        super().__init__(f"{key} {what}")
        self.key = key
        self.what = what


@dataclass(frozen=True)
class ShardPlan:
    count: int | None  # None: as many as Discord recommends
    ids: tuple[int, ...] | None  # None: every shard, in this process

    def describe(self) -> str:
        """In words, for ``doctor`` and the ready line: ``shards 0, 1 of 4``."""
        if self.count is None:
            return "shards: Discord's recommended count"
        if self.ids is None:
            return f"shards: all {self.count}"
        return f"shards {', '.join(str(i) for i in self.ids)} of {self.count}"


def shard_plan(shards: int | str | None, shard_ids: tuple[int, ...]) -> ShardPlan | None:
    """The plan for ``[discord] shards`` and ``shard_ids``; None where sharding is off.

    Raises :class:`BadShards` naming the setting (checked when settings are loaded)."""
    count: int | None
    if shards is None or (isinstance(shards, str) and not shards.strip()):
        if shard_ids:
            raise BadShards(
                "discord.shard_ids",
                "needs discord.shards set to the total number of shards (e.g. shards = 4)",
            )
        return None
    if isinstance(shards, int):
        count = shards
    elif shards.strip().lower() == "auto":
        if shard_ids:
            raise BadShards(
                "discord.shard_ids",
                'needs discord.shards set to the total number of shards, not "auto": every '
                "process must agree on the count (e.g. shards = 4)",
            )
        return ShardPlan(count=None, ids=None)
    elif shards.strip().isdigit():
        count = int(shards.strip())
    else:
        raise BadShards("discord.shards", f'must be "auto" or a whole number (got {shards!r})')
    if count < 1:
        raise BadShards("discord.shards", f'must be "auto" or at least 1 (got {count})')
    if not shard_ids:
        return ShardPlan(count=count, ids=None)
    bad = [i for i in shard_ids if not 0 <= i < count]
    if bad:
        raise BadShards(
            "discord.shard_ids",
            f"must be shard numbers 0..{count - 1} (discord.shards = {count}); "
            f"got {', '.join(str(i) for i in bad)}",
        )
    if len(set(shard_ids)) != len(shard_ids):
        raise BadShards("discord.shard_ids", "lists a shard twice")
    return ShardPlan(count=count, ids=tuple(shard_ids))
