"""Whole-batch lookups: right answers at any batch size, and on PostgreSQL one array parameter, not an IN list.

A cached statement with an IN list of 500 parameters got a generic plan that compared every row of a young
`inquiry` table against all 500 (no statistics yet): a batch's key lookup grew to 800 ms at 40,000 rows, the
open-leads lookup to 130 ms at 30,000 (BENCHMARKS.md). `= ANY($1)` with one array keeps the index in use
whatever the table's statistics (`store/one_of.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.pipelines.intake import IntakePipeline
from leadhub.store.models import Inquiry, Lead, OutboxEvent
from leadhub.store.outbox import mark_published, outbox_event
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
