"""Rule → compiled rule: conditions, the wait, and bound actions, all compiled once at load time, never per event."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from leadhub.durations import parse_duration
from leadhub.triggers.actions import ACTIONS
from leadhub.triggers.actions.base import Bound, CompileError
from leadhub.triggers.events import DATE_FIELDS, EVENT_OBJECTS, objects_for
from leadhub.triggers.sandbox import Scope, TemplateProblem, Templates
from leadhub.triggers.schema import ANCHOR, Rule, RunIfWithin

Path = tuple[str | int, ...]


class RuleProblems(Exception):
    """Everything wrong with one rule, each with the path in the rule where it is."""

    def __init__(self, problems: list[tuple[Path, str]]) -> None:
        super().__init__("; ".join(m for _, m in problems))
        self.problems = problems


class EvaluationError(Exception):
    """A condition that could not be evaluated for this event (a missing object, a type error)."""


@dataclass(frozen=True)
class Condition:
    source: str
    function: Callable[..., Any]

    def __call__(self, context: dict[str, Any]) -> bool:
        try:
            fast = getattr(self.function, "evaluate", None)
            return bool(fast(context) if fast is not None else self.function(**context))
        except Exception as exc:  # StrictUndefined, a comparison of None with a number, ...
            raise EvaluationError(f"{self.source!r}: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class Wait:
    delay: timedelta = timedelta(0)
    anchor: tuple[str, str] | None = None

    def due(self, context: dict[str, Any], now: datetime) -> datetime:
        """When the action is due; raises EvaluationError when the anchor date is empty."""
        if self.anchor is None:
            return now + self.delay
        name, field = self.anchor
        record = context.get(name)
        value = getattr(record, field, None) if record is not None else None
        if not isinstance(value, datetime):
            raise EvaluationError(f"wait: {name}.{field} is empty for this event")
        return value + self.delay


@dataclass(frozen=True)
class CompiledRule:
    rule: Rule
    file: str
    conditions: tuple[Condition, ...]
    unless: Condition | None
    wait: Wait
    actions: tuple[Bound, ...]
    late_within: timedelta | None  # None: run however late; timedelta(0): skip when late

    @property
    def id(self) -> str:
        return self.rule.id

    @property
    def action_types(self) -> tuple[str, ...]:
        return tuple(a.type for a in self.rule.do)


LATE_GRACE = timedelta(minutes=1)  # `late: skip` still runs an action this little behind


def compile_rule(rule: Rule, templates: Templates, file: str = "") -> CompiledRule:
    """Compile everything in the rule; raise RuleProblems listing every problem found."""
    problems: list[tuple[Path, str]] = []
    for index, kind in enumerate(rule.on or []):
        if kind not in EVENT_OBJECTS:
            problems.append((("on", index), f"unknown event type {kind!r}; valid types: {', '.join(EVENT_OBJECTS)}"))
    scope = Scope(objects_for(rule.on))
    conditions: list[Condition] = []
    for index, source in enumerate(rule.conditions):
        path: Path = ("if",) if isinstance(rule.if_, str) else ("if", index)
        condition = _condition(templates, source, scope, path, problems)
        if condition is not None:
            conditions.append(condition)
    unless = _condition(templates, rule.unless, scope, ("unless",), problems) if rule.unless else None
    wait = _wait(rule.wait, scope, problems)
    actions: list[Bound] = []
    for index, spec in enumerate(rule.do):
        try:
            actions.append(ACTIONS[spec.type].compile(spec, templates, scope))
        except CompileError as exc:
            problems.append((("do", index, spec.type, *exc.path), exc.message))
    if problems:
        raise RuleProblems(problems)
    late = rule.late
    within = (
        parse_duration(late.run_if_within) if isinstance(late, RunIfWithin) else None if late == "run" else LATE_GRACE
    )
    return CompiledRule(rule, file, tuple(conditions), unless, wait, tuple(actions), within)


def _condition(
    templates: Templates, source: str | None, scope: Scope, path: Path, problems: list[tuple[Path, str]]
) -> Condition | None:
    if source is None:
        return None
    try:
        return Condition(source, templates.expression(source, scope))
    except TemplateProblem as exc:
        problems.append((path, str(exc)))
        return None


def _wait(text: str | None, scope: Scope, problems: list[tuple[Path, str]]) -> Wait:
    if text is None:
        return Wait()
    match = ANCHOR.match(text)
    if not match:
        return Wait(parse_duration(text))
    name, field, delay = match.groups()
    if name not in scope.objects:
        problems.append((("wait",), f"{name!r} is not available here; available: {', '.join(scope.objects)}"))
    elif field not in DATE_FIELDS.get(name, ()):
        dates = ", ".join(sorted(DATE_FIELDS.get(name, ()))) or "none"
        problems.append((("wait",), f"{name} has no date field {field!r}; date fields: {dates}"))
    return Wait(parse_duration(delay) if delay else timedelta(0), (name, field))
