"""Fresh statistics for PostgreSQL tables that are still young, so cached plans follow their growth.

asyncpg keeps every statement prepared, and from a statement's sixth run PostgreSQL may keep one generic plan
for it, made with the table's statistics of that moment. Made while a new deployment's tables held a few hundred
rows, that plan is a sequential scan, and it stays until the table's statistics change: a batch's identifier
lookup then scanned all of `contact_identifier` for every batch, and a burst's pipeline fell to ~500 leads/s
(BENCHMARKS.md, sixth session). Autovacuum analyzes a growing table at most once a minute per database.

So the pipeline analyzes the tables it writes each time the rows it stored since the start have doubled, from
1,000 up to 1,000,000 (where autovacuum's own threshold, a tenth of the table, keeps up). ANALYZE invalidates the
cached plans, and the next run plans with what the table holds now. A table that was already large at start-up
is left to autovacuum.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger("leadhub.store")

PIPELINE_TABLES = ("contact", "contact_identifier", "inquiry", "lead", "outbox_event")
FIRST_ANALYZE_AT = 1_000  # rows stored by this process
ESTIMATED_INQUIRIES = "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass('inquiry')"
OLD_ENOUGH = 1_000_000  # past this many rows a table's plans no longer depend on a burst's growth


async def analyze(engine: AsyncEngine, tables: tuple[str, ...] = PIPELINE_TABLES) -> None:
    """ANALYZE `tables` (PostgreSQL): fresh statistics, and every cached plan over them is made again."""
    async with engine.connect() as conn:
        await conn.execute(text(f"ANALYZE {', '.join(tables)}"))
        await conn.commit()


class YoungTableStatistics:
    """Counts what the pipeline stores and analyzes the tables each time the count doubles while they are young."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.enabled = engine.dialect.name == "postgresql"
        self.stored = 0
        self.next_at = FIRST_ANALYZE_AT
        self._running: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Leave a table that is already large to autovacuum."""
        if not self.enabled:
            return
        try:
            async with self.engine.connect() as conn:
                rows = await conn.scalar(text(ESTIMATED_INQUIRIES))
        except Exception as exc:  # an optimisation: a store that cannot say is treated as young
            log.warning("could not read the size of the inquiry table", error=f"{type(exc).__name__}: {str(exc)[:200]}")
            return
        if rows is not None and rows >= OLD_ENOUGH:
            self.enabled = False

    def count(self, stored: int) -> None:
        """After a committed batch: `stored` new rows of inquiries (each with its contact, lead and events)."""
        if not self.enabled or stored <= 0:
            return
        self.stored += stored
        if self.stored < self.next_at or (self._running is not None and not self._running.done()):
            return
        while self.next_at <= self.stored:
            self.next_at *= 2
        if self.next_at > 2 * OLD_ENOUGH:
            self.enabled = False
        self._running = asyncio.create_task(self._analyze(), name="analyze-young-tables")

    async def _analyze(self) -> None:
        started = time.perf_counter()
        try:
            await analyze(self.engine)
        except Exception as exc:  # statistics are an optimisation: a failure is logged, never raised
            log.warning("analyzing young tables failed", error=f"{type(exc).__name__}: {str(exc)[:200]}")
            return
        log.info("young tables analyzed", stored=self.stored, seconds=round(time.perf_counter() - started, 3))

    async def stop(self) -> None:
        if self._running is not None and not self._running.done():
            self._running.cancel()
            await asyncio.gather(self._running, return_exceptions=True)
