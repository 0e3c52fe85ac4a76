"""`leadhub contacts unmerge | merge | keep-apart`: a person's decisions on contacts, as the /api/contacts routes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from leadhub.hub.config import HubConfig
from leadhub.store import contact_review, identity
from leadhub.store.db import engine_at_heads


async def unmerge_contact(config: HubConfig, ident: str) -> dict[str, Any]:
    """Raises identity.UnmergeError when there is nothing to take back. It does not migrate (nor create a database)."""
    async with engine_at_heads(config.settings.effective_database_url) as engine, engine.begin() as conn:
        return await identity.unmerge(conn, ident, datetime.now(UTC))


async def merge_contacts(config: HubConfig, merged_id: str, survivor_id: str) -> dict[str, Any]:
    """Raises contact_review.ReviewError when they cannot be merged."""
    policy = config.settings.identity_policy
    async with engine_at_heads(config.settings.effective_database_url) as engine, engine.begin() as conn:
        return await contact_review.merge_by_hand(conn, merged_id, survivor_id, datetime.now(UTC), policy)


async def keep_contacts_apart(config: HubConfig, contact_id: str) -> list[str]:
    """Raises contact_review.ReviewError when the contact is missing or not flagged."""
    async with engine_at_heads(config.settings.effective_database_url) as engine, engine.begin() as conn:
        return await contact_review.keep_apart(conn, contact_id, datetime.now(UTC))
