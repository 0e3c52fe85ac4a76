"""`leadhub rules backtest`: stored events replayed against the current rules, counting how often each would fire.

Read-only. Objects are loaded as they are now (an order refunded since then reads as refunded), and
`throttle` is applied in memory by event time; `mode` and `unless` are not simulated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.durations import parse_duration
from leadhub.store import trigger_data
from leadhub.triggers.context import aware, build_context
from leadhub.triggers.engine import RuleIndex, evaluate
from leadhub.triggers.events import EVENT_OBJECTS
from leadhub.triggers.matcher import throttle_key


@dataclass
class RuleCount:
    rule_id: str
    events: int = 0
    matched: int = 0
    fired: int = 0
    throttled: int = 0
    errors: int = 0


async def backtest(engine: AsyncEngine, index: RuleIndex, since: datetime, *, limit: int = 100_000) -> list[RuleCount]:
    counts = {rule.id: RuleCount(rule.id) for rule in index.rules if rule.rule.on}
    last_fired: dict[str, datetime] = {}
    async with engine.connect() as conn:
        rows = await trigger_data.events_since(conn, since, list(index.by_type), limit)
        for row in rows:
            at = aware(row["created_at"])
            event = {"id": row["id"], "type": row["type"], "subject_id": row["subject_id"], "occurred_at": at}
            event["data"] = row["data"] or {}
            objects = await trigger_data.load_objects(conn, event["data"], EVENT_OBJECTS.get(row["type"], ()))
            context = build_context(event, objects, at)
            for rule in index.listeners(row["type"]):
                count = counts[rule.id]
                count.events += 1
                evaluation = evaluate(rule, context, at)
                if evaluation.reason and evaluation.reason.startswith("condition could not"):
                    count.errors += 1
                if not evaluation.matched:
                    continue
                count.matched += 1
                key = throttle_key(rule, context)
                period = parse_duration(rule.rule.throttle.period) if rule.rule.throttle else timedelta(0)
                if key and key in last_fired and at - last_fired[key] < period:
                    count.throttled += 1
                    continue
                if key:
                    last_fired[key] = at
                count.fired += 1
    return list(counts.values())


def format_counts(counts: list[RuleCount], since: datetime) -> str:
    lines = [
        f"events since {since.isoformat()}",
        f"{'rule':30} {'events':>7} {'matched':>8} {'fired':>6} {'throttled':>9} {'errors':>6}",
    ]
    lines += [f"{c.rule_id:30} {c.events:7} {c.matched:8} {c.fired:6} {c.throttled:9} {c.errors:6}" for c in counts]
    return "\n".join(lines)
