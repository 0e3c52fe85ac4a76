"""Migrations: the head revisions start-up checks against are alembic's, and a database at them skips alembic."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from leadhub.store.db import (
    KNOWN_REVISIONS,
    MIGRATION_HEADS,
    alembic_config,
    create_engine,
    recorded_revisions,
    upgrade,
)
from tests.fresh_interpreter import applied_revisions, migrate_and_report


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
