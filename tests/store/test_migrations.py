"""Migrations: the head revisions start-up checks against are alembic's, a database at them skips alembic, and a
migration answers only for the orphan rows it would add."""

from __future__ import annotations

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text
from structlog.testing import capture_logs

from leadhub.store.db import (
    KNOWN_REVISIONS,
    MIGRATION_HEADS,
    MigrationError,
    alembic_config,
    create_engine,
    recorded_revisions,
    upgrade,
)
from tests.conftest import PG_ADMIN_URL
from tests.fresh_interpreter import applied_revisions, migrate_and_report
from tests.store.orphans import OLD_REVISION, old_database_with_an_orphan


def test_heads_constant_is_alembics() -> None:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert frozenset(heads) == MIGRATION_HEADS, (
        f"store/migrations/versions has heads {sorted(heads)}: set MIGRATION_HEADS in store/db.py to them"
    )


def test_known_revisions_constant_is_alembics() -> None:
    revisions = {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    assert frozenset(revisions) == KNOWN_REVISIONS, (
        f"store/migrations/versions has {sorted(revisions)}: set KNOWN_REVISIONS in store/db.py to them"
    )


async def test_upgrade_from_an_older_revision_reaches_the_heads(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine, "0002")
        async with engine.connect() as conn:
            assert await conn.run_sync(recorded_revisions) == {"0002"}
        await upgrade(engine)
        await upgrade(engine)  # at the heads: nothing to do
        async with engine.connect() as conn:
            assert await conn.run_sync(recorded_revisions) == MIGRATION_HEADS
    finally:
        await engine.dispose()


async def test_a_database_at_the_heads_is_not_migrated_and_alembic_not_imported(database_url: str) -> None:
    assert await migrate_and_report(database_url) == "alembic imported"  # an empty database
    assert await migrate_and_report(database_url) == "alembic not imported"
    assert await applied_revisions(database_url) == MIGRATION_HEADS


@pytest.mark.skipif(PG_ADMIN_URL is not None, reason="SQLite's foreign keys can be off; PostgreSQL's cannot")
async def test_an_orphan_row_from_before_the_upgrade_is_warned_about_not_fatal(database_url: str) -> None:
    """Every upgrade failed on a row whose parent was gone before it, and `leadhub run` retried for ever."""
    await old_database_with_an_orphan(database_url)
    engine = create_engine(database_url)
    try:
        with capture_logs() as logged:
            await upgrade(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(recorded_revisions) == MIGRATION_HEADS
    finally:
        await engine.dispose()
    (warning,) = [entry for entry in logged if "foreign key points nowhere" in entry["event"]]
    assert (warning["log_level"], warning["table"], warning["parent"], warning["rows"]) == (
        "warning",
        "contact_identifier",
        "contact",
        1,
    )


@pytest.mark.skipif(PG_ADMIN_URL is not None, reason="SQLite's foreign keys can be off; PostgreSQL's cannot")
async def test_a_migration_that_would_add_an_orphan_row_fails_and_changes_nothing(database_url: str) -> None:
    await old_database_with_an_orphan(database_url, upgrade_adds_an_orphan=True)
    engine = create_engine(database_url)
    try:
        with pytest.raises(MigrationError, match=r"foreign key points nowhere: 1 in contact_identifier \(to contact\)"):
            await upgrade(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(recorded_revisions) == {OLD_REVISION}
            assert (await conn.execute(text("SELECT count(*) FROM contact"))).scalar_one() == 1
    finally:
        await engine.dispose()
