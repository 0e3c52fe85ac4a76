"""`leadhub run` migrates in a child process: the database reaches the heads, the daemon never imports alembic."""

from __future__ import annotations

import asyncio
import sys

import pytest
from sqlalchemy import text

from leadhub.hub.migrate_child import MigrationFailed, upgrade_in_child
from leadhub.store.db import MIGRATION_HEADS, _applied_revisions, create_engine, upgrade

# A fresh interpreter: the test process has imported alembic already (tests/store/test_migrations.py).
MIGRATE_AND_REPORT = """
import asyncio, sys
from leadhub.hub.migrate_child import upgrade_in_child
from leadhub.store.db import create_engine

async def main(url):
    engine = create_engine(url)
    try:
        await upgrade_in_child(engine)
    finally:
        await engine.dispose()

asyncio.run(main(sys.argv[1]))
print("alembic imported" if "alembic" in sys.modules else "alembic not imported")
"""


async def test_an_empty_database_is_migrated_by_a_child_and_alembic_stays_out(database_url: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        MIGRATE_AND_REPORT,
        database_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stderr.decode()
    assert stdout.decode().strip() == "alembic not imported"
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_applied_revisions) == MIGRATION_HEADS
    finally:
        await engine.dispose()


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
