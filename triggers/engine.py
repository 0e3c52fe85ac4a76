"""Matching: which rules listen to an event, and for each whether its conditions hold and when its actions are due."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jinja2 import Undefined

from leadhub.triggers.compile import CompiledRule, EvaluationError


@dataclass
class Evaluation:
    rule: CompiledRule
    matched: bool
    reason: str | None = None
    conditions: list[dict[str, Any]] = field(default_factory=list)
    due_at: datetime | None = None


@dataclass
class _Group:
    """Listeners whose first condition starts with `<path> == <constant>`, by constant."""

    value: Callable[[dict[str, Any]], Any]
    rules: list[tuple[Any, CompiledRule]] = field(default_factory=list)
    by_value: dict[Any, list[CompiledRule]] = field(default_factory=dict)
    # Per constant, the shared "condition is false" evaluations of the group's other rules; `all_false`
    # when the value matches no constant. Built once, so an event costs a dict lookup, not a loop.
    false_by_value: dict[Any, list[Evaluation]] = field(default_factory=dict)
    all_false: list[Evaluation] = field(default_factory=list)

    def seal(self, false: dict[str, Evaluation]) -> None:
        self.all_false = [false[rule.id] for _, rule in self.rules]
        self.false_by_value = {
            constant: [false[rule.id] for other, rule in self.rules if other != constant] for constant in self.by_value
        }


class RuleIndex:
    """Rules by the event types they listen to, and within a type by their first equality condition,
    so an event is evaluated only against rules that can match it."""

    def __init__(self, rules: Iterable[CompiledRule], *, disabled: Iterable[str] = ()) -> None:
        self.rules = list(rules)
        self.disabled = frozenset(disabled)  # ids of rules their files hold with `enabled: false`
        self.by_type: dict[str, list[CompiledRule]] = {}
        self.plans: dict[str, tuple[list[CompiledRule], dict[str, _Group]]] = {}
        for rule in self.rules:
            for kind in rule.rule.on or ():
                self.by_type.setdefault(kind, []).append(rule)
                plain, groups = self.plans.setdefault(kind, ([], {}))
                found = _discriminator(rule)
                if found is None:
                    plain.append(rule)
                    continue
                path, value_of, constant = found
                group = groups.setdefault(path, _Group(value_of))
                group.rules.append((constant, rule))
                group.by_value.setdefault(constant, []).append(rule)
        self.by_id = {rule.id: rule for rule in self.rules}
        # Shared, read-only: an evaluation the index proved false is the same for every event.
        self.false = {rule.id: known_false(rule) for rule in self.rules if _discriminator(rule) is not None}
        for _, groups in self.plans.values():
            for group in groups.values():
                group.seal(self.false)

    def listeners(self, event_type: str) -> list[CompiledRule]:
        return self.by_type.get(event_type, [])

    def split(self, event_type: str, context: dict[str, Any]) -> tuple[list[CompiledRule], list[Evaluation]]:
        """(rules to evaluate, the evaluations of rules whose first condition is known to be false)."""
        plain, groups = self.plans.get(event_type, ([], {}))
        evaluate_these, known_false = list(plain), []
        for group in groups.values():
            try:
                value = group.value(context)
                candidates = None if isinstance(value, Undefined) else group.by_value.get(value, [])
            except Exception:  # unhashable or unreadable: let the full evaluation say what happens
                candidates = None
            if candidates is None:
                evaluate_these += [rule for _, rule in group.rules]
                continue
            evaluate_these += candidates
            known_false += group.false_by_value.get(value, group.all_false)
        return evaluate_these, known_false


def _discriminator(rule: CompiledRule) -> tuple[str, Any, Any] | None:
    if not rule.conditions:
        return None
    return getattr(rule.conditions[0].function, "discriminator", None)


def known_false(rule: CompiledRule) -> Evaluation:
    """What `evaluate` says of a rule whose first condition is false (the index proved it)."""
    source = rule.conditions[0].source
    return Evaluation(rule, False, f"condition is false: {source}", [{"if": source, "result": False}])


def evaluate_all(
    index: RuleIndex, event_type: str, context: dict[str, Any], now: datetime, start: datetime | None = None
) -> list[Evaluation]:
    """Every listener's evaluation, the index sparing the ones that cannot match; `start` as for `evaluate`."""
    evaluate_these, proven_false = index.split(event_type, context)
    return [*(evaluate(rule, context, now, start) for rule in evaluate_these), *proven_false]


def evaluate(rule: CompiledRule, context: dict[str, Any], now: datetime, start: datetime | None = None) -> Evaluation:
    """Check the rule's conditions in order (the first false one decides) and work out the due time.

    A relative `wait` counts from `start` (default `now`): the matcher passes when an event happened and a cron
    tick handled late (after downtime) the tick itself, so either is due at its own time plus the wait, however
    late it is handled, and `late` judges it.
    """
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
        due = rule.wait.due(context, now if start is None else start)
    except EvaluationError as exc:
        return Evaluation(rule, False, str(exc), results)
    return Evaluation(rule, True, None, results, due)
