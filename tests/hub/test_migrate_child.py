"""`leadhub run` migrates in a child process: the database reaches the heads, the daemon never imports alembic."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from leadhub.hub.migrate_child import upgrade_in_child
from leadhub.store.db import MIGRATION_HEADS, SchemaNewerThanCode, create_engine, upgrade
from tests.fresh_interpreter import applied_revisions, migrate_and_report
from tests.helpers import wait_for


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


async def test_a_database_from_a_newer_release_is_refused_without_a_child(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A revision this release lacks is no reason to retry: the daemon stops with exit status 3 (hub/cli.py)."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
            await conn.execute(text("INSERT INTO alembic_version VALUES ('9999')"))
        monkeypatch.setattr(sys, "executable", "/nonexistent/python")  # a child would fail to start
        with pytest.raises(SchemaNewerThanCode, match="9999") as raised:
            await upgrade_in_child(engine)
    finally:
        await engine.dispose()
    assert raised.value.revisions == {"9999"}


async def test_a_stop_during_the_migration_kills_the_child(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon cancels the migration when it is told to stop: the child must not outlive it."""
    pid_file = tmp_path / "child.pid"
    slow_python = tmp_path / "slow-python"
    slow_python.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 60\n")  # stands in for a long migration
    slow_python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(slow_python))
    engine = create_engine(database_url)
    try:
        migrating = asyncio.create_task(upgrade_in_child(engine))

        async def child_started() -> bool:
            return pid_file.exists() and pid_file.read_text().strip().isdigit()

        await wait_for(child_started, timeout=10, what="the migration child to start")
        pid = int(pid_file.read_text())
        migrating.cancel()
        with pytest.raises(asyncio.CancelledError):
            await migrating
        with pytest.raises(ProcessLookupError):  # killed and reaped: no such process any more
            os.kill(pid, 0)
    finally:
        await engine.dispose()
