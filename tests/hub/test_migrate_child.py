"""`leadhub run` migrates in a child process: the database reaches the heads, the daemon never imports alembic."""

from __future__ import annotations

import sys

import pytest
from sqlalchemy import text

from leadhub.hub.migrate_child import MigrationFailed, upgrade_in_child
from leadhub.store.db import MIGRATION_HEADS, create_engine, upgrade
from tests.fresh_interpreter import applied_revisions, migrate_and_report


async def test_an_empty_database_is_migrated_by_a_child_and_alembic_stays_out(database_url: str) -> None:
    assert (
        await migrate_and_report(database_url, "leadhub.hub.migrate_child:upgrade_in_child") == "alembic not imported"
    )
    assert await applied_revisions(database_url) == MIGRATION_HEADS


async def test_a_database_at_the_heads_starts_no_child(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        monkeypatch.setattr(sys, "executable", "/nonexistent/python")  # a child would fail to start
        await upgrade_in_child(engine)
    finally:
        await engine.dispose()


async def test_a_database_from_a_newer_release_fails_with_alembics_reason(database_url: str) -> None:
    """The child's error reaches the daemon's log (it retries with back-off): here, a revision this release lacks."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
            await conn.execute(text("INSERT INTO alembic_version VALUES ('9999')"))
        with pytest.raises(MigrationFailed, match="9999") as raised:
            await upgrade_in_child(engine)
    finally:
        await engine.dispose()
    assert "exited with 1" in str(raised.value)
    assert "Traceback" not in str(raised.value)  # one line saying why, not a stack
