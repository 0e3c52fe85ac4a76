"""Contention errors from the real database, for the tests of how they are classified and retried: two
transactions that lock rows in opposite order, and the error PostgreSQL ends one of them with."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tests.helpers import wait_for


async def create_fought(engine: AsyncEngine) -> None:
    """Two rows to fight over, in a table of their own."""
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE fought (id INTEGER PRIMARY KEY, hits INTEGER NOT NULL)"))
        await conn.execute(text("INSERT INTO fought VALUES (1, 0), (2, 0)"))


def hit(row: int) -> str:
    return f"UPDATE fought SET hits = hits + 1 WHERE id = {row}"


def postgresql_only(engine: AsyncEngine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's row locks and SQLSTATEs; SQLite's write lock serializes writers instead")


async def begun(stack: AsyncExitStack, engine: AsyncEngine, isolation: str | None = None) -> AsyncConnection:
    conn = await stack.enter_async_context(engine.connect())
    if isolation:
        conn = await conn.execution_options(isolation_level=isolation)
    await conn.begin()
    return conn


async def error_of(attempt: Callable[[], Awaitable[object]]) -> Exception:
    try:
        await attempt()
    except Exception as exc:
        return exc
    pytest.fail("the database raised nothing")


async def until_waiting_for_a_lock(engine: AsyncEngine, task: asyncio.Task[object]) -> None:
    """Until a transaction of the test's database waits for a lock another one holds (PostgreSQL)."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )

    async def waiting() -> bool:
        if task.done():
            task.result()  # it ended without waiting: fail with its error
            pytest.fail("the transaction did not wait for the lock")
        async with engine.connect() as conn:
            return bool((await conn.execute(query)).scalar_one())

    await wait_for(waiting, timeout=10, what="a transaction waiting for a lock")


async def deadlock(engine: AsyncEngine) -> Exception:
    """Two transactions lock `fought`'s rows in opposite order; PostgreSQL ends one of them (SQLSTATE 40P01)."""
    async with AsyncExitStack() as stack:
        first, second = await begun(stack, engine), await begun(stack, engine)
        await first.execute(text(hit(1)))
        await second.execute(text(hit(2)))
        outcomes = await asyncio.wait_for(
            asyncio.gather(first.execute(text(hit(2))), second.execute(text(hit(1))), return_exceptions=True), 20
        )
    (error,) = [o for o in outcomes if isinstance(o, Exception)]
    assert error.orig.sqlstate == "40P01", repr(error)  # type: ignore[attr-defined]
    return error
