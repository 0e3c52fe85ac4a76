"""`throttle` counts its window from when the events occurred, not from when they were handled: a backlog (the daemon
down, the consumer behind) handles events hours apart in seconds, and they must throttle as they happened."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, select, update

from leadhub.ids import new_id
from leadhub.store.models import Lead, ScheduledAction, Task
from leadhub.triggers.context import aware
from tests.triggers.test_execution import Engine

RULE = """
rules:
  - id: r
    on: lead.created
    wait: 1d
    mode: parallel
    unless: "lead.status == 'lost'"
    throttle: {per: contact, for: 1h}
    do:
      - create_task: {title: "call {{ lead.id }}"}
"""


async def _leads(e: Engine, count: int) -> tuple[str, list[str]]:
    """A contact and `count` leads of it."""
    contact_id, first = await e.shop.customer()
    leads, now = [first], e.clock.now()
    async with e.engine.begin() as conn:
        for _ in range(count - 1):
            leads.append(new_id())
            values = {"id": leads[-1], "contact_id": contact_id, "status": "new", "tags": [], "channel": "shop"}
            values |= {"connector": "shop", "attribution": {}, "created_at": now, "updated_at": now}
            await conn.execute(insert(Lead.__table__).values(**values))
    return contact_id, leads


async def _handle(e: Engine, contact_id: str, occurred: dict[str, datetime]) -> None:
    """The events of these leads, which occurred then, handled back to back now."""
    for lead_id, at in occurred.items():
        await e.lead_event(lead_id, contact_id, event_id=f"ev-{lead_id}", occurred_at=at)


async def _statuses(e: Engine) -> dict[str, str]:
    return {row.event_id.removeprefix("ev-"): row.status for row in await e.shop.actions()}


async def test_events_a_period_apart_handled_back_to_back_both_act(engine, tmp_path: Path) -> None:
    """The daemon was down for five hours: two orders two hours apart are handled a second apart. Judged by when
    they were handled, the second was throttled by the first; they happened outside each other's hour."""
    e = Engine(engine, tmp_path, RULE)
    contact_id, (first, second) = await _leads(e, 2)
    now = e.clock.now()
    await _handle(e, contact_id, {first: now - timedelta(hours=5), second: now - timedelta(hours=3)})
    assert await _statuses(e) == {first: "pending", second: "pending"}


async def test_events_within_the_period_handled_back_to_back_the_second_is_throttled(engine, tmp_path: Path) -> None:
    e = Engine(engine, tmp_path, RULE)
    contact_id, (first, second) = await _leads(e, 2)
    now = e.clock.now()
    await _handle(e, contact_id, {first: now - timedelta(hours=5), second: now - timedelta(hours=4, minutes=10)})
    assert await _statuses(e) == {first: "pending", second: "throttled"}


async def test_events_within_the_period_handled_hours_apart_the_second_is_throttled(engine, tmp_path: Path) -> None:
    """The converse: the first handled as it came, the second, 20 minutes later, only after a three-hour outage.
    Judged by when they were handled, both acted."""
    e = Engine(engine, tmp_path, RULE)
    contact_id, (first, second) = await _leads(e, 2)
    start = e.clock.now()
    await _handle(e, contact_id, {first: start})
    e.clock.advance(timedelta(hours=3))
    await _handle(e, contact_id, {second: start + timedelta(minutes=20)})
    assert await _statuses(e) == {first: "pending", second: "throttled"}


async def test_an_event_that_occurred_after_it_was_handled_counts_as_handled(engine, tmp_path: Path) -> None:
    """A clock ahead of ours (another replica's, a provider's) must not hold the key for a day longer than the
    period: the run counts from when it was handled, and the next event two hours later acts."""
    e = Engine(engine, tmp_path, RULE)
    contact_id, (ahead, later) = await _leads(e, 2)
    start = e.clock.now()
    await _handle(e, contact_id, {ahead: start + timedelta(days=1)})
    e.clock.advance(timedelta(hours=2))
    await _handle(e, contact_id, {later: e.clock.now()})
    assert await _statuses(e) == {ahead: "pending", later: "pending"}
    async with engine.connect() as conn:
        stored = (await conn.execute(select(ScheduledAction.occurred_at).order_by(ScheduledAction.created_at))).all()
    assert [aware(at) for (at,) in stored] == [start, start + timedelta(hours=2)]


async def test_an_event_that_occurred_long_ago_counts_then(engine, tmp_path: Path) -> None:
    """An event a year old (a source's clock behind ours, or one replayed) acts when nothing acted in its hour,
    and does not throttle the event of today; handled after a later run, it is throttled by that run as any
    event handled out of order is: releasing it would put two runs in one hour as they were handled."""
    e = Engine(engine, tmp_path, RULE)
    contact_id, (old, today, older) = await _leads(e, 3)
    now = e.clock.now()
    await _handle(e, contact_id, {old: now - timedelta(days=365), today: now})
    await _handle(e, contact_id, {older: now - timedelta(days=400)})
    assert await _statuses(e) == {old: "pending", today: "pending", older: "throttled"}


async def test_a_held_run_is_released_by_the_window_of_when_it_occurred(engine, tmp_path: Path) -> None:
    """Three events of one backlog, handled back to back: at 00:00, 01:30 and 01:40. The second acts (90 minutes
    after the first), the third is held by it. When the second is cancelled (`unless`), the third is released: the
    first, at 00:00, is outside its hour, though it was handled a second before it."""
    e = Engine(engine, tmp_path, RULE)
    contact_id, (first, second, third) = await _leads(e, 3)
    midnight = e.clock.now() - timedelta(hours=10)
    await _handle(
        e,
        contact_id,
        {first: midnight, second: midnight + timedelta(minutes=90), third: midnight + timedelta(minutes=100)},
    )
    assert await _statuses(e) == {first: "pending", second: "pending", third: "throttled"}
    async with engine.begin() as conn:
        await conn.execute(update(Lead.__table__).where(Lead.id == second).values(status="lost"))
    e.clock.advance(timedelta(days=1))
    await e.scheduler().run_once()
    assert await _statuses(e) == {first: "done", second: "cancelled", third: "pending"}
    await e.scheduler().run_once()
    async with engine.connect() as conn:
        titles = set((await conn.execute(select(Task.__table__.c.title))).scalars())
    assert titles == {f"call {first}", f"call {third}"}


async def test_a_run_stored_before_the_occurred_at_column_counts_from_when_it_was_handled(
    engine, tmp_path: Path
) -> None:
    """Runs written before 0009 have no `occurred_at`: their `created_at` stands in for it."""
    e = Engine(engine, tmp_path, RULE)
    contact_id, (first, second) = await _leads(e, 2)
    start = e.clock.now()
    await _handle(e, contact_id, {first: start - timedelta(hours=5)})
    async with engine.begin() as conn:
        await conn.execute(update(ScheduledAction.__table__).values(occurred_at=None))
    e.clock.advance(timedelta(minutes=30))
    await _handle(e, contact_id, {second: e.clock.now()})
    assert await _statuses(e) == {first: "pending", second: "throttled"}
