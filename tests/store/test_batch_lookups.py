"""Whole-batch lookups: right answers at any batch size, and on PostgreSQL one array parameter, not an IN list.

A cached statement with an IN list of 500 parameters got a generic plan that compared every row of a young
`inquiry` table against all 500 (no statistics yet): a batch's key lookup grew to 800 ms at 40,000 rows, the
open-leads lookup to 130 ms at 30,000 (BENCHMARKS.md). `= ANY($1)` with one array keeps the index in use
whatever the table's statistics (`store/one_of.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.pipelines.intake import IntakePipeline
from leadhub.store.identity import known_identifiers
from leadhub.store.models import Inquiry, Lead, OutboxEvent
from leadhub.store.outbox import mark_published, outbox_event
from leadhub.store.young_tables import analyze
from tests.store.envelopes import SOURCES, form

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[tuple[str, Any]]]:
    """(SQL, parameters) of every single statement the engine's connections run meanwhile (not executemany)."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, executemany: bool) -> None:
        if not executemany:
            seen.append((" ".join(statement.split()), parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


def people(start: int, count: int) -> list[Any]:
    return [
        form(f"p{n}", T0 + timedelta(seconds=n), name=f"Person {n}", email=f"p{n}@example.com")
        for n in range(start, start + count)
    ]


async def test_a_redelivered_batch_larger_than_usual_stores_only_what_is_new(engine: AsyncEngine) -> None:
    pipeline = IntakePipeline(engine, SOURCES, default_region="RU")
    first = await pipeline.store([pipeline.prepare(e) for e in people(0, 700)])
    assert (first.stored, first.duplicates) == (700, 0)

    with statements(engine) as seen:
        again = await pipeline.store([pipeline.prepare(e) for e in people(300, 700)])

    assert (again.stored, again.duplicates) == (300, 400)
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(Inquiry)) == 1000
    lookup = [(sql, params) for sql, params in seen if "FROM inquiry WHERE inquiry" in sql]
    assert len(lookup) == 1, lookup
    if engine.dialect.name == "postgresql":
        sql, params = lookup[0]
        assert "= ANY" in sql and len(params) == 1, "one array parameter, whatever the batch size"


async def test_marking_published_marks_exactly_the_given_events(engine: AsyncEngine) -> None:
    rows = [outbox_event("lead.updated", f"s{n}", T0, n=n) for n in range(2500)]
    async with engine.begin() as conn:
        await conn.execute(insert(OutboxEvent.__table__), rows)
    chosen = [row["id"] for row in rows[::2]]

    with statements(engine) as seen:
        async with engine.begin() as conn:
            await mark_published(conn, chosen, T0 + timedelta(minutes=1))

    async with engine.connect() as conn:
        marked = set(await conn.scalars(select(OutboxEvent.id).where(OutboxEvent.published_at.is_not(None))))
    assert marked == set(chosen)
    if engine.dialect.name == "postgresql":
        [(sql, params)] = [(s, p) for s, p in seen if s.lstrip().startswith("UPDATE outbox_event")]
        assert "= ANY" in sql and len(params) == 2, "the time and one array of ids"


async def test_lookups_of_every_batch_length_share_a_few_statements(engine: AsyncEngine) -> None:
    """Each distinct SQL text is a statement the driver keeps prepared per connection (SQLite: up to 128, one with
    2,000 parameters ~260 KB): claims of 1 to 300 events must not make 300 of them, and still mark exactly theirs."""
    rows = [outbox_event("lead.updated", f"s{n}", T0, n=n) for n in range(300 * 301 // 2)]
    async with engine.begin() as conn:
        await conn.execute(insert(OutboxEvent.__table__), rows)
    ids = [row["id"] for row in rows]

    with statements(engine) as seen:
        async with engine.begin() as conn:
            start = 0
            for length in range(1, 301):
                await mark_published(conn, ids[start : start + length], T0 + timedelta(minutes=1))
                start += length

    updates = {sql for sql, _ in seen if sql.startswith("UPDATE outbox_event")}
    assert len(updates) <= 10, f"{len(updates)} distinct statements for 300 lengths"
    async with engine.connect() as conn:
        marked = await conn.scalar(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.published_at.is_not(None))
        )
    assert marked == len(ids)


async def test_second_touches_of_a_whole_batch_join_their_leads_with_few_parameters(engine: AsyncEngine) -> None:
    """Known people: the identifier, open-lead and key lookups each see the whole batch at once."""
    pipeline = IntakePipeline(engine, SOURCES, default_region="RU")
    await pipeline.store([pipeline.prepare(e) for e in people(0, 600)])
    again = [
        form(f"again{n}", T0 + timedelta(hours=1, seconds=n), name=f"Person {n}", email=f"p{n}@example.com")
        for n in range(600)
    ]

    with statements(engine) as seen:
        result = await pipeline.store([pipeline.prepare(e) for e in again])

    assert (result.stored, result.duplicates) == (600, 0)
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(Lead)) == 600, "each touch joined its lead"
    if engine.dialect.name == "postgresql":
        reads = [(sql, params) for sql, params in seen if sql.startswith(("SELECT", "UPDATE"))]
        assert reads and all(len(params) <= 10 for _, params in reads), [(s[:60], len(p)) for s, p in reads]


def _literal(value: Any) -> str:
    """A test value as SQL text (plain ASCII test strings only)."""
    if isinstance(value, list | tuple):
        return "'{" + ",".join(value) + "}'"
    return f"'{value}'"


async def test_after_the_young_tables_are_analyzed_the_identifier_lookup_uses_its_index(engine: AsyncEngine) -> None:
    """The lookup of a batch's identifiers (two kinds) and their contacts, prepared on small tables, planned after.

    asyncpg keeps statements prepared, and from its sixth run PostgreSQL may use a generic plan made for the
    tables as they were. This lookup (one statement: `kind = $1 AND value = ANY($2) OR kind = $3 AND …` joined to
    `contact`) then scans all of `contact_identifier` for every batch: a burst's pipeline fell to ~500 leads/s
    (BENCHMARKS.md, sixth session). Splitting it into per-kind and by-id statements was tried: the contact lookup
    by `id = ANY($1)` kept a sequential scan too. This prepares the statements the code really runs, runs them six
    times on small tables, grows the tables, and asks PostgreSQL for the plans it would use once the pipeline has
    analyzed them (store/young_tables.py); without that ANALYZE the plan is a sequential scan (checked first).
    """
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no plan cache of this kind")
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection

        async def add_people(first: int, last: int) -> None:
            await raw.execute(
                "INSERT INTO contact (id, created_at, updated_at)"
                f" SELECT 'c' || g, now(), now() FROM generate_series({first}, {last}) g;"
                "INSERT INTO contact_identifier (kind, value, contact_id, created_at)"
                f" SELECT 'email', 'p' || g || '@example.com', 'c' || g, now() FROM generate_series({first}, {last}) g"
            )

        await add_people(1, 300)  # the first batches of a new deployment
        await conn.commit()
        wanted = {("phone", "+79160000001"), ("email", "p1@example.com"), ("email", "p2@example.com")}
        with statements(engine) as seen:
            async with engine.begin() as lookup_conn:
                assert await known_identifiers(lookup_conn, wanted) == {
                    ("email", "p1@example.com"): "c1",
                    ("email", "p2@example.com"): "c2",
                }
        assert seen, "the lookup ran at least one statement"
        calls = []
        for n, (sql, params) in enumerate(seen):
            await raw.execute(f"PREPARE lookup{n} AS {sql}")
            calls.append(f"lookup{n}({', '.join(_literal(p) for p in params)})")
        async with raw.transaction():
            for _ in range(6):
                for call in calls:
                    await raw.fetch(f"EXECUTE {call}")
        await add_people(301, 30000)

        async def plans() -> list[str]:
            return ["\n".join(row[0] for row in await raw.fetch(f"EXPLAIN EXECUTE {call}")) for call in calls]

        stale = await plans()
        await analyze(engine)
        fresh = await plans()
        await raw.execute("DEALLOCATE ALL")
    assert any("Seq Scan on contact_identifier" in plan for plan in stale), "the trap this guards against"
    for plan in fresh:
        assert "Seq Scan" not in plan and ("pk_contact_identifier" in plan or "pk_contact" in plan), plan


async def test_the_pipeline_analyzes_young_tables_each_time_its_stored_rows_double(engine: AsyncEngine) -> None:
    from leadhub.store import young_tables

    keeper = young_tables.YoungTableStatistics(engine)
    await keeper.start()
    if engine.dialect.name != "postgresql":
        assert not keeper.enabled, "SQLite plans each statement afresh: nothing to do"
        return
    assert keeper.enabled, "a new deployment's tables are young"
    analyzed: list[int] = []

    async def record() -> None:
        analyzed.append(keeper.stored)

    keeper._analyze = record  # type: ignore[method-assign]
    for _ in range(40):  # 40 batches of 500: 20,000 rows
        keeper.count(500)
        await asyncio.sleep(0)  # the analysis runs beside the pipeline, never inside its batch
    await keeper.stop()
    assert analyzed == [1000, 2000, 4000, 8000, 16000]
