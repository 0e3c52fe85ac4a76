"""`throttle`: the key and window a run is throttled by, and the release of runs held back by one later cancelled."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from leadhub.durations import parse_duration, whole_days
from leadhub.store import triggers as store
from leadhub.triggers.compile import LATE_GRACE, CompiledRule, EvaluationError
from leadhub.triggers.context import aware
from leadhub.triggers.engine import RuleIndex
from leadhub.triggers.hours import second_occurrence, wall_to_utc

log = structlog.get_logger("leadhub.triggers")


def throttle_key(rule: CompiledRule, context: dict[str, Any]) -> str | None:
    throttle = rule.rule.throttle
    if throttle is None:
        return None
    if throttle.per == "rule":
        return f"{rule.id}:rule"
    subject = context.get(throttle.per)
    subject_id = getattr(subject, "id", None) if subject is not None else None
    return f"{rule.id}:{throttle.per}:{subject_id}" if subject_id else None


def unthrottled(rule: CompiledRule, context: dict[str, Any]) -> str | None:
    """Why a rule with a throttle runs unthrottled for this event: the object it is throttled per is none here (an
    inquiry that opened no lead, an order first heard of through a refund has no contact). Nothing to count runs by,
    so the run goes; the trace says so rather than `matched` alone, as if the throttle had been checked."""
    throttle = rule.rule.throttle
    if throttle is None or throttle.per == "rule" or throttle_key(rule, context) is not None:
        return None
    return f"not throttled: this event has no {throttle.per} (throttle per {throttle.per})"


def throttled_at(occurred: datetime | None, now: datetime) -> datetime:
    """When a run counts for its throttle (stored as its `occurred_at`): when its event occurred, so that events a
    backlog (the daemon down, the consumer behind) handles seconds apart throttle each other as they happened.

    Never later than `now`, when it is handled: a clock ahead of ours (another replica's, a provider's) would hold
    the key for that much longer than the period. Long ago is kept: a backlog may be days old, and an event handled
    after a later one acted is throttled by it (`store.throttled_by` counts runs from the window's start on). `now`
    for an event without a readable `occurred_at`.
    """
    if occurred is None:
        return now
    return min(aware(occurred).astimezone(UTC), now)


def throttle_since(rule: CompiledRule, event: dict[str, Any], at: datetime) -> datetime:
    """Since when (by when their events occurred) an earlier run throttles the run of `event`, which counts at `at`
    (`throttled_at`); EvaluationError when that is before the year 1.

    A period in whole days (or weeks) counts calendar days in the rule's time zone (a cron rule's `timezone`, else
    UTC): a daily 09:00 rule with `throttle: 1d` runs the day after a spring change, 23 hours later. Others are a
    fixed length.
    """
    period = rule.rule.throttle.period  # type: ignore[union-attr]
    days = whole_days(period)
    schedule = rule.rule.schedule
    try:
        if days is None:
            since = at - parse_duration(period)
        else:
            since = same_wall_time_days_before(at, days, ZoneInfo(schedule.timezone if schedule else "UTC"))
    except OverflowError:
        raise EvaluationError(f"throttle: {at.isoformat()} - {period} is before the year 1") from None
    if event.get("type") == "schedule":  # the tick a period before is at the window's start: `2d` is every 2nd tick
        since += LATE_GRACE  # the delay that still counts as on time (schedules.py; `late: skip`)
    return since


def same_wall_time_days_before(now: datetime, days: int, zone: ZoneInfo) -> datetime:
    """The instant (UTC) the wall clock in `zone` showed `days` calendar days before `now` what it shows now: where
    that time was skipped (spring), the instant the clock jumped past it; where it came twice (autumn), the later."""
    wall = now.astimezone(zone).replace(tzinfo=None) - timedelta(days=days)
    return second_occurrence(wall.date(), wall.time(), zone) or wall_to_utc(wall.date(), wall.time(), zone)


async def release_throttled(
    conn: AsyncConnection, cancelled: Mapping[str, store.Cancelled], rules: RuleIndex, now: datetime
) -> int:
    """After runs of these throttle keys were cancelled: make `pending` the runs they held back that nothing
    throttles any more; the number of runs released. Call with the keys locked (`store.lock_run_keys`).

    A run released after its own due time is due when the hold ended (`hold_ended`): `late` judges the delay from
    then, not the time it was held back, through no fault of its own.

    A held run is judged as when it was scheduled, by when its event occurred and its rule's throttle as loaded now:
    released when no other run acted for the key for an event from its window's start on (one that occurred after
    it counts too, however late, as in the matcher for an event handled after a later one). Oldest event first, so
    a run released holds back the later ones in its window. Only held runs scheduled a period (and a day, for
    calendar days) before the cancelled runs or later are looked at: a run is held back only by runs already
    scheduled when it was, and a key's held runs add up over the years. A run whose rule is not loaded or has no
    throttle now is left held.
    """
    released = 0
    for key, runs in sorted(cancelled.items()):
        rule = rules.by_id.get(key.split(":", 1)[0])  # a rule id has no `:`
        if rule is None or rule.rule.throttle is None:
            continue
        try:
            oldest = runs.created - parse_duration(rule.rule.throttle.period) - timedelta(days=1)
        except OverflowError:
            oldest = datetime.min.replace(tzinfo=UTC)
        for held in await store.held_events(conn, key, oldest):
            try:
                since = throttle_since(rule, held.event, aware(held.occurred_at))
            except EvaluationError:
                continue
            if await store.throttled_by(conn, key, since, other_than_event=held.event_id):
                continue
            count = await store.release_held(conn, key, held.event_id, now, due_from=hold_ended(runs, now))
            log.info("throttled run released: the run that throttled it was cancelled", rule=rule.id, runs=count)
            released += count
    return released


def hold_ended(cancelled: store.Cancelled, now: datetime) -> datetime:
    """When the runs held back by `cancelled` would have been free had the scheduler been running: when those are
    cancelled (now), or when they were due if sooner. Cancelled when they are taken (`unless`, `late`, an address
    suppressed), they are cancelled at their due time unless the scheduler was down then: downtime after their due
    time is the held runs' lateness as much as theirs. A restart cancels them before their due time: now."""
    return min(now, aware(cancelled.due).astimezone(UTC))
