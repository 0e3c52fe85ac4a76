"""`leadhub rules backtest`: stored events replayed against the current rules, counting how often each would fire.

Read-only. Objects are loaded as they are now (an order refunded since then reads as refunded). `if`,
`throttle` (by event time) and `mode` (a run is pending from its event until its due time) are
simulated as the matcher applies them; `unless` is evaluated at each run's due time against the
objects as they are now, so it counts what it would cancel today (exact for runs already due).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.durations import parse_duration
from leadhub.store import trigger_data
from leadhub.triggers.compile import CompiledRule, EvaluationError
from leadhub.triggers.context import aware, build_context
from leadhub.triggers.engine import RuleIndex, evaluate
from leadhub.triggers.events import event_objects
from leadhub.triggers.throttle import throttle_key


@dataclass
class RuleCount:
    rule_id: str
    events: int = 0
    matched: int = 0
    fired: int = 0  # runs scheduled (each would run its actions unless cancelled)
    throttled: int = 0
    skipped: int = 0  # mode: single, an earlier run still pending
    restarted: int = 0  # mode: restart, an earlier pending run replaced (it never runs)
    unless: int = 0  # runs `unless` would cancel at their due time
    errors: int = 0


@dataclass
class _Run:
    at: datetime
    due: datetime
    cancelled: bool = False


@dataclass
class _State:
    """What the replay remembers between events: runs per mode group and per throttle key."""

    groups: dict[str, list[_Run]] = field(default_factory=dict)
    throttles: dict[str, list[_Run]] = field(default_factory=dict)


async def backtest(engine: AsyncEngine, index: RuleIndex, since: datetime, *, limit: int = 100_000) -> list[RuleCount]:
    counts = {rule.id: RuleCount(rule.id) for rule in index.rules if rule.rule.on}
    state = _State()
    async with engine.connect() as conn:
        rows = await trigger_data.events_since(conn, since, list(index.by_type), limit)
        for row in rows:
            at = aware(row["created_at"])
            event = {"id": row["id"], "type": row["type"], "subject_id": row["subject_id"], "occurred_at": at}
            event["data"] = row["data"] or {}
            objects = await trigger_data.load_objects(conn, event["data"], event_objects(event))
            context = build_context(event, objects, at)
            for rule in index.listeners(row["type"]):
                _replay(rule, event, context, at, counts[rule.id], state)
    return list(counts.values())


def _replay(  # noqa: PLR0917
    rule: CompiledRule, event: dict, context: dict, at: datetime, count: RuleCount, state: _State
) -> None:
    """One rule against one event, in the matcher's order: conditions, mode, throttle, then `unless` when due."""
    count.events += 1
    evaluation = evaluate(rule, context, at)
    if evaluation.reason and evaluation.reason.startswith("condition could not"):
        count.errors += 1
    if not evaluation.matched:
        return
    count.matched += 1
    group = state.groups.setdefault(f"{rule.id}:{event.get('subject_id') or event['id']}", [])
    pending = [run for run in group if not run.cancelled and run.due > at]
    if pending and rule.rule.mode == "single":
        count.skipped += 1
        return
    if pending and rule.rule.mode == "restart":
        for run in pending:
            run.cancelled = True
        count.restarted += len(pending)
    key = throttle_key(rule, context)
    if key and rule.rule.throttle:
        period = parse_duration(rule.rule.throttle.period)
        if any(not run.cancelled and at - run.at < period for run in state.throttles.get(key, [])):
            count.throttled += 1
            return
    run = _Run(at, evaluation.due_at or at)
    group.append(run)
    if key:
        state.throttles.setdefault(key, []).append(run)
    count.fired += 1
    if rule.unless is not None and _unless_cancels(rule, context, run.due):
        count.unless += 1


def _unless_cancels(rule: CompiledRule, context: dict, due: datetime) -> bool:
    try:
        return bool(rule.unless({**context, "now": due}))  # type: ignore[misc]
    except EvaluationError:
        return False  # the scheduler records this as failed, not cancelled


def format_counts(counts: list[RuleCount], since: datetime) -> str:
    names = ("events", "matched", "fired", "throttled", "skipped", "restarted", "unless", "errors")
    lines = [
        f"events since {since.isoformat()}",
        f"{'rule':30} " + " ".join(f"{name:>9}" for name in names),
    ]
    lines += [f"{c.rule_id:30} " + " ".join(f"{getattr(c, name):9}" for name in names) for c in counts]
    lines.append(
        "fired: runs scheduled; skipped: mode single, a run pending; restarted: pending runs replaced (mode restart);"
    )
    lines.append("unless: runs it would cancel when due, judged on the objects as they are now")
    return "\n".join(lines)
