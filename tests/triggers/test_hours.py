"""`wait` moved into business hours / out of quiet hours: weekends, nights, DST changes, the contact's zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from leadhub.triggers.context import build_context
from leadhub.triggers.engine import evaluate
from leadhub.triggers.hours import HoursError, contact_zone, move_into, parse_days, quiet, wall_to_utc, weekly
from leadhub.triggers.loader import load_rules
from leadhub.triggers.sandbox import Templates
from tests.helpers import wait_for
from tests.triggers.conftest import START, Shop

BERLIN = ZoneInfo("Europe/Berlin")
OFFICE = weekly("office", "Europe/Berlin", {"mon-fri": "09:00-18:00", "sat": "10:00-14:00"})
NIGHT = quiet("night", "Europe/Berlin", "21:00-09:00")


def berlin(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=BERLIN)  # type: ignore[misc]


def test_inside_business_hours_nothing_moves() -> None:
    assert OFFICE.next_open(berlin(2026, 3, 4, 11, 15)) == berlin(2026, 3, 4, 11, 15)
    assert OFFICE.next_open(berlin(2026, 3, 4, 9, 0)) == berlin(2026, 3, 4, 9, 0)


def test_after_closing_moves_to_the_next_morning_and_over_the_weekend() -> None:
    assert OFFICE.next_open(berlin(2026, 3, 4, 18, 0)) == berlin(2026, 3, 5, 9, 0)  # closing time is closed
    assert OFFICE.next_open(berlin(2026, 3, 5, 2, 30)) == berlin(2026, 3, 5, 9, 0)  # overnight
    assert OFFICE.next_open(berlin(2026, 3, 6, 19, 0)) == berlin(2026, 3, 7, 10, 0)  # Friday evening -> Saturday
    assert OFFICE.next_open(berlin(2026, 3, 7, 14, 30)) == berlin(2026, 3, 9, 9, 0)  # Saturday afternoon -> Monday


def test_quiet_hours_across_midnight() -> None:
    assert NIGHT.next_open(berlin(2026, 3, 4, 22, 0)) == berlin(2026, 3, 5, 9, 0)
    assert NIGHT.next_open(berlin(2026, 3, 5, 0, 10)) == berlin(2026, 3, 5, 9, 0)
    assert NIGHT.next_open(berlin(2026, 3, 5, 20, 59)) == berlin(2026, 3, 5, 20, 59)
    lunch = quiet("lunch", "Europe/Berlin", "13:00-14:00")
    assert lunch.next_open(berlin(2026, 3, 5, 13, 30)) == berlin(2026, 3, 5, 14, 0)
    assert lunch.next_open(berlin(2026, 3, 5, 23, 30)) == berlin(2026, 3, 5, 23, 30)


def test_daylight_saving_keeps_the_local_opening_time() -> None:
    # Berlin springs forward on Sunday 2026-03-29 and falls back on Sunday 2026-10-25.
    assert OFFICE.next_open(berlin(2026, 3, 28, 15, 0)) == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)  # 09:00 CEST
    assert OFFICE.next_open(berlin(2026, 10, 24, 15, 0)) == datetime(2026, 10, 26, 8, 0, tzinfo=UTC)  # 09:00 CET
    night_shift = weekly("night", "Europe/Berlin", {"daily": "02:30-04:00"})
    # 02:30 does not exist on 2026-03-29: it opens when the clock jumps to 03:00 CEST (01:00 UTC)
    assert night_shift.next_open(datetime(2026, 3, 28, 23, 0, tzinfo=UTC)) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    # 02:30 happens twice on 2026-10-25: the first one counts
    assert night_shift.next_open(datetime(2026, 10, 24, 23, 0, tzinfo=UTC)) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert wall_to_utc(datetime(2026, 3, 29).date(), datetime(2026, 3, 29, 2, 59).time(), BERLIN) == datetime(
        2026, 3, 29, 1, 0, tzinfo=UTC
    )


def test_quiet_hours_ending_in_the_repeated_hour_hold_the_second_time_too() -> None:
    # 2026-10-25 Berlin: 03:00 CEST (01:00 UTC) goes back to 02:00 CET, so 02:00-02:59 shows twice.
    night = quiet("night", "Europe/Berlin", "21:00-02:30")

    def at(hour: int, minute: int) -> datetime:
        return datetime(2026, 10, 25, hour, minute, tzinfo=UTC)

    assert night.next_open(at(0, 10)) == at(0, 30)  # 02:10 CEST, quiet: the first 02:30
    assert night.next_open(at(0, 40)) == at(0, 40)  # 02:40 CEST, after the quiet hours
    assert night.next_open(at(1, 10)) == at(1, 30)  # 02:10 CET, quiet again by the wall clock: the second 02:30
    assert night.next_open(at(1, 45)) == at(1, 45)
    shift = weekly("night", "Europe/Berlin", {"daily": "02:30-04:00"})
    assert shift.next_open(at(1, 5)) == at(1, 30)  # opened at the first 02:30, closed while the clock shows 02:05


CLOCK_CHANGES = [  # (zone, the instant its clocks change in 2026): fall back and spring forward, whole and half hours
    ("Europe/Berlin", datetime(2026, 10, 25, 1, 0, tzinfo=UTC)),
    ("Europe/Berlin", datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
    ("America/New_York", datetime(2026, 11, 1, 6, 0, tzinfo=UTC)),
    ("America/New_York", datetime(2026, 3, 8, 7, 0, tzinfo=UTC)),
    ("Australia/Lord_Howe", datetime(2026, 4, 4, 15, 0, tzinfo=UTC)),
    ("Australia/Lord_Howe", datetime(2026, 10, 3, 15, 30, tzinfo=UTC)),
]
NEAR_THE_CHANGE = st.integers(60, 3 * 60)  # every change here is at 02:00 local; spans ending 01:00-03:00 meet it


@settings(max_examples=400, deadline=None)
@given(
    change=st.sampled_from(CLOCK_CHANGES),
    start=st.integers(0, 23 * 60 + 59) | NEAR_THE_CHANGE,
    end=st.integers(0, 23 * 60 + 59) | NEAR_THE_CHANGE,
    minutes=st.integers(-3 * 60, 3 * 60) | st.integers(-36 * 60, 36 * 60),
)
def test_quiet_hours_never_open_on_a_wall_clock_time_inside_them(
    change: tuple[str, datetime], start: int, end: int, minutes: int
) -> None:
    assume(start != end)
    zone, instant = change
    span = f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"
    night = quiet("q", zone, span)
    when = instant + timedelta(minutes=minutes)
    opened = night.next_open(when)
    assert opened >= when
    wall = opened.astimezone(ZoneInfo(zone))
    now = wall.hour * 60 + wall.minute
    inside = start <= now < end if start < end else (now >= start or now < end)
    assert not inside, f"{span} in {zone}: opens at {wall.isoformat()}"


def test_business_and_quiet_hours_together() -> None:
    late_office = weekly("late", "Europe/Berlin", {"mon-fri": "08:00-22:00"})
    assert move_into(berlin(2026, 3, 6, 21, 30), [late_office, NIGHT]) == berlin(2026, 3, 9, 9, 0)
    assert move_into(berlin(2026, 3, 6, 8, 30), [late_office, NIGHT]) == berlin(2026, 3, 6, 9, 0)


def test_another_zone_reads_the_same_hours_in_that_zone() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    at = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)  # 21:00 in Tokyo, 13:00 in Berlin
    assert OFFICE.next_open(at) == at
    assert OFFICE.next_open(at, tokyo) == datetime(2026, 3, 5, 9, 0, tzinfo=tokyo)


def test_contact_zone_from_a_phone_number_naming_one_zone() -> None:
    assert contact_zone("+4930123456") == BERLIN
    assert contact_zone("+79161234567") is None  # Russia spans eleven zones
    assert contact_zone(None) is None and contact_zone("garbage") is None


def test_day_and_span_mistakes_are_explained() -> None:
    assert parse_days("mon-fri") == [0, 1, 2, 3, 4] and parse_days("fri-mon") == [4, 5, 6, 0]
    assert parse_days("sat, sun") == [5, 6] and parse_days("daily") == list(range(7))
    for days, message in [
        ({"mon-fry": "09:00-18:00"}, "unknown day 'mon-fry'"),
        ({"mon": "9-18"}, "invalid hours '9-18'"),
        ({"mon": "18:00-09:00"}, "ends before it starts"),
        ({"mon": "closed"}, "closed every day"),
    ]:
        with pytest.raises(HoursError, match=message):
            weekly("x", "UTC", days)


HOURS_RULES = """
business_hours:
  office:
    timezone: Europe/Moscow
    days: {mon-fri: "09:00-18:00"}
quiet_hours:
  night: {timezone: Europe/Moscow, quiet: "21:00-09:00"}
rules:
  - id: call-in-hours
    on: lead.created
    wait: {after: 15m, business_hours: office}
    do:
      - create_task: {title: "call {{ contact.name }}"}
  - id: mail-not-at-night
    on: lead.created
    wait: {after: lead.created_at + 1h, quiet_hours: night, timezone: contact}
    do:
      - create_task: {title: "mail {{ contact.name }}"}
"""


def _rules(tmp_path: Path, text: str = HOURS_RULES) -> dict:
    (tmp_path / "r").mkdir(exist_ok=True)
    (tmp_path / "r" / "hours.yaml").write_text(text)
    loaded = load_rules(tmp_path / "r", Templates())
    assert loaded.problems == []
    return loaded.by_id()


def _context(now: datetime, phone: str | None = None) -> dict:
    contact = {"id": "c", "name": "Ivan", "phone": phone, "email": None}
    lead = {"id": "l", "status": "new", "created_at": now, "tags": [], "channel": "form"}
    return build_context({"id": "e", "type": "lead.created", "data": {}}, {"lead": lead, "contact": contact}, now)


def test_rule_wait_with_an_injected_clock(tmp_path: Path) -> None:
    rules = _rules(tmp_path)
    friday_evening = datetime(2026, 3, 6, 14, 50, tzinfo=UTC)  # 17:50 in Moscow: +15m is 18:05, closed
    due = evaluate(rules["call-in-hours"], _context(friday_evening), friday_evening).due_at
    assert due == datetime(2026, 3, 9, 6, 0, tzinfo=UTC)  # Monday 09:00 Moscow
    noon = datetime(2026, 3, 4, 9, 0, tzinfo=UTC)
    assert evaluate(rules["call-in-hours"], _context(noon), noon).due_at == noon + timedelta(minutes=15)
    # 17:30 UTC + 1h: 21:30 in Moscow (quiet until 09:00 MSK), 19:30 in Berlin (a Berlin phone: not quiet)
    evening = datetime(2026, 3, 4, 17, 30, tzinfo=UTC)
    rule = rules["mail-not-at-night"]
    assert evaluate(rule, _context(evening), evening).due_at == datetime(2026, 3, 5, 6, 0, tzinfo=UTC)
    berlin_phone = evaluate(rule, _context(evening, "+4930123456"), evening).due_at
    assert berlin_phone == evening + timedelta(hours=1)


def test_rules_check_names_the_place_of_each_hours_mistake(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "a.yaml").write_text(
        "business_hours:\n"
        "  office:\n"
        "    timezone: Europe/Moskow\n"
        "    days: {mon-fri: '09:00-25:00'}\n"
        "rules:\n"
        "  - id: a\n"
        "    on: lead.created\n"
        "    wait: {after: 15m, business_hours: shop, tz: contact}\n"
        "    do: [{create_task: {title: x}}]\n"
    )
    (tmp_path / "r" / "b.yaml").write_text(
        "quiet_hours:\n  office: {timezone: UTC, quiet: '22:00-08:00'}\n  office2: {timezone: UTC}\n"
    )
    problems = [str(p).replace(str(tmp_path / "r") + "/", "") for p in load_rules(tmp_path / "r", Templates()).problems]
    assert problems == [
        "a.yaml:3:5: business_hours.office.timezone: unknown time zone 'Europe/Moskow'; use an IANA name like "
        "Europe/Moscow or UTC",
        "a.yaml:4:5: business_hours.office.days: invalid time in '09:00-25:00'; use 24-hour HH:MM, e.g. 09:00-18:00",
        "b.yaml:3:12: quiet_hours.office2.quiet: Field required",
        "a.yaml:8:46: rule 'a': wait.tz: unknown key 'tz'; allowed keys: after, business_hours, quiet_hours, timezone",
    ]
    (tmp_path / "r" / "a.yaml").write_text(
        "rules:\n"
        "  - id: a\n"
        "    on: lead.created\n"
        "    wait: {after: 15m, business_hours: shop}\n"
        "    do: [{create_task: {title: x}}]\n"
    )
    problems = [str(p).replace(str(tmp_path / "r") + "/", "") for p in load_rules(tmp_path / "r", Templates()).problems]
    assert problems == [
        "b.yaml:3:12: quiet_hours.office2.quiet: Field required",
        "a.yaml:4:24: rule 'a': wait.business_hours: unknown business hours 'shop'; defined: none (define them "
        "under top-level `business_hours:`)",
    ]


async def test_a_delayed_task_lands_at_the_next_opening(trigger_hub, clock, rules_dir: Path) -> None:
    """End to end: a lead on Friday evening (Moscow) gets its task when the office opens on Monday."""
    (rules_dir / "hours.yaml").write_text(HOURS_RULES.split("  - id: mail-not-at-night", maxsplit=1)[0])
    running = await trigger_hub()
    shop = Shop(running.engine, clock)
    clock.advance(datetime(2026, 3, 6, 15, 30, tzinfo=UTC) - START)  # Friday 18:30 in Moscow
    contact_id, lead_id = await shop.customer(name="Olga")
    await shop.emit("lead.created", lead_id, lead_id=lead_id, contact_id=contact_id)

    async def scheduled() -> list:
        return await shop.actions(rule_id="call-in-hours")

    (action,) = await wait_for(scheduled, timeout=30, what="the task action to be scheduled")
    monday_opening = datetime(2026, 3, 9, 6, 0, tzinfo=UTC)
    assert action.due_at.replace(tzinfo=UTC) == monday_opening
    clock.advance(monday_opening - timedelta(seconds=1) - clock.now())
    assert await running.hub.triggers.scheduler.run_once() == 0  # a second early: nothing is due
    clock.advance(timedelta(seconds=1))
    (task,) = await running.wait_items("/api/tasks", 1, timeout=30)
    assert task["title"] == "call Olga"
    assert datetime.fromisoformat(task["created_at"]).astimezone(UTC) == monday_opening


NEVER_OPEN = """
business_hours:
  weekend: {timezone: Europe/Moscow, days: {sat-sun: "10:00-14:00"}}
quiet_hours:
  night: {timezone: Europe/Moscow, quiet: "21:00-09:00"}
  daytime: {timezone: Europe/Moscow, quiet: "09:00-15:00"}
rules:
  - id: weekend-call
    on: lead.created
    wait: {after: 1h, business_hours: weekend, quiet_hours: daytime}
    do: [{create_task: {title: x}}]
  - id: fine
    on: lead.created
    wait: {after: 1h, business_hours: weekend, quiet_hours: night}
    do: [{create_task: {title: x}}]
"""


def test_business_and_quiet_hours_that_never_overlap_are_a_problem_not_a_stuck_event(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "a.yaml").write_text(NEVER_OPEN)
    loaded = load_rules(tmp_path / "r", Templates())
    problems = [str(p).replace(str(tmp_path / "r") + "/", "") for p in loaded.problems]
    assert problems == [
        "a.yaml:10:5: rule 'weekend-call': wait: business hours 'weekend' and quiet hours 'daytime' never leave an "
        "open time: no instant is inside the first and outside the second"
    ]
    assert [r.id for r in loaded.rules] == ["fine"]
    # Should such hours reach an evaluation anyway, only that rule is not matched; the event is not broken.
    from dataclasses import replace

    from leadhub.triggers.compile import Wait

    never = replace(
        loaded.rules[0],
        wait=Wait(
            timedelta(hours=1), None, (weekly("w", "UTC", {"sat": "10:00-11:00"}), quiet("q", "UTC", "09:00-12:00"))
        ),
    )
    noon = datetime(2026, 3, 4, 9, 0, tzinfo=UTC)
    evaluation = evaluate(never, _context(noon), noon)
    assert not evaluation.matched and evaluation.reason == "wait: no time is inside all of w, q"
