"""An event against the rules: traces for every evaluation and the scheduled actions, written in one transaction."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from leadhub.durations import parse_duration, whole_days
from leadhub.ids import new_id
from leadhub.store import trigger_data
from leadhub.store import triggers as store
from leadhub.triggers.clock import Clock
from leadhub.triggers.compile import LATE_GRACE, CompiledRule, EvaluationError
from leadhub.triggers.context import aware, build_context
from leadhub.triggers.engine import Evaluation, RuleIndex, evaluate, evaluate_all
from leadhub.triggers.events import event_objects
from leadhub.triggers.hours import second_occurrence, wall_to_utc

log = structlog.get_logger("leadhub.triggers")


def event_from_message(body: bytes) -> dict[str, Any]:
    """The EVENTS message body (`{"id","type","subject_id","occurred_at","data"}`); ValueError if it is not one."""
    event = json.loads(body)
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        raise ValueError("not an event: needs string `id` and `type`")
    if not isinstance(event.get("data"), dict):
        event["data"] = {}
    return event


def _context_event(event: dict[str, Any]) -> dict[str, Any]:
    occurred = event.get("occurred_at")
    if isinstance(occurred, str):
        try:
            occurred = datetime.fromisoformat(occurred)
        except ValueError:
            occurred = None
    return {**event, "occurred_at": occurred}


def wait_start(event: dict[str, Any], now: datetime) -> datetime | None:
    """What an event rule's relative `wait` counts from: when the event happened, so an event handled late (NATS or
    the store away, the daemon down, a redelivery) is due when it would have been, and `late` judges it. None (now)
    for a cron tick, which counts from when it is handled unless fired late (schedules.py passes the tick), for an
    event without a readable `occurred_at`, and for one in the future (another clock ahead of ours)."""
    if event.get("type") == "schedule":
        return None
    occurred = _context_event(event)["occurred_at"]
    if not isinstance(occurred, datetime):
        return None
    occurred = aware(occurred).astimezone(UTC)  # naive: UTC, as the outbox relay writes it
    return occurred if occurred <= now else None


class Matcher:
    def __init__(self, engine: AsyncEngine, rules: Callable[[], RuleIndex], clock: Clock) -> None:
        self.engine = engine
        self.rules = rules
        self.clock = clock

    async def handle(
        self, event: dict[str, Any], *, rules: list[CompiledRule] | None = None, start: datetime | None = None
    ) -> int:
        """Evaluate the listening rules (or `rules`); the number of actions scheduled (0 for a redelivered event).

        `start`: what a relative `wait` counts from, when not now (a cron tick fired after downtime); for an event
        it is when the event happened (`wait_start`).
        """
        listeners = self.rules().listeners(event["type"]) if rules is None else rules
        if not listeners:
            return 0
        now = self.clock.now()
        start = start.astimezone(UTC) if start is not None else wait_start(event, now)
        async with self.engine.begin() as conn:
            if await store.event_evaluated(conn, event["id"]):
                return 0
            objects = await trigger_data.load_objects(conn, event["data"], event_objects(event))
            context = build_context(_context_event(event), objects, now)
            traces, rows = [], []
            evaluations = (
                evaluate_all(self.rules(), event["type"], context, now, start)
                if rules is None
                else [evaluate(rule, context, now, start) for rule in listeners]
            )
            await store.lock_run_keys(conn, _run_keys(evaluations, event, context))
            for evaluation in evaluations:
                rule = evaluation.rule
                if evaluation.matched:
                    try:
                        evaluation.reason = await self._plan(conn, rule, event, context, evaluation, now, rows)
                    except EvaluationError as exc:  # this rule only: the event's other rules act
                        evaluation.matched, evaluation.reason = False, str(exc)
                traces.append(_trace(rule, event, evaluation, now))
            await store.write_traces(conn, traces)
            scheduled = await store.schedule(conn, rows)
        return scheduled

    async def _plan(  # noqa: PLR0917
        self,
        conn: AsyncConnection,
        rule: CompiledRule,
        event: dict[str, Any],
        context: dict[str, Any],
        evaluation: Evaluation,
        now: datetime,
        rows: list[dict[str, Any]],
    ) -> str | None:
        """Apply `mode` and `throttle`, then add the rule's actions to `rows`; a reason when nothing is scheduled.

        Raises EvaluationError, before changing anything, when the throttle's window cannot be worked out.
        """
        throttle = throttle_key(rule, context)
        since = throttle_since(rule, event, now) if throttle else None
        group = group_key(rule, event)
        live = await store.live_in_group(conn, group, other_than_event=event["id"])
        if live and rule.rule.mode == "single":
            return "skipped: an earlier run of this rule for the same subject is still pending (mode: single)"
        if live and rule.rule.mode == "restart":
            await store.cancel(conn, live, f"restarted by event {event['id']} (mode: restart)", now)
        if throttle and await store.throttled(conn, throttle, since):  # type: ignore[arg-type]
            return f"skipped: throttled ({throttle}, once per {rule.rule.throttle.period})"  # type: ignore[union-attr]
        due = evaluation.due_at or now
        for index, spec in enumerate(rule.rule.do):
            rows.append(
                {
                    "id": new_id(),
                    "key": f"{rule.id}:{event['id']}:{index}",
                    "rule_id": rule.id,
                    "action_index": index,
                    "action_type": spec.type,
                    "do_digest": rule.do_digest,
                    "event_id": event["id"],
                    "event_type": event["type"],
                    "event": event,
                    "group_key": group,
                    "throttle_key": throttle,
                    "due_at": due,
                    "status": "pending",
                    "attempts": 0,
                    "lease_until": None,
                    "last_error": None,
                    "result": None,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        return None


def group_key(rule: CompiledRule, event: dict[str, Any]) -> str:
    """What `mode` looks at: the rule's runs for the event's subject."""
    return f"{rule.id}:{event.get('subject_id') or event['id']}"


def _run_keys(evaluations: list[Evaluation], event: dict[str, Any], context: dict[str, Any]) -> set[str]:
    """The group and throttle keys the matched rules will check, to lock before checking."""
    keys = set()
    for evaluation in evaluations:
        if evaluation.matched:
            keys.add(group_key(evaluation.rule, event))
            keys.add(throttle_key(evaluation.rule, context) or "")
    keys.discard("")
    return keys


def throttle_key(rule: CompiledRule, context: dict[str, Any]) -> str | None:
    throttle = rule.rule.throttle
    if throttle is None:
        return None
    if throttle.per == "rule":
        return f"{rule.id}:rule"
    subject = context.get(throttle.per)
    subject_id = getattr(subject, "id", None) if subject is not None else None
    return f"{rule.id}:{throttle.per}:{subject_id}" if subject_id else None


def throttle_since(rule: CompiledRule, event: dict[str, Any], now: datetime) -> datetime:
    """Since when an earlier run throttles this one; EvaluationError when that is before the year 1.

    A period in whole days (or weeks) counts calendar days in the rule's time zone (a cron rule's `timezone`, else
    UTC): a daily 09:00 rule with `throttle: 1d` runs the day after a spring change, 23 hours later. Others are a
    fixed length.
    """
    period = rule.rule.throttle.period  # type: ignore[union-attr]
    days = whole_days(period)
    schedule = rule.rule.schedule
    try:
        if days is None:
            since = now - parse_duration(period)
        else:
            since = same_wall_time_days_before(now, days, ZoneInfo(schedule.timezone if schedule else "UTC"))
    except OverflowError:
        raise EvaluationError(f"throttle: {now.isoformat()} - {period} is before the year 1") from None
    if event.get("type") == "schedule":  # ticks are handled a few seconds apart: `2d` must mean every 2nd tick
        since += LATE_GRACE  # the delay that still counts as on time (schedules.py; `late: skip`)
    return since


def same_wall_time_days_before(now: datetime, days: int, zone: ZoneInfo) -> datetime:
    """The instant (UTC) the wall clock in `zone` showed `days` calendar days before `now` what it shows now: where
    that time was skipped (spring), the instant the clock jumped past it; where it came twice (autumn), the later."""
    wall = now.astimezone(zone).replace(tzinfo=None) - timedelta(days=days)
    return second_occurrence(wall.date(), wall.time(), zone) or wall_to_utc(wall.date(), wall.time(), zone)


def _trace(rule: CompiledRule, event: dict[str, Any], evaluation: Evaluation, now: datetime) -> dict[str, Any]:
    return {
        "id": new_id(),
        "rule_id": rule.id,
        "event_id": event["id"],
        "event_type": event["type"],
        "matched": evaluation.matched,
        "reason": evaluation.reason,
        "conditions": evaluation.conditions,
        "created_at": now,
    }
