"""Rule → compiled rule: conditions, the wait, and bound actions, all compiled once at load time, never per event."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from leadhub.durations import parse_duration
from leadhub.triggers.actions import ACTIONS
from leadhub.triggers.actions.base import Bound, CompileError
from leadhub.triggers.edits import do_digest
from leadhub.triggers.events import DATE_FIELDS, EVENT_OBJECTS, objects_for
from leadhub.triggers.hours import WeeklyHours, contact_zone, move_into
from leadhub.triggers.sandbox import Scope, TemplateProblem, Templates
from leadhub.triggers.schema import ANCHOR, Rule, RunIfWithin, WaitSpec

Path = tuple[str | int, ...]
# (`business_hours` or `quiet_hours`, name) -> the hours, from every rule file's top-level definitions.
HoursBook = dict[tuple[str, str], WeeklyHours]


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
    hours: tuple[WeeklyHours, ...] = ()  # business hours and quiet hours the due time is moved into
    contact_zone: bool = False  # read the hours in the contact's time zone when their phone names one

    def due(self, context: dict[str, Any], now: datetime) -> datetime:
        """When the action is due; raises EvaluationError when the anchor date is empty or the due time is
        past the last date a datetime holds (an anchor date in the year 9999): this rule only, not the event."""
        if self.anchor is None:
            start = now
        else:
            name, field = self.anchor
            record = context.get(name)
            start = getattr(record, field, None) if record is not None else None
            if not isinstance(start, datetime):
                raise EvaluationError(f"wait: {name}.{field} is empty for this event")
        try:
            at = start + self.delay
        except OverflowError:
            raise EvaluationError(f"wait: {start.isoformat()} + {self.delay} is past the year 9999") from None
        if not self.hours:
            return at
        contact = context.get("contact") if self.contact_zone else None
        zone = contact_zone(getattr(contact, "phone", None)) if contact is not None else None
        try:
            return move_into(at, list(self.hours), zone)
        except ValueError as exc:  # business and quiet hours that never overlap
            raise EvaluationError(f"wait: {exc}") from None
        except OverflowError:
            raise EvaluationError(f"wait: the hours open nowhere between {at.isoformat()} and the year 9999") from None


@dataclass(frozen=True)
class CompiledRule:
    rule: Rule
    file: str
    conditions: tuple[Condition, ...]
    unless: Condition | None
    wait: Wait
    actions: tuple[Bound, ...]
    late_within: timedelta | None  # None: run however late; timedelta(0): skip when late

    id: str = field(init=False)  # the rule's id, read per evaluation: a plain attribute, not a property
    do_digest: str = field(init=False)  # its actions' digests, stored with each run (triggers/edits.py)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", self.rule.id)
        object.__setattr__(self, "do_digest", do_digest(self.rule.do))

    @property
    def action_types(self) -> tuple[str, ...]:
        return tuple(a.type for a in self.rule.do)


LATE_GRACE = timedelta(minutes=1)  # `late: skip` still runs an action this little behind


def compile_rule(rule: Rule, templates: Templates, file: str = "", hours: HoursBook | None = None) -> CompiledRule:
    """Compile everything in the rule; raise RuleProblems listing every problem found."""
    problems: list[tuple[Path, str]] = []
    for index, kind in enumerate(rule.on or []):
        if kind not in EVENT_OBJECTS:
            problems.append((("on", index), f"unknown event type {kind!r}; valid types: {', '.join(EVENT_OBJECTS)}"))
    scope = Scope(("event", "contact") if rule.for_each else objects_for(rule.on))
    conditions: list[Condition] = []
    for index, source in enumerate(rule.conditions):
        path: Path = ("if",) if isinstance(rule.if_, str) else ("if", index)
        condition = _condition(templates, source, scope, path, problems)
        if condition is not None:
            conditions.append(condition)
    unless = _condition(templates, rule.unless, scope, ("unless",), problems) if rule.unless else None
    wait = _wait(rule.wait, scope, problems, hours or {})
    if rule.throttle is not None and rule.throttle.per != "rule" and rule.throttle.per not in scope.objects:
        have = ", ".join(name for name in scope.objects if name in ("contact", "lead", "order")) or "none of them"
        problems.append(
            (
                ("throttle",),
                f"throttle per {rule.throttle.per} needs a rule whose events have a {rule.throttle.per} "
                f"(this rule's have: {have}; a cron rule has a contact only with `for_each: contact`); "
                "use per: rule, or another object",
            )
        )
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


def _wait(spec: str | WaitSpec | None, scope: Scope, problems: list[tuple[Path, str]], book: HoursBook) -> Wait:
    if spec is None:
        return Wait()
    if isinstance(spec, str):
        return _delay(spec, scope, problems, ("wait",))
    base = _delay(spec.after, scope, problems, ("wait", "after")) if spec.after else Wait()
    found: list[WeeklyHours] = []
    for kind in ("business_hours", "quiet_hours"):
        name = getattr(spec, kind)
        if name is None:
            continue
        if (kind, name) in book:
            found.append(book[(kind, name)])
            continue
        known = ", ".join(sorted(n for k, n in book if k == kind)) or f"none (define them under top-level `{kind}:`)"
        problems.append((("wait", kind), f"unknown {kind.replace('_', ' ')} {name!r}; defined: {known}"))
    if spec.timezone == "contact" and "contact" not in scope.objects:
        problems.append((("wait", "timezone"), "timezone: contact needs a rule whose events have a contact"))
    if len(found) > 1 and not _ever_open(found, spec.timezone == "contact"):
        names = f"business hours {spec.business_hours!r} and quiet hours {spec.quiet_hours!r}"
        problems.append(
            (("wait",), f"{names} never leave an open time: no instant is inside the first and outside the second")
        )
    return Wait(base.delay, base.anchor, tuple(found), spec.timezone == "contact")


def _ever_open(hours: list[WeeklyHours], in_one_zone: bool) -> bool:
    """Whether some instant is inside all of `hours` (read in their own zones, or all in one zone for `contact`)."""
    start = datetime(2026, 1, 5, tzinfo=UTC)  # the hours repeat weekly: one search from any Monday decides
    try:
        move_into(start, hours, ZoneInfo("UTC") if in_one_zone else None)
    except ValueError:
        return False
    return True


def _delay(text: str, scope: Scope, problems: list[tuple[Path, str]], path: Path) -> Wait:
    match = ANCHOR.match(text)
    if not match:
        return Wait(parse_duration(text))
    name, field, delay = match.groups()
    if name not in scope.objects:
        problems.append((path, f"{name!r} is not available here; available: {', '.join(scope.objects)}"))
    elif field not in DATE_FIELDS.get(name, ()):
        dates = ", ".join(sorted(DATE_FIELDS.get(name, ()))) or "none"
        problems.append((path, f"{name} has no date field {field!r}; date fields: {dates}"))
    return Wait(parse_duration(delay) if delay else timedelta(0), (name, field))
