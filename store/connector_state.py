"""Connector checkpoints (a poller's cursor, an IMAP folder's last UID) in `connector_state`, one JSON value per key."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.store.models import ConnectorState

state_t = ConnectorState.__table__


async def load_state(engine: AsyncEngine, connector: str, key: str) -> dict[str, Any] | None:
    """The value saved under (connector, key), or None before the first save."""
    async with engine.connect() as conn:
        query = select(state_t.c.value).where(state_t.c.connector == connector, state_t.c.key == key)
        return (await conn.execute(query)).scalar_one_or_none()


async def load_states(engine: AsyncEngine, connector: str) -> dict[str, dict[str, Any]]:
    """Every value saved under `connector`, by key."""
    async with engine.connect() as conn:
        query = select(state_t.c.key, state_t.c.value).where(state_t.c.connector == connector)
        return {key: value for key, value in await conn.execute(query)}


async def save_state(
    engine: AsyncEngine, connector: str, key: str, value: dict[str, Any], now: datetime | None = None
) -> None:
    """Insert or replace the value under (connector, key) in one statement (safe with several replicas)."""
    row = {"connector": connector, "key": key, "value": value, "updated_at": now or datetime.now(UTC)}
    async with engine.begin() as conn:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(state_t).values(**row)
        statement = statement.on_conflict_do_update(
            index_elements=[state_t.c.connector, state_t.c.key],
            set_={"value": statement.excluded.value, "updated_at": statement.excluded.updated_at},
        )
        await conn.execute(statement)
