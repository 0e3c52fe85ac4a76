"""`throttle` and a run held back (`throttled`) by one cancelled later: released once, never two in a window."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update

from leadhub.ids import new_id
from leadhub.store.models import Lead, Task
from tests.triggers.test_execution import Engine


def _rule(wait: str = "1d", mode: str = "parallel", late: str = "run") -> str:
    return f"""
rules:
  - id: r
    on: lead.created
    wait: {wait}
    mode: {mode}
    late: {late}
    unless: "lead.status == 'lost'"
    throttle: {{per: contact, for: 30d}}
    do:
      - create_task: {{title: "call {{{{ lead.id }}}}"}}
"""


async def _lead(e: Engine, contact_id: str) -> str:
    """Another lead of the same contact."""
    lead_id, now = new_id(), e.clock.now()
    async with e.engine.begin() as conn:
        values = {"id": lead_id, "contact_id": contact_id, "status": "new", "tags": [], "channel": "shop"}
        values |= {"connector": "shop", "attribution": {}, "created_at": now, "updated_at": now}
        await conn.execute(insert(Lead.__table__).values(**values))
    return lead_id


async def _lost(e: Engine, lead_id: str) -> None:
    async with e.engine.begin() as conn:
        await conn.execute(update(Lead.__table__).where(Lead.id == lead_id).values(status="lost"))


async def _statuses(e: Engine) -> list[tuple[str, str]]:
    return [(row.group_key.removeprefix("r:"), row.status) for row in await e.shop.actions()]


async def _task_titles(e: Engine) -> list[str]:
    async with e.engine.connect() as conn:
        return list((await conn.execute(select(Task.__table__.c.title))).scalars())


async def test_a_held_run_is_released_when_the_one_throttling_it_is_cancelled(engine, tmp_path: Path) -> None:
    e = Engine(engine, tmp_path, _rule())
    contact_id, first = await e.shop.customer()
    second, third = await _lead(e, contact_id), await _lead(e, contact_id)
    for lead_id in (first, second, third):
        await e.lead_event(lead_id, contact_id)
        e.clock.advance(timedelta(hours=1))
    assert await _statuses(e) == [(first, "pending"), (second, "throttled"), (third, "throttled")]
    await _lost(e, first)
    e.clock.advance(timedelta(hours=21))  # the first is due: cancelled by `unless`
    assert await e.scheduler().run_once() == 1
    assert await _statuses(e) == [(first, "cancelled"), (second, "pending"), (third, "throttled")]
    e.clock.advance(timedelta(hours=1))
    assert await e.scheduler().run_once() == 1
    e.clock.advance(timedelta(days=2))
    assert await e.scheduler().run_once() == 0
    assert await _statuses(e) == [(first, "cancelled"), (second, "done"), (third, "throttled")]
    assert await _task_titles(e) == [f"call {second}"], "one task in the window: the released run's"


async def test_a_run_outside_the_cancelled_ones_window_keeps_the_held_one_back(engine, tmp_path: Path) -> None:
    """The first run waits 60 days; one scheduled 31 days after it is not throttled by it. When the first is
    cancelled, the run it held back (day 1) stays held: released, it would make two runs 30 days apart. It is
    released when that later one is cancelled as well."""
    e = Engine(engine, tmp_path, _rule(wait="60d"))
    contact_id, first = await e.shop.customer()
    second, later = await _lead(e, contact_id), await _lead(e, contact_id)
    await e.lead_event(first, contact_id)
    e.clock.advance(timedelta(days=1))
    await e.lead_event(second, contact_id)
    e.clock.advance(timedelta(days=30))
    await e.lead_event(later, contact_id)
    assert await _statuses(e) == [(first, "pending"), (second, "throttled"), (later, "pending")]
    await _lost(e, first)
    e.clock.advance(timedelta(days=29))
    assert await e.scheduler().run_once() == 1
    assert await _statuses(e) == [(first, "cancelled"), (second, "throttled"), (later, "pending")]
    await _lost(e, later)  # and when that one is cancelled too, nothing holds the second back any more
    e.clock.advance(timedelta(days=31))
    assert await e.scheduler().run_once() == 1
    assert await _statuses(e) == [(first, "cancelled"), (second, "pending"), (later, "cancelled")]
    assert await e.scheduler().run_once() == 1  # its due time (day 61) has passed: it runs at once
    assert await _task_titles(e) == [f"call {second}"]


async def test_a_restart_replaces_the_holder_and_the_held_one_stays_held(engine, tmp_path: Path) -> None:
    """`mode: restart` cancels the subject's waiting run and schedules anew: the new run throttles as the old one
    did, so the run it held back is not released (two runs in the window)."""
    e = Engine(engine, tmp_path, _rule(mode="restart"))
    contact_id, first = await e.shop.customer()
    second = await _lead(e, contact_id)
    await e.lead_event(first, contact_id)
    e.clock.advance(timedelta(hours=1))
    await e.lead_event(second, contact_id)
    e.clock.advance(timedelta(hours=1))
    await e.lead_event(first, contact_id)
    assert await _statuses(e) == [(first, "cancelled"), (second, "throttled"), (first, "pending")]


async def test_a_restart_replaces_a_held_run_of_its_subject(engine, tmp_path: Path) -> None:
    """A held run of the subject is stale once a new event for it comes: replaced like a waiting one, not released
    later with the old event."""
    e = Engine(engine, tmp_path, _rule(mode="restart"))
    contact_id, first = await e.shop.customer()
    second = await _lead(e, contact_id)
    await e.lead_event(first, contact_id)
    e.clock.advance(timedelta(hours=1))
    await e.lead_event(second, contact_id)
    e.clock.advance(timedelta(hours=1))
    await e.lead_event(second, contact_id)
    rows: list[Any] = await e.shop.actions()
    assert [(r.group_key, r.status) for r in rows] == [
        (f"r:{first}", "pending"),
        (f"r:{second}", "cancelled"),
        (f"r:{second}", "throttled"),
    ]


async def _held_past_its_due_time(e: Engine) -> tuple[str, str]:
    """The first lead's run, due in a day, holds back the second's, whose event came in 23 hours late (a backlog):
    due an hour from now, long before the run holding it back."""
    contact_id, first = await e.shop.customer()
    second = await _lead(e, contact_id)
    await e.lead_event(first, contact_id)
    e.clock.advance(timedelta(minutes=1))
    await e.lead_event(second, contact_id, occurred_at=e.clock.now() - timedelta(hours=23))
    rows = await e.shop.actions()
    assert [(row.status, row.due_at > rows[1].due_at) for row in rows] == [("pending", True), ("throttled", False)]
    return first, second


async def test_a_run_released_after_its_due_time_is_not_late_for_the_time_it_was_held(engine, tmp_path: Path) -> None:
    """`late: skip` and a run held back past its own due time: released when the run holding it back is cancelled
    (its `unless`, at its due time), it runs. On the old code it kept its due time, and a scheduler that had
    restarted since then (a deploy; here each pass is a new one) judged the whole hold as downtime: skipped,
    "late by 23:00:00", although nothing was down when it could have run."""
    e = Engine(engine, tmp_path, _rule(late="skip"))
    first, second = await _held_past_its_due_time(e)
    await _lost(e, first)
    e.clock.advance(timedelta(days=1) - timedelta(minutes=1))  # the first is due: cancelled by `unless`
    assert await e.scheduler().run_once() == 1
    assert await _statuses(e) == [(first, "cancelled"), (second, "pending")]
    assert await e.scheduler().run_once() == 1
    assert await _statuses(e) == [(first, "cancelled"), (second, "done")]
    assert await _task_titles(e) == [f"call {second}"]


async def test_a_run_released_after_downtime_is_late_by_the_downtime(engine, tmp_path: Path) -> None:
    """The hold ends when the run holding it back was due, or when that one was cancelled if sooner (a restart):
    downtime after that is lateness. Here the scheduler was down from before the first run's due time to two hours
    after it: `late: skip` skips the first, which releases the second, which is late by the same two hours."""
    e = Engine(engine, tmp_path, _rule(late="skip"))
    first, second = await _held_past_its_due_time(e)
    e.clock.advance(timedelta(days=1, hours=2) - timedelta(minutes=1))
    assert await e.scheduler().run_once() == 1
    assert await _statuses(e) == [(first, "cancelled"), (second, "pending")]
    assert await e.scheduler().run_once() == 1
    rows = await e.shop.actions()
    assert [(row.status, row.last_error) for row in rows][1] == ("cancelled", "late by 2:00:00 (late: skip)")
    assert await _task_titles(e) == []
