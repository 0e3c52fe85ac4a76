"""`leadhub contacts unmerge`: take back a wrong merge from the shell, as `POST /api/contacts/{id}/unmerge` does."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from leadhub.hub.config import HubConfig
from leadhub.store import identity
from leadhub.store.db import create_engine, upgrade


async def unmerge_contact(config: HubConfig, ident: str) -> dict[str, Any]:
    """Raises identity.UnmergeError when there is nothing to take back."""
    engine = create_engine(config.settings.effective_database_url)
    try:
        await upgrade(engine)
        async with engine.begin() as conn:
            return await identity.unmerge(conn, ident, datetime.now(UTC))
    finally:
        await engine.dispose()
