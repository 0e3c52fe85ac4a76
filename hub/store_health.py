"""/readyz's view of the store: answers at all (every probe), and the slower checks at most every 30 s.

A schema changed under the running daemon (a newer release's `leadhub db upgrade`, a dropped table) or a SQLite
database another process holds write-locked leaves `SELECT 1` answering while every write fails. Those checks
are cached, so a probe every second costs one query; a problem is logged when it appears and when it clears,
not per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.error_text import brief
from leadhub.store.health import answers, schema_problem, sqlite_write_lock_problem

CHECK_EVERY = 30.0  # seconds a schema and lock check's answer is kept
LOCK_WAIT = 1.0  # seconds the lock check waits for SQLite's write lock: /readyz answers within ~1.5 s
ANSWER_TIMEOUT = 3.0  # seconds for `SELECT 1` and the schema check
NOT_READY = "the store is not ready yet: waiting for the database or migrating it"

log = structlog.get_logger("leadhub.store")


class StoreHealth:
    """`problem()`: None when the store is usable, else one line saying why not."""

    def __init__(
        self,
        engine: Callable[[], AsyncEngine | None],
        *,
        check_every: float = CHECK_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine  # None until the store is migrated
        self.check_every = check_every
        self.clock = clock
        self._checked_at: float | None = None
        self._found: str | None = None  # the last deep check's answer
        self._checking: asyncio.Task[str | None] | None = None

    async def problem(self) -> str | None:
        engine = self.engine()
        if engine is None:
            return NOT_READY
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT):
                await answers(engine)
        except Exception as exc:  # the store is away: the pipeline's detail and the log say more
            return brief(exc)
        if self._checked_at is not None and self.clock() - self._checked_at < self.check_every:
            return self._found
        if self._checking is None:  # concurrent probes share one check
            self._checking = asyncio.create_task(self._check(engine), name="store-health")
        try:
            return await asyncio.shield(self._checking)
        finally:
            if self._checking is not None and self._checking.done():
                self._checking = None

    async def _check(self, engine: AsyncEngine) -> str | None:
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT):
                found = await schema_problem(engine)
            found = found or await sqlite_write_lock_problem(engine, LOCK_WAIT)
        except Exception as exc:  # not kept: the next probe asks again
            return brief(exc)
        if found != self._found:
            if found:
                log.error("store not usable", problem=found)
            else:
                log.info("store usable again", was=self._found)
        self._found, self._checked_at = found, self.clock()
        return found
