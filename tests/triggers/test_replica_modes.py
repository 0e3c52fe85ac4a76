"""`mode` and `throttle` with two replicas matching events for one key at the same moment (PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from leadhub.store.db import create_engine, upgrade
from leadhub.triggers.clock import ManualClock
from leadhub.triggers.engine import RuleIndex
from leadhub.triggers.loader import load_rules
from leadhub.triggers.matcher import Matcher
from leadhub.triggers.sandbox import Templates
from tests.conftest import PG_ADMIN_URL
from tests.helpers import wait_for
from tests.triggers.conftest import START, Shop

# SQLite has one writer in one process; the race needs two servers' sessions (LEADHUB_TEST_DATABASE_URL).
pytestmark = pytest.mark.skipif(not PG_ADMIN_URL, reason="two replicas on one store: PostgreSQL only")

WAITING_FOR_A_RUN_LOCK = """SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""
ROUNDS = 15  # each round races two events for a fresh lead; on the old code most rounds went wrong


def _rule(mode: str, throttle: str = "") -> str:
    return f"""
rules:
  - id: r
    on: lead.created
    wait: 1h
    mode: {mode}
    {throttle}
    do:
      - create_task: {{title: "call"}}
"""


class Replicas:
    """Two matchers on two engines (two replicas' connection pools) over one database, one rule set, one clock."""

    def __init__(self, engines: list[Any], tmp_path: Path, rules: str) -> None:
        (tmp_path / "rules.yaml").write_text(rules)
        loaded = load_rules(tmp_path, Templates())
        assert loaded.problems == []
        index = RuleIndex(loaded.rules)
        self.clock = ManualClock(START)
        self.matchers = [Matcher(engine, lambda: index, self.clock) for engine in engines]
        self.shop = Shop(engines[0], self.clock)

    async def race(self, *event_ids: str, lead_id: str, contact_id: str) -> None:
        """The first replica handles the first event, the second the second (if any), at the same moment."""
        events = [
            {
                "id": event_id,
                "type": "lead.created",
                "subject_id": lead_id,
                "occurred_at": self.clock.now().isoformat(),
                "data": {"lead_id": lead_id, "contact_id": contact_id},
            }
            for event_id in event_ids
        ]
        await asyncio.gather(*(matcher.handle(event) for matcher, event in zip(self.matchers, events, strict=False)))

    async def runs(self, lead_id: str) -> list[Any]:
        return [row for row in await self.shop.actions() if row.group_key == f"r:{lead_id}"]


@pytest.fixture
async def engines(database_url: str) -> AsyncIterator[list[Any]]:
    made = [create_engine(database_url), create_engine(database_url)]
    await upgrade(made[0])
    yield made
    for engine in made:
        await engine.dispose()


async def test_throttle_lets_one_of_two_simultaneous_events_act(engines, tmp_path: Path) -> None:
    """Found by an audit: both replicas saw no earlier run for the contact and both scheduled one."""
    replicas = Replicas(engines, tmp_path, _rule("parallel", "throttle: {per: contact, for: 30d}"))
    for round_ in range(ROUNDS):
        contact_id, lead_id = await replicas.shop.customer()
        await replicas.race(f"a{round_}", f"b{round_}", lead_id=lead_id, contact_id=contact_id)
        statuses = sorted(run.status for run in await replicas.runs(lead_id))
        assert statuses == ["pending", "throttled"], f"round {round_}: {statuses}"


async def test_restart_leaves_exactly_one_of_two_simultaneous_events_pending(engines, tmp_path: Path) -> None:
    """Found by an audit: each replica saw only the earlier run, so both new runs stayed pending."""
    replicas = Replicas(engines, tmp_path, _rule("restart"))
    for round_ in range(ROUNDS):
        contact_id, lead_id = await replicas.shop.customer()
        await replicas.race(f"first{round_}", lead_id=lead_id, contact_id=contact_id)
        await replicas.race(f"a{round_}", f"b{round_}", lead_id=lead_id, contact_id=contact_id)
        statuses = sorted(run.status for run in await replicas.runs(lead_id))
        assert statuses == ["cancelled", "cancelled", "pending"], f"round {round_}: {statuses}"


async def test_one_event_handled_by_both_replicas_at_once_keeps_its_run(engines, tmp_path: Path) -> None:
    """A redelivery while the first delivery is still being handled: the second must not cancel the first's run
    (its own event's) as an earlier one under `mode: restart`, leaving none."""
    replicas = Replicas(engines, tmp_path, _rule("restart"))
    for round_ in range(ROUNDS):
        contact_id, lead_id = await replicas.shop.customer()
        await replicas.race(f"e{round_}", f"e{round_}", lead_id=lead_id, contact_id=contact_id)
        assert [run.status for run in await replicas.runs(lead_id)] == ["pending"], f"round {round_}"


async def test_a_release_and_a_new_event_at_once_leave_one_run_in_the_window(engines, tmp_path: Path) -> None:
    """One replica's scheduler cancels the waiting run (its `unless`) and releases the run it held back, while the
    other replica handles a new event for the same contact: one of the two runs, never both."""
    from datetime import timedelta

    from sqlalchemy import update

    from leadhub.store.models import Lead
    from leadhub.triggers.actions.base import Deps
    from leadhub.triggers.scheduler import Scheduler

    rule = _rule("parallel", "throttle: {per: contact, for: 30d}").replace(
        "    mode:", "    unless: \"lead.status == 'lost'\"\n    mode:"
    )
    replicas = Replicas(engines, tmp_path, rule)
    index = replicas.matchers[0].rules()
    scheduler = Scheduler(engines[0], lambda: index, Deps(engine=engines[0]), replicas.clock)
    for round_ in range(ROUNDS):
        contact_id, lead_id = await replicas.shop.customer()
        await replicas.race(f"first{round_}", lead_id=lead_id, contact_id=contact_id)
        replicas.clock.advance(timedelta(minutes=10))
        await replicas.race(f"held{round_}", lead_id=lead_id, contact_id=contact_id)
        async with engines[0].begin() as conn:
            await conn.execute(update(Lead.__table__).where(Lead.id == lead_id).values(status="lost"))
        replicas.clock.advance(timedelta(minutes=50))  # the first is due, and cancelled by `unless`
        event = {
            "id": f"new{round_}",
            "type": "lead.created",
            "subject_id": lead_id,
            "occurred_at": replicas.clock.now().isoformat(),
            "data": {"lead_id": lead_id, "contact_id": contact_id},
        }
        await asyncio.gather(scheduler.run_once(), replicas.matchers[1].handle(event))
        statuses = [run.status for run in await replicas.runs(lead_id)]
        assert statuses[0] == "cancelled" and sorted(statuses[1:]) == ["pending", "throttled"], f"round {round_}"
        async with engines[0].begin() as conn:  # the next round's scheduler pass takes only its own first run
            await conn.execute(update(Lead.__table__).where(Lead.id == lead_id).values(status="new"))


async def test_restarts_that_cancel_runs_of_each_others_throttle_keys_do_not_deadlock(
    engines, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After contact merges, lead 1's waiting run counts for contact A and its new event for contact B; lead 2's the
    other way round. Each `mode: restart` cancels a run of the key the other event computes: on the old code each
    took its own keys, cancelled, then took the cancelled run's key (to release what it held) last, out of order,
    and PostgreSQL found the two transactions waiting for each other (DeadlockDetectedError, retried by the
    consumer). Each now locks every key it will need before it cancels anything: one waits for the other."""
    from sqlalchemy import text

    from leadhub.store import triggers as store_triggers

    replicas = Replicas(engines, tmp_path, _rule("restart", "throttle: {per: contact, for: 30d}"))
    contact_a, lead_1 = await replicas.shop.customer()
    contact_b, lead_2 = await replicas.shop.customer("anna@example.com", "Anna")

    def event(event_id: str, lead_id: str, contact_id: str) -> dict[str, Any]:
        occurred = replicas.clock.now().isoformat()
        data = {"lead_id": lead_id, "contact_id": contact_id}
        return {"id": event_id, "type": "lead.created", "subject_id": lead_id, "occurred_at": occurred, "data": data}

    await replicas.matchers[0].handle(event("first1", lead_1, contact_a))
    await replicas.matchers[0].handle(event("first2", lead_2, contact_b))
    cancelling, arrived = store_triggers.cancel, set()

    async def met() -> bool:
        """Both have cancelled, or one waits for a lock (the other's): going on cannot wait for the other."""
        if len(arrived) == 2:
            return True
        async with engines[0].connect() as conn:
            return bool(await conn.scalar(text(WAITING_FOR_A_RUN_LOCK)))

    async def cancel_then_meet(conn: Any, ids: Any, reason: str, now: Any) -> None:
        """Both transactions past their first locks before either goes on, unless one waits for the other's."""
        await cancelling(conn, ids, reason, now)
        arrived.add(reason)
        await wait_for(met, what="the other event's cancellation or its wait for a lock")

    monkeypatch.setattr(store_triggers, "cancel", cancel_then_meet)
    handled = await asyncio.gather(
        replicas.matchers[0].handle(event("second1", lead_1, contact_b)),
        replicas.matchers[1].handle(event("second2", lead_2, contact_a)),
        return_exceptions=True,
    )
    assert [type(outcome).__name__ for outcome in handled] == ["int", "int"], handled
    for lead_id in (lead_1, lead_2):  # the later one held by the other's first run, released when it was cancelled
        assert [run.status for run in await replicas.runs(lead_id)] == ["cancelled", "pending"]
