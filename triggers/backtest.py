"""`leadhub rules backtest`: stored events replayed against the current rules, counting how often each would fire.

Read-only. Objects are loaded as they are now (an order refunded since then reads as refunded). `if`,
`throttle` (by event time, as the matcher counts it) and `mode` (a run is pending from its event until its
due time) are simulated as the matcher applies them; `unless` is evaluated at each run's due time against the
objects as they are now, so it counts what it would cancel today (exact for runs already due). A run
throttled by one still pending is held, and fires if `unless` or a restart cancels that one (as the
scheduler releases it): it is counted as fired then, not as throttled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from leadhub.store import trigger_data
from leadhub.triggers.compile import CompiledRule, EvaluationError
from leadhub.triggers.context import aware, build_context
from leadhub.triggers.engine import RuleIndex, evaluate
from leadhub.triggers.events import event_objects
from leadhub.triggers.throttle import throttle_key, throttle_since


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
    cancelled: bool = False  # replaced by a restart
    unless: bool = False  # `unless` cancels it at its due time

    def acts(self, now: datetime) -> bool:
        """Whether, as of `now`, the run still acts for its throttle key (it is not cancelled by then)."""
        return not self.cancelled and not (self.unless and self.due <= now)


@dataclass
class _Held:
    """A run throttled by one still pending: it fires if that one is cancelled (`_release`)."""

    rule: CompiledRule
    at: datetime
    due: datetime
    since: datetime  # its throttle window's start (`throttle_since`, as the scheduler judges it when releasing)
    context: dict
    group: list[_Run]
    count: RuleCount
    replaced: bool = False


@dataclass
class _State:
    """What the replay remembers between events: runs per mode group and per throttle key, runs held back."""

    groups: dict[str, list[_Run]] = field(default_factory=dict)
    throttles: dict[str, list[_Run]] = field(default_factory=dict)
    held: dict[str, list[_Held]] = field(default_factory=dict)


async def backtest(engine: AsyncEngine, index: RuleIndex, since: datetime, *, page: int = 1_000) -> list[RuleCount]:
    """Every stored event of the window, read `page` at a time: a long window is counted whole, never cut."""
    counts = {rule.id: RuleCount(rule.id) for rule in index.rules if rule.rule.on}
    state = _State()
    async with engine.connect() as conn:
        async for row in _events(conn, since, list(index.by_type), page):
            at = aware(row["created_at"])
            event = {"id": row["id"], "type": row["type"], "subject_id": row["subject_id"], "occurred_at": at}
            event["data"] = row["data"] or {}
            objects = await trigger_data.load_objects(conn, event["data"], event_objects(event))
            context = build_context(event, objects, at)
            for rule in index.listeners(row["type"]):
                _replay(rule, event, context, at, counts[rule.id], state)
    for key in state.held:  # a holder that `unless` cancels in the future releases its held runs then
        _release(key, datetime.max.replace(tzinfo=since.tzinfo), state)
    return list(counts.values())


async def _events(conn: AsyncConnection, since: datetime, types: list[str], page: int) -> AsyncIterator[dict]:
    after = None
    while rows := await trigger_data.events_since(conn, since, types, page, after=after):
        for row in rows:
            yield row
        after = rows[-1]["id"]


def _replay(  # noqa: PLR0917
    rule: CompiledRule, event: dict, context: dict, at: datetime, count: RuleCount, state: _State
) -> None:
    """One rule against one event, in the matcher's order: conditions, mode, throttle, then `unless` when due."""
    count.events += 1
    evaluation = evaluate(rule, context, at)
    if not evaluation.matched:
        if not (evaluation.reason or "").startswith("condition is false"):
            count.errors += 1  # a condition that raised, or a due time that cannot be worked out (an empty anchor)
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
    if key and rule.rule.mode == "restart":  # the subject's held runs are replaced too
        for held in state.held.get(key, []):
            held.replaced = held.replaced or held.group is group
    due = evaluation.due_at or at
    if key and rule.rule.throttle:
        _release(key, at, state)
        try:  # the matcher's window: calendar days in the rule's zone, a schedule tick's grace
            since = throttle_since(rule, event, at)
        except EvaluationError:
            count.errors += 1
            return
        blockers = [run for run in state.throttles.get(key, []) if run.acts(at) and run.at >= since]
        if blockers:
            count.throttled += 1
            if any(run.due > at for run in blockers):  # one still pending: held, in case it is cancelled
                state.held.setdefault(key, []).append(_Held(rule, at, due, since, context, group, count))
            return
    _fire(rule, context, _Run(at, due), group, key, count, state)


def _fire(  # noqa: PLR0917
    rule: CompiledRule, context: dict, run: _Run, group: list[_Run], key: str | None, count: RuleCount, state: _State
) -> None:
    group.append(run)
    if key:
        state.throttles.setdefault(key, []).append(run)
    count.fired += 1
    if rule.unless is not None and _unless_cancels(rule, context, run.due):
        count.unless += 1
        run.unless = True


def _release(key: str, now: datetime, state: _State) -> None:
    """Fire the held runs of `key` that no run acting as of `now` throttles any more (a run from the start of
    their window on, or after them), oldest first, as the scheduler releases them when their holder is cancelled.
    One throttled by a run that has acted for good (its due time passed) is held for good: forgotten."""
    still = []
    for held in state.held.get(key, []):
        if held.replaced:
            continue
        blockers = [run for run in state.throttles.get(key, []) if run.acts(now) and run.at >= held.since]
        if any(run.due <= now for run in blockers):
            continue
        if blockers:
            still.append(held)
            continue
        held.count.throttled -= 1
        _fire(held.rule, held.context, _Run(held.at, held.due), held.group, key, held.count, state)
    state.held[key] = still


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
