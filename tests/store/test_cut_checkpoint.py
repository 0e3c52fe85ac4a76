"""A checkpoint save cut short by its connector's timeout leaves no lock behind.

The IMAP folder saves its checkpoint under the connector's `timeout`; when the database is busy the cut arrives
while the statement waits for the write lock (SQLite) or the row lock (PostgreSQL). Whatever the cut leaves,
the next writer (the pipeline) must get the lock as soon as the holder lets go, and the cut connection's pool
must go on working.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from leadhub.store.connector_state import load_state, save_state
from leadhub.store.db import create_engine, lock_for_writing

CUT_AFTER = 0.2  # the connector's timeout in this test
HOLD = 1.0  # how long the other writer keeps the lock


async def _hold_the_lock(conn: AsyncConnection) -> None:
    """Begin a transaction that holds what the checkpoint's upsert needs."""
    if conn.dialect.name == "sqlite":
        await lock_for_writing(conn)
    else:  # the same row, changed and not yet committed
        await conn.execute(
            text("UPDATE connector_state SET updated_at = now() WHERE connector = 'imap' AND key = 'folder:INBOX'")
        )


async def _hold_then_commit(engine: AsyncEngine, held: asyncio.Event) -> None:
    """The pipeline's part: a transaction that holds the lock for HOLD seconds, then commits on its own."""
    async with engine.connect() as holder:
        await _hold_the_lock(holder)
        held.set()
        await asyncio.sleep(HOLD)  # noqa: sleep-ok - the length of the other writer's transaction is the point
        await holder.commit()


async def test_a_cut_checkpoint_leaves_the_next_writer_free(engine: AsyncEngine, database_url: str) -> None:
    await save_state(engine, "imap", "folder:INBOX", {"last_uid": 1})
    pipeline = create_engine(database_url)
    try:
        for round_ in range(3):
            held = asyncio.Event()
            holding = asyncio.create_task(_hold_then_commit(pipeline, held))
            await held.wait()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(CUT_AFTER):
                    await save_state(engine, "imap", "folder:INBOX", {"last_uid": 100 + round_})
            await holding
            # a lock the cut save left behind: SQLite's busy timeout (5 s) ends this in "database is locked",
            # PostgreSQL's row lock in the deadline
            async with asyncio.timeout(8):
                await save_state(pipeline, "imap", "folder:INBOX", {"last_uid": 150 + round_})
            async with asyncio.timeout(5):  # the cut engine's pool still works
                await save_state(engine, "imap", "folder:INBOX", {"last_uid": 200 + round_})
            assert await load_state(engine, "imap", "folder:INBOX") == {"last_uid": 200 + round_}
    finally:
        await pipeline.dispose()
