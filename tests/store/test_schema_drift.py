"""The migrations build exactly the schema the models describe, on SQLite and on PostgreSQL.

A model changed without a migration (or the reverse) works in tests that create tables from the models and
fails on a real, migrated database. Alembic's comparison does not look at a partial index's WHERE clause,
so those are compared here from the reflected indexes.
"""

from __future__ import annotations

import re
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.store.models import Base


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": True})
    return compare_metadata(context, Base.metadata)


def _where(clause: Any) -> str | None:
    """A partial index's condition as comparable text: `(merged_into IS NOT NULL)` -> `merged_into is not null`."""
    if clause is None:
        return None
    return re.sub(r"\s+", " ", str(clause)).strip("() ").lower()


def _partial_indexes_in_database(connection: Connection) -> dict[str, str | None]:
    inspector = inspect(connection)
    found = {}
    for table in Base.metadata.tables:
        for index in inspector.get_indexes(table):
            options = index.get("dialect_options", {})
            found[index["name"]] = _where(options.get("sqlite_where", options.get("postgresql_where")))
    return found


def _partial_indexes_in_models(dialect: str) -> dict[str, str | None]:
    return {
        index.name: _where(index.dialect_options[dialect].get("where"))
        for table in Base.metadata.tables.values()
        for index in table.indexes
    }


async def test_migrated_schema_matches_the_models(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        assert await conn.run_sync(_differences) == []
        in_database = await conn.run_sync(_partial_indexes_in_database)
    in_models = _partial_indexes_in_models(engine.dialect.name)
    assert {name: in_database.get(name) for name in in_models} == in_models
    assert any(in_models.values()), "the models have partial indexes: the comparison must have seen them"
