"""`classify` on the exceptions the real databases raise: a transaction that lost to a concurrent one (deadlock,
serialization failure) is tried again at once, a lock not granted in time or a database busy with another writer
is retried later; none of them is the item's fault, so none of them dead-letters it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.pipelines.failures import Failure, after_conflicts, classify
from leadhub.store.db import create_engine
from tests.pipelines.contention import begun, create_fought, deadlock, error_of, hit, postgresql_only


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await create_fought(engine)
    yield engine
    await engine.dispose()


async def test_a_deadlock_is_a_conflict_never_the_items_fault(engine: AsyncEngine) -> None:
    postgresql_only(engine)
    lost = await deadlock(engine)
    assert classify(lost) is Failure.CONFLICT
    assert after_conflicts(lost) is Failure.TRANSIENT


async def test_a_serialization_failure_is_a_conflict_never_the_items_fault(engine: AsyncEngine) -> None:
    """SERIALIZABLE transactions that each read what the other wrote: the second to commit fails (40001)."""
    postgresql_only(engine)
    async with AsyncExitStack() as stack:
        first = await begun(stack, engine, "SERIALIZABLE")
        second = await begun(stack, engine, "SERIALIZABLE")
        for conn in (first, second):
            await conn.execute(text("SELECT sum(hits) FROM fought"))
        await first.execute(text(hit(1)))
        await second.execute(text(hit(2)))
        await first.commit()
        lost = await error_of(second.commit)
    assert lost.orig.sqlstate == "40001", repr(lost)  # type: ignore[attr-defined]
    assert classify(lost) is Failure.CONFLICT
    assert after_conflicts(lost) is Failure.TRANSIENT


async def test_a_lock_timeout_is_transient(engine: AsyncEngine) -> None:
    """A row another transaction holds longer than `lock_timeout` (an administrator's setting): 55P03."""
    postgresql_only(engine)
    async with AsyncExitStack() as stack:
        holder, waiter = await begun(stack, engine), await begun(stack, engine)
        await holder.execute(text(hit(1)))
        await waiter.execute(text("SET LOCAL lock_timeout = '50ms'"))
        failure = await error_of(lambda: waiter.execute(text(hit(1))))
    assert failure.orig.sqlstate == "55P03", repr(failure)  # type: ignore[attr-defined]
    assert classify(failure) is Failure.TRANSIENT


async def test_a_statement_the_database_refuses_is_not_retried_for_ever(engine: AsyncEngine) -> None:
    """A NOT NULL violation is the data's fault: retried a few times, then dead-lettered."""
    async with engine.connect() as conn:
        failure = await error_of(lambda: conn.execute(text("INSERT INTO fought VALUES (3, NULL)")))
    assert classify(failure) is Failure.UNKNOWN


async def test_sqlite_busy_with_another_writer_is_transient(engine: AsyncEngine) -> None:
    """`database is locked` after the busy timeout: another process writes; retrying later succeeds."""
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's database-wide write lock")
    async with AsyncExitStack() as stack:
        holder = await stack.enter_async_context(engine.connect())
        waiter = await stack.enter_async_context(engine.connect())
        await holder.exec_driver_sql("BEGIN IMMEDIATE")
        await holder.execute(text(hit(1)))
        await waiter.exec_driver_sql("PRAGMA busy_timeout = 50")
        failure = await error_of(lambda: waiter.execute(text(hit(1))))
        await holder.rollback()
    assert "database is locked" in str(failure)
    assert classify(failure) is Failure.TRANSIENT
