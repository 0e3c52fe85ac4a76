"""Scheduled actions and rule traces: written once per key, claimed safely by concurrent schedulers."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Table, bindparam, case, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from leadhub.store.models import RuleTrace, ScheduledAction
from leadhub.store.one_of import one_of
from leadhub.store.queries import Page

action_t: Table = ScheduledAction.__table__  # type: ignore[assignment]
trace_t: Table = RuleTrace.__table__  # type: ignore[assignment]
LIVE = ("pending", "running")
# Scheduled while an earlier run of its throttle key still waited: not run, unless that run is cancelled (then it
# may be released to `pending`, triggers/throttle.py); it stays `throttled` for good once that run has acted.
HELD = "throttled"
RUN_STATUSES = (*LIVE, "done", "failed", "cancelled", HELD)
NOT_ACTED = ("cancelled", HELD)


async def insert_ignore(conn: AsyncConnection, table: Table, values: dict[str, Any] | list[dict[str, Any]]) -> int:
    """Insert unless a unique key already holds the row; the number of rows inserted."""
    if not values:
        return 0
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).values(values).on_conflict_do_nothing()
    return (await conn.execute(statement)).rowcount or 0


async def event_evaluated(conn: AsyncConnection, event_id: str) -> bool:
    """True when a trace for this event exists: a redelivered event has already been handled."""
    query = select(trace_t.c.id).where(trace_t.c.event_id == event_id).limit(1)
    return (await conn.execute(query)).first() is not None


async def write_traces(conn: AsyncConnection, traces: list[dict[str, Any]]) -> None:
    await insert_ignore(conn, trace_t, traces)


def occurred() -> ColumnElement[datetime]:
    """When a run's event occurred, as its throttle counts it: `created_at` (when it was handled) for runs stored
    before the column (0009)."""
    return func.coalesce(action_t.c.occurred_at, action_t.c.created_at)


def run_lock_id(key: str) -> int:
    """A stable signed 64-bit advisory lock id for a rule's group or throttle key (both start with the rule id)."""
    return int.from_bytes(hashlib.sha256(f"leadhub:rule-run:{key}".encode()).digest()[:8], "big", signed=True)


async def lock_run_keys(conn: AsyncConnection, keys: Iterable[str]) -> None:
    """Serialize the check-then-schedule of `mode` and `throttle` per key across replicas, until the commit.

    Without it two replicas handling events for one key at once both saw no earlier run (two runs despite a
    throttle) or each cancelled the other's (`mode: restart` left none). PostgreSQL: transaction advisory locks,
    taken in one order so two transactions never wait for each other: a transaction's group keys in one call,
    then its throttle keys in one call (all of them: those of the runs it may cancel too, `group_throttle_keys`),
    each call in lock id order, and nothing locked after. SQLite has one writer (one process): nothing.
    """
    if conn.dialect.name != "postgresql":
        return
    for lock_id in sorted({run_lock_id(key) for key in keys}):
        await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})


async def live_in_group(
    conn: AsyncConnection, group_key: str, *, other_than_event: str, statuses: Sequence[str] = LIVE
) -> list[str]:
    """The group's pending or running actions (or those of `statuses`), but those of `other_than_event` (this
    event's own, when it is handled twice at once: they are the run, not an earlier one to skip for or cancel)."""
    query = select(action_t.c.id).where(
        action_t.c.group_key == group_key, action_t.c.status.in_(statuses), action_t.c.event_id != other_than_event
    )
    return list((await conn.execute(query)).scalars())


async def events_of(conn: AsyncConnection, ids: Sequence[str]) -> list[dict[str, Any]]:
    """The events the runs `ids` were scheduled for."""
    if not ids:
        return []
    return list((await conn.execute(select(action_t.c.event).where(one_of(conn, action_t.c.id, ids)))).scalars())


async def throttled_by(
    conn: AsyncConnection, throttle_key: str, since: datetime, *, other_than_event: str | None = None
) -> set[str]:
    """The statuses of the runs by which the rule already acted for this key for events that occurred since `since`:
    every status but cancelled and throttled (a run held back acted for nothing). Empty: not throttled."""
    query = select(action_t.c.status).where(
        action_t.c.throttle_key == throttle_key,
        action_t.c.status.not_in(NOT_ACTED),
        occurred() >= since,
    )
    if other_than_event is not None:
        query = query.where(action_t.c.event_id != other_than_event)
    return set((await conn.execute(query.distinct())).scalars())


class Cancelled(NamedTuple):
    """A throttle key's runs being cancelled, as the release of the runs they held back needs them."""

    created: datetime  # the earliest `created_at`: a run is held back only by runs scheduled before it
    due: datetime  # the latest `due_at`: when the last of them would have acted

    def with_(self, other: Cancelled | None) -> Cancelled:
        """These and `other`'s runs."""
        return self if other is None else Cancelled(min(self.created, other.created), max(self.due, other.due))


async def throttle_keys(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, Cancelled]:
    """The throttle keys of the runs `ids` (those that have one), each with their earliest `created_at` and latest
    `due_at`."""
    if not ids:
        return {}
    keys = action_t.c.throttle_key
    query = (
        select(keys, func.min(action_t.c.created_at), func.max(action_t.c.due_at))
        .where(one_of(conn, action_t.c.id, ids), keys.is_not(None))
        .group_by(keys)
    )
    return {key: Cancelled(created, due) for key, created, due in await conn.execute(query)}


async def group_throttle_keys(conn: AsyncConnection, group_keys: Iterable[str]) -> set[str]:
    """The throttle keys of the runs of these groups, whatever their status: with the groups locked, a superset of
    those a `mode: restart` may cancel (a failed one may be re-queued meanwhile, `requeue_failed`)."""
    groups = sorted(set(group_keys))
    if not groups:
        return set()
    query = select(action_t.c.throttle_key).where(one_of(conn, action_t.c.group_key, groups))
    return set((await conn.execute(query.where(action_t.c.throttle_key.is_not(None)).distinct())).scalars())


async def held_events(conn: AsyncConnection, throttle_key: str, since: datetime) -> list[Any]:
    """The runs held back by this throttle key scheduled since `since`, a row per event (rule_id, event_id, event,
    occurred_at: `occurred`), in the order their events occurred."""
    query = (
        select(action_t.c.rule_id, action_t.c.event_id, action_t.c.event, occurred().label("occurred_at"))
        .where(
            action_t.c.throttle_key == throttle_key,
            action_t.c.status == HELD,
            action_t.c.action_index == 0,
            action_t.c.created_at >= since,
        )
        .order_by(occurred(), action_t.c.id)
    )
    return list((await conn.execute(query)).all())


async def release_held(
    conn: AsyncConnection, throttle_key: str, event_id: str, now: datetime, *, due_from: datetime
) -> int:
    """Make the held runs of one event `pending`, due at `due_from` if their own due time was before: the run that
    throttled them was cancelled. The count."""
    due_from_param = bindparam("due_from", due_from, type_=action_t.c.due_at.type)
    statement = (
        update(action_t)
        .where(action_t.c.throttle_key == throttle_key, action_t.c.event_id == event_id, action_t.c.status == HELD)
        .values(
            status="pending",
            due_at=case((action_t.c.due_at < due_from_param, due_from_param), else_=action_t.c.due_at),
            last_error=None,
            updated_at=now,
        )
    )
    return (await conn.execute(statement)).rowcount or 0


async def schedule(conn: AsyncConnection, rows: list[dict[str, Any]]) -> int:
    return await insert_ignore(conn, action_t, rows)


async def cancel(conn: AsyncConnection, ids: Sequence[str], reason: str, now: datetime) -> None:
    if ids:
        await conn.execute(
            update(action_t)
            .where(one_of(conn, action_t.c.id, ids), action_t.c.status.in_((*LIVE, HELD)))
            .values(status="cancelled", last_error=reason, updated_at=now, lease_until=None)
        )


async def claim_due(
    conn: AsyncConnection, now: datetime, limit: int, lease_until: datetime, *, skip_rules: Sequence[str] = ()
) -> list[Any]:
    """Take due actions (and running ones whose lease ran out: their worker died) for this worker.

    Returned as claimed: `status` running and `attempts` already counting this run. PostgreSQL skips
    rows another worker has locked; the one UPDATE re-checks the due condition, so two workers never
    both get the same action on SQLite either (one statement instead of one per action). The actions of
    `skip_rules` (rules this worker waits for) are left where they are.
    """
    due = or_(
        (action_t.c.status == "pending") & (action_t.c.due_at <= now),
        (action_t.c.status == "running") & (action_t.c.lease_until < now),
    )
    if skip_rules:
        due = due & action_t.c.rule_id.not_in(skip_rules)
    query = select(action_t.c.id).where(due).order_by(action_t.c.due_at).limit(limit)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    candidates = list((await conn.execute(query)).scalars())
    if not candidates:
        return []
    claim = (
        update(action_t)
        .where(one_of(conn, action_t.c.id, candidates), due)
        .values(status="running", attempts=action_t.c.attempts + 1, lease_until=lease_until, updated_at=now)
        .returning(*action_t.c)
    )
    return sorted((await conn.execute(claim)).all(), key=lambda row: (row.due_at, row.id))


async def extend_lease(
    conn: AsyncConnection, ids: Sequence[str], held_until: datetime, lease_until: datetime
) -> list[str]:
    """Move the lease of the claim's actions still `running` under its lease (`held_until`, the value the claim set
    last); the ids it still holds. A row another worker claimed since (its lease ran out) has another lease."""
    if not ids:
        return []
    statement = (
        update(action_t)
        .where(one_of(conn, action_t.c.id, ids), action_t.c.status == "running", action_t.c.lease_until == held_until)
        .values(lease_until=lease_until)
        .returning(action_t.c.id)
    )
    return list((await conn.execute(statement)).scalars())


async def held(conn: AsyncConnection, ids: Sequence[str], lease_until: datetime) -> set[str]:
    """Which of the claim's actions are still its own (`running` under its lease), locked for recording them.

    On SQLite the caller takes the write lock first (`lock_for_writing`), so no claim can come in between.
    """
    if not ids:
        return set()
    query = select(action_t.c.id).where(
        one_of(conn, action_t.c.id, ids), action_t.c.status == "running", action_t.c.lease_until == lease_until
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return set((await conn.execute(query)).scalars())


async def finish_many(
    conn: AsyncConnection, outcomes: list[dict[str, Any]], now: datetime, *, held_until: datetime
) -> None:
    """Record many final outcomes in one executemany: `{"id", "status", "result", "error"}` each.

    Only rows still running under the claim's lease (`held_until`) change: another worker's claim is left alone.
    """
    if not outcomes:
        return
    statement = (
        update(action_t)
        .where(
            action_t.c.id == bindparam("b_id"),
            action_t.c.status == "running",
            action_t.c.lease_until == bindparam("b_held"),
        )
        .values(
            status=bindparam("b_status"),
            result=bindparam("b_result"),
            last_error=bindparam("b_error"),
            lease_until=None,
            updated_at=now,
        )
    )
    params = [
        {"b_id": o["id"], "b_status": o["status"], "b_result": o["result"], "b_error": o["error"], "b_held": held_until}
        for o in outcomes
    ]
    await conn.execute(statement, params)


async def retry_at(
    conn: AsyncConnection, action_id: str, due_at: datetime, error: str, now: datetime, *, held_until: datetime
) -> None:
    """Put a run back to `pending` for its retry, unless another worker's claim holds it now."""
    await conn.execute(
        update(action_t)
        .where(action_t.c.id == action_id, action_t.c.status == "running", action_t.c.lease_until == held_until)
        .values(status="pending", due_at=due_at, last_error=error, lease_until=None, updated_at=now)
    )


async def release(conn: AsyncConnection, ids: Sequence[str], now: datetime, *, held_until: datetime) -> None:
    """Give back claimed actions whose runs were cut short (the scheduler stopping): `pending` as before the claim,
    which is not counted as an attempt, so the next pass of any worker takes them rather than waiting for the lease.
    Rows another worker's claim holds now are left alone."""
    if not ids:
        return
    await conn.execute(
        update(action_t)
        .where(one_of(conn, action_t.c.id, ids), action_t.c.status == "running", action_t.c.lease_until == held_until)
        .values(status="pending", attempts=action_t.c.attempts - 1, lease_until=None, updated_at=now)
    )


async def next_due(conn: AsyncConnection, *, skip_rules: Sequence[str] = ()) -> datetime | None:
    query = select(func.min(action_t.c.due_at)).where(action_t.c.status == "pending")
    if skip_rules:
        query = query.where(action_t.c.rule_id.not_in(skip_rules))
    return (await conn.execute(query)).scalar_one_or_none()


async def list_actions(
    conn: AsyncConnection, *, rule_id: str | None, status: str | None, cursor: str | None, limit: int
) -> Page:
    from leadhub.store.queries import _page

    query = select(action_t)
    if rule_id:
        query = query.where(action_t.c.rule_id == rule_id)
    if status:
        query = query.where(action_t.c.status == status)
    scope = ("actions", rule_id or None, status or None)
    return await _page(conn, query, [action_t.c.created_at, action_t.c.id], cursor, limit, scope=scope)


async def list_traces(conn: AsyncConnection, *, rule_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    query = select(trace_t).order_by(trace_t.c.created_at.desc(), trace_t.c.id.desc()).limit(limit)
    if rule_id:
        query = query.where(trace_t.c.rule_id == rule_id)
    return [dict(row._mapping) for row in await conn.execute(query)]


async def get_action(conn: AsyncConnection, action_id: str) -> dict[str, Any] | None:
    row = (await conn.execute(select(action_t).where(action_t.c.id == action_id))).mappings().first()
    return None if row is None else dict(row)


async def statuses(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, str]:
    """The status of each of `ids` that exists."""
    if not ids:
        return {}
    query = select(action_t.c.id, action_t.c.status).where(one_of(conn, action_t.c.id, ids))
    return {row.id: row.status for row in await conn.execute(query)}


async def has_runs_of(conn: AsyncConnection, rule_id: str) -> bool:
    """Whether any run of `rule_id` is stored, whatever its status."""
    return await conn.scalar(select(action_t.c.id).where(action_t.c.rule_id == rule_id).limit(1)) is not None


async def requeue_failed(conn: AsyncConnection, ids: Sequence[str], now: datetime) -> list[str]:
    """Put the `failed` ones of `ids` back to `pending`, due now, attempts from zero; the ids re-queued.

    `last_error` stays until the next run records its own: the admin still sees why it failed.
    """
    if not ids:
        return []
    statement = (
        update(action_t)
        .where(one_of(conn, action_t.c.id, ids), action_t.c.status == "failed")
        .values(status="pending", due_at=now, attempts=0, lease_until=None, updated_at=now)
        .returning(action_t.c.id)
    )
    return list((await conn.execute(statement)).scalars())


async def failed_ids(
    conn: AsyncConnection, *, after: str | None, rule_id: str | None, action_type: str | None, limit: int
) -> list[str]:
    """A page of failed runs' ids in id order after `after`, optionally of one rule and one action type."""
    query = select(action_t.c.id).where(action_t.c.status == "failed")
    if after is not None:
        query = query.where(action_t.c.id > after)
    if rule_id is not None:
        query = query.where(action_t.c.rule_id == rule_id)
    if action_type is not None:
        query = query.where(action_t.c.action_type == action_type)
    return list((await conn.execute(query.order_by(action_t.c.id).limit(limit))).scalars())
