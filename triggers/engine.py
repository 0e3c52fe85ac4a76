"""Matching: which rules listen to an event, and for each whether its conditions hold and when its actions are due."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from leadhub.triggers.compile import CompiledRule, EvaluationError


@dataclass
class Evaluation:
    rule: CompiledRule
    matched: bool
    reason: str | None = None
    conditions: list[dict[str, Any]] = field(default_factory=list)
    due_at: datetime | None = None


class RuleIndex:
    """Rules by the event types they listen to, so an event is checked only against its listeners."""

    def __init__(self, rules: Iterable[CompiledRule]) -> None:
        self.rules = list(rules)
        self.by_type: dict[str, list[CompiledRule]] = {}
        for rule in self.rules:
            for kind in rule.rule.on or ():
                self.by_type.setdefault(kind, []).append(rule)
        self.by_id = {rule.id: rule for rule in self.rules}

    def listeners(self, event_type: str) -> list[CompiledRule]:
        return self.by_type.get(event_type, [])


def evaluate(rule: CompiledRule, context: dict[str, Any], now: datetime) -> Evaluation:
    """Check the rule's conditions in order (the first false one decides) and work out the due time."""
    results: list[dict[str, Any]] = []
    for condition in rule.conditions:
        try:
            outcome = condition(context)
        except EvaluationError as exc:
            results.append({"if": condition.source, "result": None, "error": str(exc)})
            return Evaluation(rule, False, f"condition could not be evaluated: {exc}", results)
        results.append({"if": condition.source, "result": outcome})
        if not outcome:
            return Evaluation(rule, False, f"condition is false: {condition.source}", results)
    try:
        due = rule.wait.due(context, now)
    except EvaluationError as exc:
        return Evaluation(rule, False, str(exc), results)
    return Evaluation(rule, True, None, results, due)
