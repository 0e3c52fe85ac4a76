"""A SQLite database at an older revision holding a row whose foreign key points nowhere, as an older release or
a delete made while foreign keys were off leaves one; optionally with a trigger that makes the upgrade add one."""

from __future__ import annotations

import sqlite3

from sqlalchemy.engine import make_url

from leadhub.store.db import create_engine, upgrade

OLD_REVISION = "0004"  # before 0005, which rebuilds `contact` and `lead` (batch mode)


async def old_database_with_an_orphan(url: str, *, upgrade_adds_an_orphan: bool = False) -> None:
    """`contact_identifier` holds one row for a contact that is gone; with `upgrade_adds_an_orphan`, the
    migration's update of alembic_version deletes the contact another identifier belongs to."""
    engine = create_engine(url)
    try:
        await upgrade(engine, OLD_REVISION)
    finally:
        await engine.dispose()
    now = "2026-01-01 00:00:00"
    with sqlite3.connect(make_url(url).database) as conn:  # the sqlite3 module leaves foreign keys off
        conn.execute("INSERT INTO contact (id, created_at, updated_at) VALUES ('kept', ?, ?)", (now, now))
        conn.executemany(
            "INSERT INTO contact_identifier (kind, value, contact_id, created_at) VALUES ('email', ?, ?, ?)",
            [("a@example.com", "kept", now), ("b@example.com", "deleted-long-ago", now)],
        )
        if upgrade_adds_an_orphan:
            conn.execute(
                "CREATE TRIGGER orphan_maker AFTER UPDATE ON alembic_version "
                "BEGIN DELETE FROM contact WHERE id = 'kept'; END"
            )
    conn.close()
