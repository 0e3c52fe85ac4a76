"""Every SQLite connection is set up the same way: WAL, NORMAL sync, foreign keys, busy timeout, a small page cache."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.store.db import SQLITE_BUSY_TIMEOUT_MS, SQLITE_CACHE_KIB


async def test_each_sqlite_connection_gets_the_pragmas(engine: AsyncEngine) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite pragmas")
    expected = {
        "journal_mode": "wal",
        "synchronous": 1,  # NORMAL: WAL commits without an fsync each; checkpoints sync
        "foreign_keys": 1,
        "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
        "cache_size": -SQLITE_CACHE_KIB,
    }
    async with engine.connect() as first, engine.connect() as second:  # two pooled connections, each set up
        for conn in (first, second):
            found = {name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar() for name in expected}
            assert found == expected
