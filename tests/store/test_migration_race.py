"""Daemons started together on an empty database: one migrates, the others wait for it and find nothing to do."""

from __future__ import annotations

import asyncio

from leadhub.store.db import MIGRATION_HEADS
from tests.fresh_interpreter import applied_revisions, migrate_and_report

STARTED_TOGETHER = 3


async def test_processes_migrating_an_empty_database_at_once_all_succeed(database_url: str) -> None:
    """Without a lock both ran every CREATE TABLE; the later failed (`already exists`, or on PostgreSQL a
    duplicate key in pg_type) and `leadhub db upgrade` or the start-up migration reported an error."""
    reports = await asyncio.gather(*(migrate_and_report(database_url) for _ in range(STARTED_TOGETHER)))
    assert all(report in {"alembic imported", "alembic not imported"} for report in reports), reports
    assert await applied_revisions(database_url) == MIGRATION_HEADS
