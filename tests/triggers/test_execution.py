"""Matcher and scheduler on a real database: modes, late policies, redelivery, concurrent claims, retry limits."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from leadhub.store.models import RuleTrace, Task
from leadhub.triggers.actions.base import Deps
from leadhub.triggers.clock import ManualClock
from leadhub.triggers.context import aware
from leadhub.triggers.engine import RuleIndex
from leadhub.triggers.loader import load_rules
from leadhub.triggers.matcher import Matcher
from leadhub.triggers.sandbox import Templates
from leadhub.triggers.scheduler import RetryPolicy, Scheduler
from tests.triggers.conftest import START, Shop


class Engine:
    """Rules from text, a matcher and a scheduler over one database and one manual clock."""

    def __init__(self, engine: Any, tmp_path: Path, rules: str) -> None:
        self.rules_dir = tmp_path / "r"
        self.rules_dir.mkdir(exist_ok=True)
        self.edit(rules)
        self.clock = ManualClock(START)
        self.engine = engine
        self.matcher = Matcher(engine, lambda: self.index, self.clock)
        self.shop = Shop(engine, self.clock)

    def edit(self, rules: str) -> None:
        """The admin saves the rule file anew: the rules as loaded from then on."""
        (self.rules_dir / "rules.yaml").write_text(rules)
        loaded = load_rules(self.rules_dir, Templates())
        assert loaded.problems == []
        self.index = RuleIndex(loaded.rules)

    def scheduler(self, **options: Any) -> Scheduler:
        return Scheduler(self.engine, lambda: self.index, Deps(engine=self.engine), self.clock, **options)

    async def lead_event(
        self, lead_id: str, contact_id: str, event_id: str | None = None, occurred_at: datetime | None = None
    ) -> dict[str, Any]:
        event = {
            "id": event_id or f"ev{self.clock.now().timestamp():.0f}{lead_id[-4:]}",
            "type": "lead.created",
            "subject_id": lead_id,
            "occurred_at": (occurred_at or self.clock.now()).isoformat(),
            "data": {"lead_id": lead_id, "contact_id": contact_id},
        }
        await self.matcher.handle(event)
        return event


def _rule(mode: str = "single", late: str = "run", wait: str = "1h") -> str:
    return f"""
rules:
  - id: r
    on: lead.created
    wait: {wait}
    mode: {mode}
    late: {late}
    do:
      - create_task: {{title: "call {{{{ contact.name }}}}"}}
"""


async def _traces(engine: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(RuleTrace.__table__).order_by(RuleTrace.created_at))).all())


async def test_mode_single_skips_a_retrigger_while_pending(engine, tmp_path: Path) -> None:
    e = Engine(engine, tmp_path, _rule("single"))
    contact_id, lead_id = await e.shop.customer()
    await e.lead_event(lead_id, contact_id)
    e.clock.advance(timedelta(minutes=10))
    await e.lead_event(lead_id, contact_id)
    assert len(await e.shop.actions()) == 1
    traces = await _traces(engine)
    assert [t.matched for t in traces] == [True, True]
    assert traces[1].reason.startswith("skipped: an earlier run") and traces[0].reason is None


async def test_mode_restart_reschedules_from_the_new_event(engine, tmp_path: Path) -> None:
    e = Engine(engine, tmp_path, _rule("restart"))
    contact_id, lead_id = await e.shop.customer()
    await e.lead_event(lead_id, contact_id)
    e.clock.advance(timedelta(minutes=10))
    second = await e.lead_event(lead_id, contact_id)
    first_row, second_row = await e.shop.actions()
    assert first_row.status == "cancelled" and second["id"] in first_row.last_error
    assert second_row.status == "pending"
    assert second_row.due_at.replace(tzinfo=None) == (START + timedelta(minutes=70)).replace(tzinfo=None)


async def test_mode_parallel_keeps_both(engine, tmp_path: Path) -> None:
    e = Engine(engine, tmp_path, _rule("parallel"))
    contact_id, lead_id = await e.shop.customer()
    await e.lead_event(lead_id, contact_id)
    e.clock.advance(timedelta(minutes=10))
    await e.lead_event(lead_id, contact_id)
    assert [r.status for r in await e.shop.actions()] == ["pending", "pending"]


async def test_a_redelivered_event_changes_nothing(engine, tmp_path: Path) -> None:
    e = Engine(engine, tmp_path, _rule("parallel"))
    contact_id, lead_id = await e.shop.customer()
    event = await e.lead_event(lead_id, contact_id, "same-event")
    assert await e.matcher.handle(event) == 0
    assert len(await e.shop.actions()) == 1 and len(await _traces(engine)) == 1


@pytest.mark.parametrize(
    ("late", "behind", "expected"),
    [
        ("run", timedelta(days=3), "done"),
        ("skip", timedelta(seconds=30), "done"),
        ("skip", timedelta(hours=1), "cancelled"),
        ("{run_if_within: 2h}", timedelta(hours=1), "done"),
        ("{run_if_within: 2h}", timedelta(hours=3), "cancelled"),
    ],
)
async def test_late_policy_after_downtime(engine, tmp_path: Path, late: str, behind: timedelta, expected: str) -> None:
    e = Engine(engine, tmp_path, _rule(late=late))
    contact_id, lead_id = await e.shop.customer()
    await e.lead_event(lead_id, contact_id)
    e.clock.advance(timedelta(hours=1) + behind)  # the scheduler was down when the action fell due
    assert await e.scheduler().run_once() == 1
    (row,) = await e.shop.actions()
    assert row.status == expected, row.last_error
    if expected == "cancelled":
        assert row.last_error.startswith("late by")


async def test_concurrent_schedulers_run_each_action_once(engine, tmp_path: Path) -> None:
    e = Engine(engine, tmp_path, _rule("parallel", wait="1m"))
    contact_id, lead_id = await e.shop.customer()
    for n in range(20):
        await e.lead_event(lead_id, contact_id, f"event-{n}")
    e.clock.advance(timedelta(minutes=2))
    first, second = e.scheduler(batch=20), e.scheduler(batch=20)
    claimed = await asyncio.gather(first.run_once(), second.run_once(), first.run_once(), second.run_once())
    assert sum(claimed) == 20
    rows = await e.shop.actions()
    assert [r.status for r in rows] == ["done"] * 20 and {r.attempts for r in rows} == {1}
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(Task.__table__))).scalar_one() == 20


async def test_a_removed_rule_cancels_its_pending_actions(engine, tmp_path: Path) -> None:
    e = Engine(engine, tmp_path, _rule())
    contact_id, lead_id = await e.shop.customer()
    await e.lead_event(lead_id, contact_id)
    e.index = RuleIndex([])
    e.clock.advance(timedelta(hours=2))
    await e.scheduler().run_once()
    (row,) = await e.shop.actions()
    assert row.status == "cancelled" and "no longer loaded" in row.last_error


@pytest.mark.parametrize("then", ["the rule loads", "the files read without it"])
async def test_actions_of_a_rule_that_could_not_be_read_wait_without_being_claimed_again(
    engine, tmp_path: Path, then: str
) -> None:
    """While the last load could not read every rule, a rule that is not loaded may only be unreadable: its due
    actions are given back, left out of the claims (no pass takes them again, other rules' actions go on), and
    run once it loads, or are cancelled once the files read without problems and without it."""
    rules = """
rules:
  - id: r
    on: lead.created
    wait: 1h
    do:
      - create_task: {title: "r"}
  - id: s
    on: lead.created
    wait: 2h
    do:
      - create_task: {title: "s"}
"""
    e = Engine(engine, tmp_path, rules)
    contact_id, lead_id = await e.shop.customer()
    await e.lead_event(lead_id, contact_id)
    everything, e.index = e.index, RuleIndex([e.index.by_id["s"]])
    unread: list[str] = ["the rule files have problems"]
    scheduler = e.scheduler(batch=1, unloaded=lambda rule_id: unread[0] if unread else None)
    e.clock.advance(timedelta(hours=3))
    assert await scheduler.run_once() == 1  # r's action: given back
    assert scheduler.waiting == {"r": "the rule files have problems"}
    assert await scheduler.run_once() == 1  # s's action, not r's again
    assert await scheduler.run_once() == 0
    r, s = await e.shop.actions()
    assert (r.status, r.attempts, r.last_error, s.status) == ("pending", 0, None, "done")
    if then == "the rule loads":
        e.index = everything
    else:
        unread.clear()
    assert await scheduler.run_once() == 1
    r, _ = await e.shop.actions()
    expected = "done" if then == "the rule loads" else "cancelled"
    assert r.status == expected and scheduler.waiting == {}, r.last_error


def _tasks_rule(*titles: str) -> str:
    actions = "".join(f"      - create_task: {{title: {title}}}\n" for title in titles)
    return f"rules:\n  - id: r\n    on: lead.created\n    wait: 1d\n    do:\n{actions}"


@pytest.mark.parametrize(
    ("then", "now", "made"),
    [
        (["survey"], ["thank-you", "survey"], ["survey"]),
        (["survey"], ["survey-v2"], ["survey-v2"]),
        (["first", "second"], ["second", "first"], ["first", "second"]),
        (["first", "second"], ["first"], ["first"]),
        (["first", "second"], ["second-v2"], []),
    ],
    ids=["added in front", "edited in place", "moved", "one removed", "one removed and the other edited"],
)
async def test_a_waiting_run_follows_its_action_through_an_edit(
    engine, tmp_path: Path, then: list[str], now: list[str], made: list[str]
) -> None:
    """Found by an audit: a waiting run was matched to the edited rule by position and type only, so a
    thank-you task added in front of a waiting survey was made in its place, and the survey never."""
    e = Engine(engine, tmp_path, _tasks_rule(*then))
    contact_id, lead_id = await e.shop.customer()
    await e.lead_event(lead_id, contact_id)
    e.edit(_tasks_rule(*now))
    e.clock.advance(timedelta(days=1))
    assert await e.scheduler().run_once() == len(then)
    async with engine.connect() as conn:
        titles = sorted((await conn.execute(select(Task.__table__.c.title))).scalars())
    assert titles == sorted(made)
    cancelled = [row.last_error for row in await e.shop.actions() if row.status == "cancelled"]
    assert len(cancelled) == len(then) - len(made)
    assert all("changed: its action" in reason and "was removed" in reason for reason in cancelled), cancelled


async def test_a_run_scheduled_before_runs_stored_their_rules_actions_is_found_by_position(
    engine, tmp_path: Path
) -> None:
    from sqlalchemy import update

    from leadhub.store.models import ScheduledAction

    e = Engine(engine, tmp_path, _tasks_rule("survey"))
    contact_id, lead_id = await e.shop.customer()
    await e.lead_event(lead_id, contact_id)
    async with engine.begin() as conn:  # as the 0008 migration leaves the runs already waiting
        await conn.execute(update(ScheduledAction.__table__).values(do_digest=None))
    e.edit(_tasks_rule("survey-v2", "thank-you"))
    e.clock.advance(timedelta(days=1))
    assert await e.scheduler().run_once() == 1
    async with engine.connect() as conn:
        assert list((await conn.execute(select(Task.__table__.c.title))).scalars()) == ["survey-v2"]


async def test_retries_stop_at_the_limit(engine, tmp_path: Path) -> None:
    rules = """
rules:
  - id: r
    on: lead.created
    do:
      - webhook: {url: "http://127.0.0.1:9/closed"}
"""
    e = Engine(engine, tmp_path, rules)
    contact_id, lead_id = await e.shop.customer()
    await e.lead_event(lead_id, contact_id)
    scheduler = e.scheduler(retry=RetryPolicy(max_attempts=3, base=timedelta(seconds=10)))
    delays = []
    for _ in range(3):
        assert await scheduler.run_once() == 1
        (row,) = await e.shop.actions()
        if row.status == "pending":
            delays.append(row.due_at.replace(tzinfo=None) - e.clock.now().replace(tzinfo=None))
        e.clock.advance(timedelta(minutes=5))
    (row,) = await e.shop.actions()
    assert row.status == "failed" and row.attempts == 3 and row.last_error.startswith("after 3 attempts: webhook:")
    assert timedelta(seconds=8) <= delays[0] <= timedelta(seconds=12)
    assert timedelta(seconds=16) <= delays[1] <= timedelta(seconds=24)


async def test_the_backoff_counts_from_the_end_of_the_attempt(engine, tmp_path: Path) -> None:
    """A receiver that answers 503 after 59 s (a webhook timing out at 60 s is the same): the retry was due 30 s
    after the attempt began, already past when it ended, and ran at once with no back-off."""
    from aiohttp import web

    e: Engine

    async def slow_and_failing(request: web.Request) -> web.Response:
        e.clock.advance(timedelta(seconds=59))
        return web.Response(status=503)

    app = web.Application()
    app.router.add_post("/hook", slow_and_failing)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        rules = f"""
rules:
  - id: r
    on: lead.created
    do:
      - webhook: {{url: "http://127.0.0.1:{port}/hook", timeout: 60s}}
"""
        e = Engine(engine, tmp_path, rules)
        contact_id, lead_id = await e.shop.customer()
        await e.lead_event(lead_id, contact_id)
        scheduler = e.scheduler(retry=RetryPolicy(base=timedelta(seconds=30)))
        assert await scheduler.run_once() == 1
        (row,) = await e.shop.actions()
        assert (row.status, row.last_error) == ("pending", "webhook: HTTP 503: ")
        backoff = row.due_at.replace(tzinfo=None) - e.clock.now().replace(tzinfo=None)
        assert timedelta(seconds=24) <= backoff <= timedelta(seconds=36), backoff
        assert await scheduler.run_once() == 0  # not due again at once
    finally:
        await runner.cleanup()


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(base=timedelta(seconds=30), cap=timedelta(hours=1))
    samples = {policy.delay(1) for _ in range(20)}
    assert len(samples) > 1 and all(timedelta(seconds=24) <= d <= timedelta(seconds=36) for d in samples)
    assert timedelta(seconds=96) <= policy.delay(3) <= timedelta(seconds=144)
    assert {policy.delay(30) for _ in range(20)} == {timedelta(hours=1)}, "the cap holds after the jitter"


def _ticks(e: Engine) -> Any:
    from leadhub.triggers.schedules import ScheduleRunner

    return ScheduleRunner(e.engine, lambda: e.index, e.matcher, e.clock, lambda: None)


@pytest.mark.parametrize(
    ("late", "expected"), [("run", "done"), ("skip", "cancelled"), ("{run_if_within: 8h}", "done")]
)
async def test_a_cron_tick_handled_after_downtime_is_judged_by_late(engine, tmp_path: Path, late, expected) -> None:
    """The 09:00 tick, fired at 15:00 after the daemon was down, is due at 09:00 (plus its wait), not at 15:00."""
    rules = f"""
rules:
  - id: morning
    schedule: {{cron: "0 9 * * *", timezone: Europe/Berlin}}
    wait: 30m
    late: {late}
    do:
      - create_task: {{title: "morning"}}
"""
    e = Engine(engine, tmp_path, rules)
    ticks = _ticks(e)
    await ticks.tick()  # first seen Monday 11:00 in Berlin
    e.clock.advance(timedelta(days=1, hours=5))  # Tuesday 16:00 in Berlin: 09:00 was missed
    assert await ticks.tick() == 1
    (row,) = await e.shop.actions()
    assert row.due_at.replace(tzinfo=None) == datetime(2026, 3, 3, 8, 30)  # 09:00 CET + 30m, in UTC
    await e.scheduler().run_once()
    (row,) = await e.shop.actions()
    assert row.status == expected, row.last_error
    if expected == "cancelled":
        assert row.last_error == "late by 6:30:00 (late: skip)"


async def test_a_cron_tick_on_time_is_not_late(engine, tmp_path: Path) -> None:
    rules = """
rules:
  - id: morning
    schedule: {cron: "0 9 * * *", timezone: Europe/Berlin}
    late: skip
    do:
      - create_task: {title: "morning"}
"""
    e = Engine(engine, tmp_path, rules)
    ticks = _ticks(e)
    await ticks.tick()
    e.clock.advance(datetime(2026, 3, 3, 8, 0, 1, tzinfo=UTC) - e.clock.now())  # one second after the tick
    assert await ticks.tick() == 1
    await e.scheduler().run_once()
    (row,) = await e.shop.actions()
    assert row.status == "done", row.last_error


async def test_for_each_contact_runs_once_for_a_merged_contact(engine, tmp_path: Path) -> None:
    """A contact merged into another is that other one now: one run for the survivor, not one per former id."""
    from sqlalchemy import update

    from leadhub.store.models import Contact

    rules = """
rules:
  - id: every
    schedule: {cron: "0 10 * * *", timezone: Europe/Moscow}
    for_each: contact
    do:
      - create_task: {title: "hello {{ contact.name }}"}
"""
    e = Engine(engine, tmp_path, rules)
    survivor, _ = await e.shop.customer("a@example.com", "Anna")
    merged, _ = await e.shop.customer("anna@example.com", "Anna K.")
    async with engine.begin() as conn:
        await conn.execute(update(Contact.__table__).where(Contact.id == merged).values(merged_into=survivor))
    ticks = _ticks(e)
    await ticks.tick()
    e.clock.advance(timedelta(days=1))
    assert await ticks.tick() == 1
    await e.scheduler().run_once()
    async with engine.connect() as conn:
        tasks = (await conn.execute(select(Task.__table__.c.contact_id, Task.__table__.c.title))).all()
    assert [tuple(t) for t in tasks] == [(survivor, "hello Anna")]


async def test_a_daily_tick_throttled_for_2d_fires_every_second_day(engine, tmp_path: Path) -> None:
    """Found by an audit: the throttle compared handling times, so a tick handled 4 s earlier in its minute than
    the one two days before was still throttled, and `2d` meant every third day."""
    rules = """
rules:
  - id: daily
    schedule: {cron: "0 10 * * *", timezone: UTC}
    for_each: contact
    throttle: 2d
    do:
      - create_task: {title: "hello {{ contact.name }}"}
"""
    e = Engine(engine, tmp_path, rules)
    await e.shop.customer()
    ticks = _ticks(e)
    await ticks.tick()  # first seen at 10:00 on day 0: counts from here
    fired = []
    for day, second in ((1, 5), (2, 1), (3, 1), (4, 9), (5, 2)):
        e.clock.advance(START + timedelta(days=day, seconds=second) - e.clock.now())
        fired.append(await ticks.tick())
        await e.scheduler().run_once()  # done, so `mode: single` has nothing pending to skip for
    assert fired == [1, 0, 1, 0, 1]


@pytest.mark.parametrize(
    ("first_day", "throttle", "fired"),
    [
        (date(2026, 3, 26), "1d", [1, 1, 1, 1, 1]),  # 28th to 29th 09:00 is 23 h: the 29th was skipped
        (date(2026, 3, 26), "2d", [1, 0, 1, 0, 1]),  # 27th to 29th is 47 h: the 29th and the 30th were skipped
        (date(2026, 3, 26), "24h", [1, 1, 0, 1, 1]),  # hours stay a fixed length
        (date(2026, 10, 22), "1d", [1, 1, 1, 1, 1]),  # 24th to 25th is 25 h
        (date(2026, 10, 22), "2d", [1, 0, 1, 0, 1]),
    ],
)
async def test_a_throttle_in_days_counts_calendar_days_in_the_rules_zone(
    engine, tmp_path: Path, first_day: date, throttle: str, fired: list[int]
) -> None:
    """Found by an audit: `1d` was 24 h, so a daily 09:00 Berlin rule skipped the day after the spring change
    (2026-03-29, 23 h after the day before). Autumn (2026-10-25) has a 25-h day."""
    rules = f"""
rules:
  - id: daily
    schedule: {{cron: "0 9 * * *", timezone: Europe/Berlin}}
    for_each: contact
    throttle: {throttle}
    do:
      - create_task: {{title: "hello {{{{ contact.name }}}}"}}
"""
    berlin = ZoneInfo("Europe/Berlin")
    e = Engine(engine, tmp_path, rules)
    e.clock.advance(datetime.combine(first_day, time(10), berlin) - e.clock.now())
    await e.shop.customer()
    ticks = _ticks(e)
    await ticks.tick()  # first seen the day before, after 09:00: counts from here
    results = []
    for day, second in ((1, 5), (2, 1), (3, 1), (4, 9), (5, 2)):
        e.clock.advance(datetime.combine(first_day + timedelta(days=day), time(9, 0, second), berlin) - e.clock.now())
        results.append(await ticks.tick())
        await e.scheduler().run_once()  # done, so `mode: single` has nothing pending to skip for
    assert results == fired


_FAR_AND_NEAR = """
rules:
  - id: far
    on: lead.created
    {far}
    do:
      - create_task: {{title: "far"}}
  - id: near
    on: lead.created
    do:
      - create_task: {{title: "near"}}
"""


async def test_a_due_time_past_the_year_9999_is_that_rules_evaluation_error(engine, tmp_path: Path) -> None:
    """Found by an audit: the OverflowError aborted the event's transaction, so no rule on it ever acted."""
    from sqlalchemy import update

    from leadhub.store.models import Contact

    e = Engine(engine, tmp_path, _FAR_AND_NEAR.format(far="wait: contact.created_at + 60d"))
    contact_id, lead_id = await e.shop.customer()
    async with engine.begin() as conn:
        far_future = datetime(9999, 12, 1, tzinfo=UTC)
        await conn.execute(update(Contact.__table__).where(Contact.id == contact_id).values(created_at=far_future))
    await e.lead_event(lead_id, contact_id)
    assert [row.rule_id for row in await e.shop.actions()] == ["near"]
    far = next(t for t in await _traces(engine) if t.rule_id == "far")
    assert not far.matched and far.reason.startswith("wait: 9999-12-01T00:00:00+00:00 + 60 days"), far.reason


async def test_a_throttle_window_before_the_year_1_is_that_rules_evaluation_error(engine, tmp_path: Path) -> None:
    e = Engine(engine, tmp_path, _FAR_AND_NEAR.format(far="throttle: 36500d"))
    e.clock.advance(datetime(50, 1, 1, tzinfo=UTC) - e.clock.now())  # a clock gone wrong, 100 years from year 1
    contact_id, lead_id = await e.shop.customer()
    await e.lead_event(lead_id, contact_id)
    assert [row.rule_id for row in await e.shop.actions()] == ["near"]
    far = next(t for t in await _traces(engine) if t.rule_id == "far")
    assert not far.matched and far.reason == "throttle: 0050-01-01T00:00:00+00:00 - 36500d is before the year 1"


async def test_a_cron_rule_that_fails_leaves_the_others_firing(engine, tmp_path: Path) -> None:
    """Found by an audit: the first cron rule that raised ended the pass, so the rules after it never fired."""
    from leadhub.store.connector_state import save_state
    from leadhub.triggers.schedules import STATE_OWNER

    rules = """
rules:
  - id: a-broken
    schedule: "* * * * *"
    do:
      - create_task: {title: "a"}
  - id: b-every-minute
    schedule: "* * * * *"
    mode: parallel
    do:
      - create_task: {title: "b"}
"""
    e = Engine(engine, tmp_path, rules)
    ticks = _ticks(e)
    await ticks.tick()  # first seen: both count from now
    await save_state(engine, STATE_OWNER, "a-broken", {"last": "not a time"}, e.clock.now())
    for _ in range(2):
        e.clock.advance(timedelta(minutes=1))
        assert await ticks.tick() == 1
    assert [row.rule_id for row in await e.shop.actions()] == ["b-every-minute"] * 2
    assert ticks.last_error is not None and ticks.last_error.startswith("rule 'a-broken': ValueError: Invalid")


async def test_a_run_taken_over_from_a_dead_worker_is_judged_by_late(engine, tmp_path: Path) -> None:
    """Found by an audit: the claim a dead worker left counts as attempt 2, which skipped `late` as for a retry,
    so a `late: skip` action claimed just before a crash ran three days late after the restart."""
    from leadhub.store import triggers as store

    e = Engine(engine, tmp_path, _rule(late="skip"))
    contact_id, lead_id = await e.shop.customer()
    await e.lead_event(lead_id, contact_id)
    e.clock.advance(timedelta(hours=1))
    async with engine.begin() as conn:  # claimed on time, then the worker died before running it
        assert len(await store.claim_due(conn, e.clock.now(), 10, e.clock.now() + timedelta(minutes=5))) == 1
    e.clock.advance(timedelta(days=3))  # the daemon stayed down
    assert await e.scheduler().run_once() == 1
    (row,) = await e.shop.actions()
    assert row.status == "cancelled" and row.attempts == 2
    assert row.last_error.startswith("late by 3 days"), row.last_error


async def test_a_backoff_retry_after_downtime_is_not_judged_by_late(engine, tmp_path: Path) -> None:
    rules = """
rules:
  - id: r
    on: lead.created
    late: skip
    do:
      - webhook: {url: "http://127.0.0.1:9/closed"}
"""
    e = Engine(engine, tmp_path, rules)
    contact_id, lead_id = await e.shop.customer()
    await e.lead_event(lead_id, contact_id)
    scheduler = e.scheduler(retry=RetryPolicy(max_attempts=3, base=timedelta(seconds=10)))
    assert await scheduler.run_once() == 1  # fails: retried in about 10 s
    e.clock.advance(timedelta(days=3))  # the daemon was down when the retry fell due
    assert await scheduler.run_once() == 1
    (row,) = await e.shop.actions()
    assert row.status == "pending" and row.attempts == 2 and row.last_error.startswith("webhook:"), row.last_error


async def test_late_skip_runs_a_backlog_that_a_running_scheduler_works_through(engine, tmp_path: Path) -> None:
    """Found by an audit: `late` took the wait for a batch's turn for lateness. 200 actions due at once take four
    batches of 50; with batches of 30 s (a slow receiver) the fourth began 90 s after its due time, and `late: skip`
    cancelled 50 actions although nothing had been down."""
    from aiohttp import web

    e: Engine

    async def slow_receiver(request: web.Request) -> web.Response:
        e.clock.advance(timedelta(milliseconds=600))  # 30 s for a batch of 50
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", slow_receiver)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        rules = f"""
rules:
  - id: r
    on: lead.created
    mode: parallel
    late: skip
    do:
      - webhook: {{url: "http://127.0.0.1:{port}/hook"}}
"""
        e = Engine(engine, tmp_path, rules)
        contact_id, lead_id = await e.shop.customer()
        for n in range(200):
            await e.lead_event(lead_id, contact_id, f"burst-{n}")
        scheduler = e.scheduler(batch=50)
        while await scheduler.run_once():
            pass
    finally:
        await runner.cleanup()
    rows = await e.shop.actions()
    assert {row.status for row in rows} == {"done"}, {row.last_error for row in rows}
    assert e.clock.now() - START >= timedelta(minutes=2)


async def test_a_pause_between_passes_is_downtime_for_late(engine, tmp_path: Path) -> None:
    """The process frozen or the machine asleep: the scheduler object goes on, but nothing ran meanwhile."""
    e = Engine(engine, tmp_path, _rule(late="skip"))
    scheduler = e.scheduler()
    assert await scheduler.run_once() == 0  # running
    contact_id, lead_id = await e.shop.customer()
    await e.lead_event(lead_id, contact_id)
    e.clock.advance(timedelta(hours=3))  # no pass for three hours
    assert await scheduler.run_once() == 1
    (row,) = await e.shop.actions()
    assert (row.status, row.last_error) == ("cancelled", "late by 2:00:00 (late: skip)")


async def test_an_action_that_waited_for_its_rule_is_late_from_its_due_time_to_the_rules_load(
    engine, tmp_path: Path
) -> None:
    e = Engine(engine, tmp_path, _rule(late="skip", wait="1m"))
    scheduler = e.scheduler(unloaded=lambda rule_id: "the rule files have problems")
    assert await scheduler.run_once() == 0  # running
    contact_id, lead_id = await e.shop.customer()
    await e.lead_event(lead_id, contact_id)
    loaded, e.index = e.index, RuleIndex([])  # not loaded meanwhile, as after a start-up with its file broken
    for _ in range(60):  # an hour of passes while the rule file has a problem
        e.clock.advance(timedelta(minutes=1))
        await scheduler.run_once()
    assert scheduler.waiting == {"r": "the rule files have problems"}
    e.index = loaded
    assert await scheduler.run_once() == 1
    (row,) = await e.shop.actions()
    assert (row.status, row.last_error) == ("cancelled", "late by 0:59:00 (late: skip)")


@pytest.mark.parametrize(
    ("wait", "due_after_event", "runs_now"),
    [("2h", timedelta(hours=2), True), ("5h", timedelta(hours=5), False)],
)
async def test_an_events_wait_counts_from_when_it_happened_not_from_when_it_is_handled(
    engine, tmp_path: Path, wait: str, due_after_event: timedelta, runs_now: bool
) -> None:
    """Found by an audit: after a backlog (NATS away, the daemon down) every wait was shifted by the delay, so a
    task "2 hours after the lead" came 5 hours after it."""
    e = Engine(engine, tmp_path, _rule(wait=wait))
    scheduler = e.scheduler()
    assert await scheduler.run_once() == 0  # running all along: only the queue was away
    contact_id, lead_id = await e.shop.customer()
    happened = e.clock.now() - timedelta(hours=3)
    await e.lead_event(lead_id, contact_id, occurred_at=happened)
    (row,) = await e.shop.actions()
    assert aware(row.due_at) == happened + due_after_event
    assert await scheduler.run_once() == (1 if runs_now else 0)
    (row,) = await e.shop.actions()
    assert row.status == ("done" if runs_now else "pending"), row.last_error


async def test_a_future_occurred_at_counts_from_now(engine, tmp_path: Path) -> None:
    """A producer's clock ahead of ours: the wait is not lengthened by the skew."""
    e = Engine(engine, tmp_path, _rule(wait="2h"))
    contact_id, lead_id = await e.shop.customer()
    await e.lead_event(lead_id, contact_id, occurred_at=e.clock.now() + timedelta(minutes=30))
    (row,) = await e.shop.actions()
    assert aware(row.due_at) == e.clock.now() + timedelta(hours=2)


async def test_a_business_hours_wait_counts_from_when_the_event_happened(engine, tmp_path: Path) -> None:
    """Friday 17:50 in Moscow + 15m is after closing: due at Monday's 09:00 opening, which has passed when the
    event is handled at 13:00 that Monday; counted from the handling it was 13:15."""
    rules = """
business_hours:
  office: {timezone: Europe/Moscow, days: {mon-fri: "09:00-18:00"}}
rules:
  - id: r
    on: lead.created
    wait: {after: 15m, business_hours: office}
    do:
      - create_task: {title: "call back"}
"""
    e = Engine(engine, tmp_path, rules)
    contact_id, lead_id = await e.shop.customer()
    await e.lead_event(lead_id, contact_id, occurred_at=datetime(2026, 2, 27, 14, 50, tzinfo=UTC))
    (row,) = await e.shop.actions()
    assert aware(row.due_at) == datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("late", "expected", "error"),
    [
        ("run", "done", None),
        ("skip", "cancelled", "late by 1:00:00 (late: skip)"),
        ("{run_if_within: 2h}", "done", None),
        ("{run_if_within: 30m}", "cancelled", "late by 1:00:00 (late: run_if_within 30m)"),
    ],
)
async def test_an_event_handled_after_its_wait_is_judged_by_late_in_a_running_scheduler(
    engine, tmp_path: Path, late: str, expected: str, error: str | None
) -> None:
    """The queue was away, the scheduler was not: the action was due an hour before it could be scheduled, which
    is downtime for `late` as when the whole daemon was down."""
    e = Engine(engine, tmp_path, _rule(late=late, wait="2h"))
    scheduler = e.scheduler()
    contact_id, lead_id = await e.shop.customer()
    happened = e.clock.now()
    for _ in range(180):  # three hours of passes a minute apart: no downtime of the scheduler
        assert await scheduler.run_once() == 0
        e.clock.advance(timedelta(minutes=1))
    await e.lead_event(lead_id, contact_id, occurred_at=happened)  # due at +2h, handled at +3h
    assert await scheduler.run_once() == 1
    (row,) = await e.shop.actions()
    assert (row.status, row.last_error) == (expected, error)


async def test_mode_restart_keeps_the_run_of_a_later_event_handled_first(engine, tmp_path: Path) -> None:
    """Found by an audit: an event handled after a later one for the same subject (redelivered after a store error)
    cancelled the later event's run and scheduled its own, due from its earlier time: the older change won."""
    e = Engine(engine, tmp_path, _rule("restart"))
    contact_id, lead_id = await e.shop.customer()
    earlier = START
    e.clock.advance(timedelta(minutes=10))
    await e.lead_event(lead_id, contact_id, "later")
    await e.lead_event(lead_id, contact_id, "earlier", occurred_at=earlier)
    (row,) = await e.shop.actions()
    assert (row.event_id, row.status) == ("later", "pending")
    trace = next(t for t in await _traces(engine) if t.event_id == "earlier")
    assert trace.reason == "skipped: a run of a later event for the same subject is pending (mode: restart)"


async def test_a_throttle_per_an_object_this_event_lacks_is_said_in_the_trace(engine, tmp_path: Path) -> None:
    """`throttle: {per: lead}` on an inquiry that opened no lead had no key: every such event ran, and the trace
    said only `matched`, as if the throttle had been checked. The runs still go (nothing to count them by), and the
    trace says the throttle did not apply."""
    rules = """
rules:
  - id: t
    on: inquiry.received
    throttle: {per: lead, for: 1d}
    do: [{create_task: {title: x}}]
"""
    e = Engine(engine, tmp_path, rules)
    contact_id, _ = await e.shop.customer()
    for n in (1, 2):
        event = {
            "id": f"ev-no-lead-{n}",
            "type": "inquiry.received",
            "subject_id": None,
            "data": {"contact_id": contact_id},
        }
        await e.matcher.handle(event)
    assert len(await e.shop.actions()) == 2
    traces = await _traces(engine)
    assert [(t.matched, t.reason) for t in traces] == [
        (True, "not throttled: this event has no lead (throttle per lead)")
    ] * 2
    assert all(row.last_error is None for row in await e.shop.actions()), "a pending run has no error"
