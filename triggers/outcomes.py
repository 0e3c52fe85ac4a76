"""Recording how a batch's runs ended: one transaction for the batch, one per run when the store refuses a value."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from leadhub.error_text import brief, storable
from leadhub.store import triggers as store
from leadhub.store.db import lock_for_writing
from leadhub.triggers.actions.base import BatchWrite
from leadhub.triggers.engine import RuleIndex
from leadhub.triggers.throttle import release_throttled

log = structlog.get_logger("leadhub.scheduler")
WAITING = "waiting"  # a run given back `pending` because its rule is not loaded yet (`Scheduler._wait_for`)
# SQLSTATE classes of a store that is away or busy, not refusing a value: connection exception, transaction
# rollback (deadlock, serialization), insufficient resources, operator intervention (shutting down), system error.
AWAY_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})


@dataclass
class Result:
    """How one run ended: a final status, or `pending` again with the time of the retry."""

    action_id: str
    status: str
    result: dict[str, Any] | None = None
    error: str | None = None
    retry_at: datetime | None = None
    batched: list[tuple[BatchWrite, Any]] = field(default_factory=list)


async def record(
    engine: AsyncEngine,
    results: list[Result],
    now: datetime,
    held_until: datetime,
    *,
    released: Sequence[str] = (),
    rules: RuleIndex | None = None,
) -> set[str]:
    """One transaction for the whole batch's outcomes (a commit per action was the scheduler's bottleneck);
    `released`: the claim's runs a stop cut short, given back (`store.release`). The ids recorded. With `rules`,
    the runs a cancelled one held back by its throttle are released in the same transaction (triggers/throttle.py).

    A batch the store refuses for a value in it, not for being away (`store_away`: the caller retries), is
    recorded a run at a time: left unrecorded, every run of the batch ran again once the lease ran out, its
    e-mails sent and its webhooks posted a second time.
    """
    released = [*released, *(r.action_id for r in results if r.status == WAITING)]
    try:
        async with engine.begin() as conn:
            return await _write(conn, results, now, held_until, released, rules)
    except Exception as exc:
        if store_away(exc):
            raise
        log.error(
            "the store refused the batch's outcomes; recording them one by one", count=len(results), error=brief(exc)
        )
    mine: set[str] = set()
    for result in results:
        try:
            async with engine.begin() as conn:
                mine |= await _write(conn, [result], now, held_until, [], rules)
        except Exception as exc:
            if store_away(exc):
                raise
            mine |= await _record_refused(engine, result, exc, now, held_until)
    if released:
        async with engine.begin() as conn:
            mine |= await _write(conn, [], now, held_until, released)
    return mine


async def _record_refused(
    engine: AsyncEngine, result: Result, exc: Exception, now: datetime, held_until: datetime
) -> set[str]:
    """Record a run whose outcome the store refuses even alone as `failed` with a plain error, without its
    result and writes, so that it does not run again; `result` becomes what was recorded (for the counts).
    Should even that be refused, the run is left to run again once the lease runs out, and the log says so."""
    reason, outcome = brief(exc), result.status
    result.error = f"the outcome ({outcome}) could not be recorded: {reason}"
    result.status, result.result, result.retry_at, result.batched = "failed", None, None, []
    try:
        async with engine.begin() as conn:
            mine = await _write(conn, [result], now, held_until, [])
    except Exception as again:
        if store_away(again):
            raise
        log.error(
            "the store refused an action's outcome, and then its failure: it runs again once its lease runs out",
            id=result.action_id,
            outcome=outcome,
            error=reason,
            then=brief(again),
        )
        return set()
    log.error(
        "the store refused an action's outcome: recorded as failed, so that it does not run again",
        id=result.action_id,
        outcome=outcome,
        error=reason,
    )
    return mine


async def _write(  # noqa: PLR0917
    conn: AsyncConnection,
    results: list[Result],
    now: datetime,
    held_until: datetime,
    released: list[str],
    rules: RuleIndex | None = None,
) -> set[str]:
    """Write outcomes in the caller's transaction; the ids the claim still held.

    Only the rows this claim still holds are recorded: one whose lease ran out anyway (the heartbeat could not
    reach the store) may have been claimed and run by another worker, whose outcome stands. What the runs did
    (`batched`: e-mails sent) is recorded for all of them: it happened either way.
    """
    final = []
    batched: dict[BatchWrite, list[Any]] = {}
    await lock_for_writing(conn)
    cancelled = [r.action_id for r in results if r.status == "cancelled" and r.retry_at is None]
    throttles = await store.throttle_keys(conn, cancelled) if rules is not None else {}
    await store.lock_run_keys(conn, throttles)  # before the rows, in the matcher's order: no deadlock with it
    mine = await store.held(conn, [r.action_id for r in results] + released, held_until)
    lost = sorted(r.action_id for r in results if r.action_id not in mine)
    if lost:
        log.warning("outcomes not recorded: another worker claimed these actions since", ids=lost)
    for r in results:
        for batch_write, row in r.batched:
            batched.setdefault(batch_write, []).append(row)
        if r.action_id not in mine or r.status == WAITING:
            continue
        error = None if r.error is None else storable(r.error)
        if r.retry_at is not None:
            await store.retry_at(conn, r.action_id, r.retry_at, error or "", now, held_until=held_until)
        else:
            final.append({"id": r.action_id, "status": r.status, "result": r.result, "error": error})
    for batch_write, rows in batched.items():
        await batch_write(conn, rows)
    await store.finish_many(conn, final, now, held_until=held_until)
    await store.release(conn, [i for i in released if i in mine], now, held_until=held_until)
    if rules is not None and any(i in mine for i in cancelled):
        await release_throttled(conn, throttles, rules, now)
    return mine


def store_away(exc: BaseException) -> bool:
    """Whether a write failed because the store is away or busy (write again later), not because it refuses a
    value in the statement (a NUL, a lone surrogate, a constraint), which fails the same way every time."""
    if isinstance(exc, OSError | TimeoutError | sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        return True
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return (
        exc.connection_invalidated
        or isinstance(exc.orig, OSError | TimeoutError)  # asyncpg: the connection lost mid-statement
        or (isinstance(sqlstate, str) and sqlstate[:2] in AWAY_SQLSTATE_CLASSES)
    )
