"""Migrate in a fresh interpreter and report whether alembic got imported there (the test process has it already)."""

from __future__ import annotations

import asyncio
import sys

from leadhub.store.db import create_engine, recorded_revisions

MIGRATE_AND_REPORT = """
import asyncio, importlib, sys
from leadhub.store.db import create_engine

module, name, url = sys.argv[1:]
migrate = getattr(importlib.import_module(module), name)

async def main():
    engine = create_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()

asyncio.run(main())
print("alembic imported" if "alembic" in sys.modules else "alembic not imported")
"""


async def migrate_and_report(url: str, migrate: str = "leadhub.store.db:upgrade") -> str:
    """Run `migrate` (`module:function`, called with an engine on `url`) in a new interpreter; what it printed."""
    module, name = migrate.split(":")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        MIGRATE_AND_REPORT,
        module,
        name,
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode().strip().splitlines()[-1]  # the report; log lines may come before it


async def applied_revisions(url: str) -> frozenset[str]:
    """The revisions the database at `url` records as applied."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(recorded_revisions)
    finally:
        await engine.dispose()
