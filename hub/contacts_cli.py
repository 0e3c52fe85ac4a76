"""`leadhub contacts unmerge | merge | keep-apart`: a person's decisions on contacts, as the /api/contacts routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from leadhub.hub.config import HubConfig
from leadhub.store import contact_review, identity
from leadhub.store.db import create_engine, require_heads, upgrade

T = TypeVar("T")


async def _in_transaction(config: HubConfig, work: Callable[[AsyncConnection], Awaitable[T]], *, migrate: bool) -> T:
    """`work` in one transaction; `migrate`: bring the schema up first, else refuse a database short of it."""
    engine = create_engine(config.settings.effective_database_url, existing=not migrate)
    try:
        await (upgrade(engine) if migrate else require_heads(engine))
        async with engine.begin() as conn:
            return await work(conn)
    finally:
        await engine.dispose()


async def unmerge_contact(config: HubConfig, ident: str) -> dict[str, Any]:
    """Raises identity.UnmergeError when there is nothing to take back."""
    return await _in_transaction(config, lambda conn: identity.unmerge(conn, ident, datetime.now(UTC)), migrate=True)


async def merge_contacts(config: HubConfig, merged_id: str, survivor_id: str) -> dict[str, Any]:
    """Raises contact_review.ReviewError when they cannot be merged."""
    policy = config.settings.identity_policy
    return await _in_transaction(
        config,
        lambda conn: contact_review.merge_by_hand(conn, merged_id, survivor_id, datetime.now(UTC), policy),
        migrate=False,
    )


async def keep_contacts_apart(config: HubConfig, contact_id: str) -> list[str]:
    """Raises contact_review.ReviewError when the contact is missing or not flagged."""
    return await _in_transaction(
        config, lambda conn: contact_review.keep_apart(conn, contact_id, datetime.now(UTC)), migrate=False
    )
