"""Cron rules: ticks in the rule's time zone, fired once each, missed ticks after downtime collapse into one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from leadhub.store.connector_state import load_state
from leadhub.triggers.schedules import STATE_OWNER, latest_due, schedule_event
from tests.helpers import wait_for
from tests.triggers.conftest import START, Shop, stop_hub

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


def test_after_a_long_downtime_the_latest_tick_is_the_one_fired() -> None:
    """Found by an audit: the ticks were walked from the last one fired, at most 100,000 of them, so an
    every-minute rule after 70 days down fired a tick from a month before (and, next pass, the latest too)."""
    now = datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC)
    tick = latest_due("* * * * *", "UTC", now - timedelta(days=100), now)
    assert tick is not None and tick.astimezone(UTC) == datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _walked(cron: str, zone: str, after: datetime, now: datetime) -> datetime | None:
    """The latest tick in (after, now] by walking every tick from `after`: slow, but plainly right."""
    from cronsim import CronSim

    latest = None
    for tick in CronSim(cron, after.astimezone(ZoneInfo(zone))):
        if tick > now:
            return latest
        latest = tick
    return latest


@pytest.mark.parametrize(
    ("cron", "zone"),
    [("30 2 * * *", "Europe/Berlin"), ("*/20 * * * *", "Europe/Berlin"), ("0 9 * * 1", "Europe/Moscow")],
)
def test_latest_due_is_the_latest_tick_walked_across_daylight_saving_changes(cron: str, zone: str) -> None:
    for start in (datetime(2026, 3, 28, tzinfo=UTC), datetime(2026, 10, 24, tzinfo=UTC)):
        after = start - timedelta(days=2)
        for minutes in range(0, 4 * 24 * 60, 37):
            now = start + timedelta(minutes=minutes, seconds=minutes % 60)
            assert latest_due(cron, zone, after, now) == _walked(cron, zone, after, now), now


def test_latest_due_after_a_downtime_longer_than_the_catch_up_walk_is_the_latest_tick() -> None:
    """A minutely rule down for 80 days has 115,200 ticks to walk: the walk stopped at 100,000 and gave a tick
    of 11 days before (fired late, and the next pass fired the latest too: two runs for one downtime)."""
    now = datetime(2026, 6, 1, 0, 0, 30, tzinfo=UTC)
    tick = latest_due("* * * * *", "Europe/Berlin", now - timedelta(days=80), now)
    assert tick is not None and tick.astimezone(UTC) == datetime(2026, 6, 1, 0, 0, tzinfo=UTC)
    yearly = latest_due("0 0 29 2 *", "UTC", datetime(2001, 1, 1, tzinfo=UTC), now)  # every 29 February
    assert yearly == datetime(2024, 2, 29, tzinfo=UTC)
    assert latest_due("0 0 29 2 *", "UTC", datetime(2024, 3, 1, tzinfo=UTC), now) is None
    since_year_one = latest_due("0 9 * * 1", "UTC", datetime(1, 1, 1, tzinfo=UTC), now)
    assert since_year_one == datetime(2026, 5, 25, 9, 0, tzinfo=UTC)


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


async def _state(running, rule_id: str = "monday-review") -> dict | None:  # type: ignore[no-untyped-def]
    return await load_state(running.engine, STATE_OWNER, rule_id)


@pytest.mark.parametrize("away", ["disabled", "removed"])
async def test_a_cron_rule_back_after_being_away_waits_for_its_next_tick(
    trigger_hub, clock, rules_dir: Path, away: str
) -> None:
    """It fired at once for the tick missed while it was away, as if the daemon had been down."""
    rule_file = rules_dir / "weekly.yaml"
    rule_file.write_text(RULE)
    running = await trigger_hub()
    service = running.hub.triggers
    shop = Shop(running.engine, clock)
    await wait_for(lambda: _state(running), timeout=30, what="the cron rule to be registered")

    if away == "disabled":
        rule_file.write_text(RULE.replace("    schedule:", "    enabled: false\n    schedule:"))
    else:
        rule_file.unlink()

    async def loaded(present: bool) -> bool:
        return ("monday-review" in service.index.by_id) == present

    await wait_for(lambda: loaded(False), timeout=30, what=f"the {away} rule to be unloaded")
    assert await service.schedules.tick() == 0  # a pass while it is away
    clock.advance(datetime(2026, 3, 10, 8, 0, tzinfo=UTC) - START)  # Monday the 9th's tick passes meanwhile
    rule_file.write_text(RULE)
    await wait_for(lambda: loaded(True), timeout=30, what="the rule to be loaded again")
    assert await service.schedules.tick() == 0  # the first pass with it back
    assert await shop.actions(rule_id="monday-review") == []
    assert await _state(running) == {"last": clock.now().isoformat()}

    clock.advance(datetime(2026, 3, 16, 6, 0, 30, tzinfo=UTC) - clock.now())  # its next tick after the return

    async def fired() -> list:
        return await shop.actions(rule_id="monday-review")

    (run,) = await wait_for(fired, timeout=30, what="the run for the next tick")
    tick = datetime(2026, 3, 16, 9, 0, tzinfo=ZoneInfo("Europe/Moscow"))
    assert run.event_id == schedule_event(service.index.by_id["monday-review"], tick)["id"]


async def test_a_cron_rule_still_fires_the_tick_missed_while_the_daemon_was_down(
    trigger_hub, clock, rules_dir: Path
) -> None:
    """docs/rules.md: after downtime only the latest missed tick fires; a rule present all along is not away."""
    (rules_dir / "weekly.yaml").write_text(RULE)
    running = await trigger_hub()
    shop = Shop(running.engine, clock)
    await wait_for(lambda: _state(running), timeout=30, what="the cron rule to be registered")
    await stop_hub(running)
    clock.advance(datetime(2026, 3, 10, 8, 0, tzinfo=UTC) - START)  # down over Monday the 9th's tick
    restarted = await trigger_hub()

    async def fired() -> list:
        return await shop.actions(rule_id="monday-review")

    (run,) = await wait_for(fired, timeout=30, what="the run for the tick missed while down")
    tick = datetime(2026, 3, 9, 9, 0, tzinfo=ZoneInfo("Europe/Moscow"))
    assert run.event_id == schedule_event(restarted.hub.triggers.index.by_id["monday-review"], tick)["id"]


async def test_a_cron_rule_disabled_while_the_daemon_was_down_fires_no_tick_of_the_downtime_when_enabled(
    trigger_hub, clock, rules_dir: Path
) -> None:
    """Found by a helper's audit: a rule disabled in its file while the daemon was down was marked away only from the
    restart, so enabling it later fired the tick missed during the downtime, when it may have been disabled already."""
    rule_file = rules_dir / "weekly.yaml"
    rule_file.write_text(RULE)
    running = await trigger_hub()
    shop = Shop(running.engine, clock)
    registered = await wait_for(lambda: _state(running), timeout=30, what="the cron rule to be registered")
    await stop_hub(running)
    rule_file.write_text(RULE.replace("    schedule:", "    enabled: false\n    schedule:"))
    clock.advance(datetime(2026, 3, 10, 8, 0, tzinfo=UTC) - START)  # down over Monday the 9th's tick
    restarted = await trigger_hub()
    service = restarted.hub.triggers
    assert await service.schedules.tick() == 0
    assert await _state(restarted) == {**registered, "away_since": registered["last"]}, "away since its last tick"

    clock.advance(timedelta(hours=1))
    rule_file.write_text(RULE)

    async def loaded() -> bool:
        return "monday-review" in service.index.by_id

    await wait_for(loaded, timeout=30, what="the rule to be enabled again")
    assert await service.schedules.tick() == 0, "Monday the 9th's tick came while it may have been disabled"
    assert await shop.actions(rule_id="monday-review") == []
    assert await _state(restarted) == {"last": clock.now().isoformat()}


async def test_a_tick_missed_while_down_fires_when_the_rules_load_only_after_the_start(
    trigger_hub, clock, rules_dir: Path
) -> None:
    """A rule not loaded yet at start (its volume mounted late) is away from then on, not over the downtime."""
    (rules_dir / "weekly.yaml").write_text(RULE)
    running = await trigger_hub()
    shop = Shop(running.engine, clock)
    await wait_for(lambda: _state(running), timeout=30, what="the cron rule to be registered")
    await stop_hub(running)
    unmounted = rules_dir.with_name("rules-unmounted")
    rules_dir.rename(unmounted)
    clock.advance(datetime(2026, 3, 10, 8, 0, tzinfo=UTC) - START)  # down over Monday the 9th's tick
    restarted = await trigger_hub()
    service = restarted.hub.triggers
    assert await service.schedules.tick() == 0  # a pass without the rule: it is away from now on
    assert "away_since" in (await _state(restarted) or {})
    clock.advance(timedelta(hours=1))
    unmounted.rename(rules_dir)

    async def fired() -> list:
        return await shop.actions(rule_id="monday-review")

    (run,) = await wait_for(fired, timeout=30, what="the run for the tick missed while down")
    tick = datetime(2026, 3, 9, 9, 0, tzinfo=ZoneInfo("Europe/Moscow"))
    assert run.event_id == schedule_event(service.index.by_id["monday-review"], tick)["id"]

    async def counts_from_its_return() -> bool:  # saved after the run is scheduled
        return await _state(restarted) == {"last": clock.now().isoformat()}

    await wait_for(counts_from_its_return, timeout=30, what="the rule to count from its return")
