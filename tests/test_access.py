"""Who is an admin: the platform's word, or the operator's list in bot.admins."""

from __future__ import annotations

from pathlib import Path

from bot.access import Access
from bot.store import Store
from bot.types import Actor
from tests.conftest import make_settings


async def test_admins_are_vouched_for_by_the_platform_or_listed_by_the_operator(
    tmp_path: Path,
) -> None:
    async with Store.open(tmp_path / "a.db") as store:
        access = Access(make_settings(tmp_path, {"bot": {"admins": ["slack:U42"]}}), store.channels)
        assert access.is_admin(Actor("discord", "g1", "7", is_admin=True))
        assert access.is_admin(Actor("slack", "T1", "U42"))  # in any workspace of it
        assert not access.is_admin(Actor("slack", "T1", "U43"))
        assert not access.is_admin(Actor("discord", "g1", "U42"))  # the id is per platform
