"""`classify` on the exceptions the real databases raise: a transaction that lost to a concurrent one (deadlock,
serialization failure, a unique key another one inserted first) is tried again at once, a lock not granted in time
or a database busy with another writer is retried later; none of them is the item's fault."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.pipelines.failures import Failure, after_conflicts, classify
from leadhub.store.db import create_engine
from tests.pipelines.contention import (
    begun,
    create_fought,
    deadlock,
    error_of,
    hit,
    postgresql_only,
    until_waiting_for_a_lock,
)


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


async def test_a_unique_key_another_transaction_inserted_first_is_a_conflict(engine: AsyncEngine) -> None:
    """The race of two workers creating one new person: the second insert waits for the first transaction and
    fails once it commits (23505). Tried again at once it sees the winner's row; one that keeps failing is
    retried a few times and then dead-lettered, as a key the item itself names twice would fail every time."""
    postgresql_only(engine)
    async with AsyncExitStack() as stack:
        winner, loser = await begun(stack, engine), await begun(stack, engine)
        await winner.execute(text("INSERT INTO fought VALUES (3, 0)"))
        losing = asyncio.create_task(loser.execute(text("INSERT INTO fought VALUES (3, 0)")))
        await until_waiting_for_a_lock(engine, losing)
        await winner.commit()
        lost = await error_of(lambda: losing)
    assert isinstance(lost, IntegrityError) and lost.orig.sqlstate == "23505", repr(lost)  # type: ignore[attr-defined]
    assert classify(lost) is Failure.CONFLICT
    assert after_conflicts(lost) is Failure.UNKNOWN


async def test_a_unique_key_a_copy_met_is_a_conflict_too(engine: AsyncEngine) -> None:
    """A big batch goes in by COPY (store/bulk.py), whose errors come from asyncpg unwrapped."""
    postgresql_only(engine)
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        copy = raw.driver_connection.copy_records_to_table  # type: ignore[union-attr]
        lost = await error_of(lambda: copy("fought", records=[(1, 0)], columns=["id", "hits"]))
    assert type(lost).__module__.startswith("asyncpg") and lost.sqlstate == "23505", repr(lost)  # type: ignore[attr-defined]
    assert classify(lost) is Failure.CONFLICT


async def test_a_unique_key_on_sqlite_is_no_race(engine: AsyncEngine) -> None:
    """SQLite's writers take the database's write lock before they read (store/db.py, lock_for_writing), so a
    unique violation there is never a lost race: retried a few times, then dead-lettered."""
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's database-wide write lock")
    async with engine.connect() as conn:
        failure = await error_of(lambda: conn.execute(text("INSERT INTO fought VALUES (1, 0)")))
    assert isinstance(failure, IntegrityError)
    assert classify(failure) is Failure.UNKNOWN


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


@pytest.mark.parametrize(
    "statement", ["SELECT * FROM no_such_table", "SELECT no_such_column FROM fought"], ids=["table", "column"]
)
async def test_a_table_or_column_the_schema_lacks_is_transient(engine: AsyncEngine, statement: str) -> None:
    """The schema changed under the daemon (dropped table, a newer release's migration): no item is at fault, and
    dead-lettering would take every envelope out of the queue, where it waits for the store to be usable again."""
    async with engine.connect() as conn:
        failure = await error_of(lambda: conn.execute(text(statement)))
    assert classify(failure) is Failure.TRANSIENT, repr(failure)
