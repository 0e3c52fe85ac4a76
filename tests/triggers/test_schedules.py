"""Cron rules: ticks in the rule's time zone, fired once each, missed ticks after downtime collapse into one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from leadhub.store.connector_state import load_state
from leadhub.triggers.schedules import STATE_OWNER, latest_due
from tests.helpers import wait_for
from tests.triggers.conftest import START, Shop

RULE = """
rules:
  - id: monday-review
    schedule: {cron: "0 9 * * 1", timezone: Europe/Moscow}
    do:
      - create_task: {title: "Weekly review ({{ event.occurred_at.strftime('%Y-%m-%d') }})"}
"""


def test_latest_due_tick_is_in_the_rules_time_zone() -> None:
    after = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday, 13:00 in Moscow
    assert latest_due("0 9 * * 1", "Europe/Moscow", after, datetime(2026, 3, 9, 5, 59, tzinfo=UTC)) is None
    tick = latest_due("0 9 * * 1", "Europe/Moscow", after, datetime(2026, 3, 9, 6, 0, tzinfo=UTC))
    assert tick is not None and tick.astimezone(UTC) == datetime(2026, 3, 9, 6, 0, tzinfo=UTC)
    three_weeks = latest_due("0 9 * * 1", "Europe/Moscow", after, datetime(2026, 3, 25, tzinfo=UTC))
    assert three_weeks is not None and three_weeks.astimezone(UTC) == datetime(2026, 3, 23, 6, 0, tzinfo=UTC)


async def test_a_cron_rule_fires_once_per_tick(trigger_hub, clock, rules_dir: Path) -> None:
    (rules_dir / "weekly.yaml").write_text(RULE)
    running = await trigger_hub()
    shop = Shop(running.engine, clock)

    async def seen() -> bool:
        return await load_state(running.engine, STATE_OWNER, "monday-review") is not None

    await wait_for(seen, timeout=30, what="the cron rule to be registered")
    assert START.weekday() == 0
    clock.advance(datetime(2026, 3, 9, 6, 0, 30, tzinfo=UTC) - START)

    async def tasks(count: int) -> list:
        items = (await running.api("/api/tasks"))["items"]
        assert len(items) <= count, items
        return items if len(items) == count else []

    (task,) = await wait_for(lambda: tasks(1), timeout=30, what="the Monday task")
    assert task["title"] == "Weekly review (2026-03-09)"

    async def recorded() -> bool:  # the task is written while its run executes; the run is `done` a moment later
        return [a.status for a in await shop.actions(rule_id="monday-review")] == ["done"]

    # Until then the run is live, and the next tick's run would be skipped (mode: single) rather than wait.
    await wait_for(recorded, timeout=30, what="the Monday run to be recorded")
    clock.advance(timedelta(minutes=5))
    assert await running.hub.triggers.schedules.tick() == 0
    assert len(await shop.actions(rule_id="monday-review")) == 1

    clock.advance(timedelta(days=14))  # two Mondays pass while nobody looks: one run, for the latest
    items = await wait_for(lambda: tasks(2), timeout=30, what="one more task")
    assert items[0]["title"] == "Weekly review (2026-03-23)"
