"""An event against the rules: traces for every evaluation and the scheduled actions, written in one transaction."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from leadhub.ids import new_id
from leadhub.store import trigger_data
from leadhub.store import triggers as store
from leadhub.triggers.clock import Clock
from leadhub.triggers.compile import CompiledRule, EvaluationError
from leadhub.triggers.context import aware, build_context
from leadhub.triggers.engine import Evaluation, RuleIndex, evaluate, evaluate_all
from leadhub.triggers.events import event_objects
from leadhub.triggers.throttle import release_throttled, throttle_key, throttle_since, throttled_at, unthrottled

log = structlog.get_logger("leadhub.triggers")


def event_from_message(body: bytes) -> dict[str, Any]:
    """The EVENTS message body (`{"id","type","subject_id","occurred_at","data"}`); ValueError if it is not one
    (RecursionError from json for one nested past the parser's stack)."""
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
            await _lock_run_keys(conn, evaluations, event, context)
            restarted: dict[str, store.Cancelled] = {}  # the throttle keys of runs `mode: restart` cancelled
            for evaluation in evaluations:
                rule = evaluation.rule
                if evaluation.matched:
                    try:
                        evaluation.reason = await self._plan(
                            conn, rule, event, context, evaluation, now, rows, restarted
                        )
                    except EvaluationError as exc:  # this rule only: the event's other rules act
                        evaluation.matched, evaluation.reason = False, str(exc)
                traces.append(_trace(rule, event, evaluation, now))
            await store.write_traces(conn, traces)
            scheduled = await store.schedule(conn, rows)
            if restarted:  # after the new runs are in: they may be what holds the held ones back now
                await release_throttled(conn, restarted, self.rules(), now)
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
        restarted: dict[str, store.Cancelled],
    ) -> str | None:
        """Apply `mode` and `throttle`, then add the rule's actions to `rows`; a reason when nothing runs (or when
        the throttle could not apply: `unthrottled`).

        A run throttled by one still waiting is added `throttled`, held back: should that one be cancelled (its
        `unless`, a restart), it is released (triggers/throttle.py). Raises EvaluationError, before changing
        anything, when the throttle's window cannot be worked out.
        """
        throttle = throttle_key(rule, context)
        occurred = throttled_at(_occurred(event), now)  # a backlog throttles as its events happened
        since = throttle_since(rule, event, occurred) if throttle else None
        group = group_key(rule, event)
        live = await store.live_in_group(conn, group, other_than_event=event["id"])
        if live and rule.rule.mode == "single":
            return "skipped: an earlier run of this rule for the same subject is still pending (mode: single)"
        if rule.rule.mode == "restart":  # runs held back for the subject are replaced too: they would be stale
            replaced = await store.live_in_group(
                conn, group, other_than_event=event["id"], statuses=(*store.LIVE, store.HELD)
            )
            if _happened_before_any(event, await store.events_of(conn, replaced)):
                return "skipped: a run of a later event for the same subject is pending (mode: restart)"
            for key, runs in (await store.throttle_keys(conn, replaced)).items():
                restarted[key] = runs.with_(restarted.get(key))
            await store.cancel(conn, replaced, f"restarted by event {event['id']} (mode: restart)", now)
        status, reason = "pending", None
        acted = await store.throttled_by(conn, throttle, since) if throttle else set()  # type: ignore[arg-type]
        if acted:
            reason = f"skipped: throttled ({throttle}, once per {rule.rule.throttle.period})"  # type: ignore[union-attr]
            if not acted & set(store.LIVE):
                return reason
            status, reason = store.HELD, f"{reason}; held: runs if the run that throttles it is cancelled"
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
                    "occurred_at": occurred,
                    "due_at": due,
                    "status": status,
                    "attempts": 0,
                    "lease_until": None,
                    "last_error": reason,
                    "result": None,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        return reason or unthrottled(rule, context)


def _happened_before_any(event: dict[str, Any], others: list[dict[str, Any]]) -> bool:
    """Whether `event` happened before one of `others` (by `occurred_at`): handled late (redelivered after a store
    error), it must not replace the run of a later change under `mode: restart`. Unknown times: not before."""
    at = _occurred(event)
    return at is not None and any((other_at := _occurred(other)) is not None and at < other_at for other in others)


def _occurred(event: dict[str, Any]) -> datetime | None:
    occurred = _context_event(event)["occurred_at"]
    return aware(occurred) if isinstance(occurred, datetime) else None


def group_key(rule: CompiledRule, event: dict[str, Any]) -> str:
    """What `mode` looks at: the rule's runs for the event's subject."""
    return f"{rule.id}:{event.get('subject_id') or event['id']}"


async def _lock_run_keys(
    conn: AsyncConnection, evaluations: list[Evaluation], event: dict[str, Any], context: dict[str, Any]
) -> None:
    """Lock every key the matched rules will check or whose held runs they may release, before checking anything:
    the group keys, then the throttle keys, the event's and those of the runs a `mode: restart` may cancel.

    A restart cancels the subject's runs whatever throttle key they carry (after a contact merge, not the one this
    event computes), and the release of the runs they held needs that key locked. Taken afterwards, out of order,
    two events each holding the key the other then wanted deadlocked. With the groups locked, no run can join
    them before the cancellation (`store.group_throttle_keys`).
    """
    matched = [evaluation.rule for evaluation in evaluations if evaluation.matched]
    await store.lock_run_keys(conn, {group_key(rule, event) for rule in matched})
    restarting = [group_key(rule, event) for rule in matched if rule.rule.mode == "restart"]
    throttles = {key for rule in matched if (key := throttle_key(rule, context)) is not None}
    await store.lock_run_keys(conn, throttles | await store.group_throttle_keys(conn, restarting))


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
