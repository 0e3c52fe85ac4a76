"""Migrations: the head revisions start-up checks against are alembic's, and a database at them skips alembic."""

from __future__ import annotations

import asyncio
import sys

from alembic.script import ScriptDirectory

from leadhub.store.db import MIGRATION_HEADS, _applied_revisions, alembic_config, create_engine, upgrade

# Run in a fresh interpreter: the test process has imported alembic already.
UPGRADE_AND_REPORT = """
import asyncio, sys
from leadhub.store.db import create_engine, upgrade

async def main(url):
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()

asyncio.run(main(sys.argv[1]))
print("alembic imported" if "alembic" in sys.modules else "alembic not imported")
"""


def test_heads_constant_is_alembics() -> None:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert frozenset(heads) == MIGRATION_HEADS, (
        f"store/migrations/versions has heads {sorted(heads)}: set MIGRATION_HEADS in store/db.py to them"
    )


async def test_upgrade_from_an_older_revision_reaches_the_heads(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine, "0002")
        async with engine.connect() as conn:
            assert await conn.run_sync(_applied_revisions) == {"0002"}
        await upgrade(engine)
        await upgrade(engine)  # at the heads: nothing to do
        async with engine.connect() as conn:
            assert await conn.run_sync(_applied_revisions) == MIGRATION_HEADS
    finally:
        await engine.dispose()


async def _upgrade_in_fresh_interpreter(url: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        UPGRADE_AND_REPORT,
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode().strip()


async def test_a_database_at_the_heads_is_not_migrated_and_alembic_not_imported(database_url: str) -> None:
    assert await _upgrade_in_fresh_interpreter(database_url) == "alembic imported"  # an empty database
    assert await _upgrade_in_fresh_interpreter(database_url) == "alembic not imported"
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_applied_revisions) == MIGRATION_HEADS
    finally:
        await engine.dispose()
