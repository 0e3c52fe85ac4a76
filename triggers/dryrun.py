"""`leadhub rules test`: an event from a file against the rules, with what each would do; no store, no side effects."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from leadhub.store.trigger_data import NO_ORDERS, OBJECT_TABLES
from leadhub.triggers.actions.base import RenderEnv
from leadhub.triggers.compile import EvaluationError
from leadhub.triggers.context import build_context
from leadhub.triggers.engine import RuleIndex, evaluate
from leadhub.triggers.events import EVENT_OBJECTS, OBJECT_FIELDS
from leadhub.triggers.matcher import wait_start
from leadhub.triggers.scheduler import late_reason
from leadhub.triggers.throttle import unthrottled
from leadhub.url_redaction import redact_urls

DRY_RUN_KEY = b"dry-run: links in a dry run are not valid"


class EventFileError(ValueError):
    pass


@dataclass
class RuleOutcome:
    rule_id: str
    matched: bool
    reason: str | None
    conditions: list[dict[str, Any]]
    due_at: datetime | None = None
    unless: dict[str, Any] | None = None
    late: str | None = None  # the due time is past: what `late` makes of it when the scheduler runs it now
    actions: list[dict[str, Any]] = field(default_factory=list)


def read_event(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """An event file: `{"type", "data", ...}` plus the objects it points at (`contact`, `order`, ...)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EventFileError(f"{path}: cannot read the event: {exc}") from None
    except RecursionError:  # json's decoder recurses per `[`/`{`: no event is built like this
        raise EventFileError(f"{path}: cannot read the event: nested too deeply") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise EventFileError(f"{path}: an event file is a JSON object with a `type` (e.g. order.completed)")
    kind = raw["type"]
    if kind not in EVENT_OBJECTS:
        raise EventFileError(f"{path}: unknown event type {kind!r}; valid types: {', '.join(EVENT_OBJECTS)}")
    occurred = _date(raw.get("occurred_at"))
    if occurred is not None and not isinstance(occurred, datetime):  # the daemon would count from now, unsaid
        raise EventFileError(f"{path}: occurred_at must be an ISO 8601 date and time, e.g. 2026-11-20T10:00:00+00:00")
    if not isinstance(raw.get("data", {}), dict):  # the daemon reads such an event's data as {}
        raise EventFileError(f'{path}: data must be a JSON object, e.g. {{"order_id": "o1"}}')
    event = {
        "id": raw.get("id", "dry-run"),
        "type": kind,
        "subject_id": raw.get("subject_id"),
        "occurred_at": occurred or datetime.now(UTC),
        "data": raw.get("data", {}),
    }
    objects: dict[str, Any] = {}
    for name in EVENT_OBJECTS[kind]:
        value = raw.get(name)
        if value is not None and not isinstance(value, dict):
            raise EventFileError(f"{path}: {name} must be a JSON object")
        objects[name] = None if value is None else _as_loaded(name, value)
    return event, objects


def _as_loaded(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """An object of the event file with every field the daemon's has: a file holds a few, and a rule the daemon
    runs (`{{ lead.owner }}`, `contact.email`) failed on the others as undefined. A field that is no field of
    the object stays undefined: `rules check` refuses a rule reading one."""
    row = _unset_fields(name)
    row.update({k: _date(v) if k.endswith("_at") else v for k, v in given.items()})
    return row


def _unset_fields(name: str) -> dict[str, Any]:
    """The fields as a stored row holds them when nothing set them: the column's default (`new`, [], {}), else
    none; a contact not suppressed and with no orders."""
    fields: dict[str, Any] = dict.fromkeys(OBJECT_FIELDS[name])
    for column in OBJECT_TABLES[name][0].c:
        default = column.default
        if column.name in fields and default is not None and (default.is_scalar or default.is_callable):
            fields[column.name] = default.arg if default.is_scalar else default.arg(None)
    if name == "contact":
        fields.update(unsubscribed=False, **NO_ORDERS)
    return fields


def _date(value: Any) -> Any:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        # in UTC, as the daemon's dates are: `order.completed_at.day` of `01:00+03:00` is the day before
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return value


def dry_run(
    index: RuleIndex, event: dict[str, Any], objects: dict[str, Any], public_url: str | None
) -> list[RuleOutcome]:
    now = datetime.now(UTC)
    context = build_context(event, objects, now)
    env = RenderEnv(DRY_RUN_KEY, public_url, now)
    outcomes = []
    for rule in index.rules:
        if event["type"] not in (rule.rule.on or ()):
            listens = ", ".join(rule.rule.on) if rule.rule.on else f"schedule {rule.rule.schedule.cron}"  # type: ignore[union-attr]
            outcomes.append(RuleOutcome(rule.id, False, f"listens to {listens}", []))
            continue
        evaluation = evaluate(rule, context, now, wait_start(event, now))  # a relative wait: from occurred_at
        outcome = RuleOutcome(rule.id, evaluation.matched, evaluation.reason, evaluation.conditions, evaluation.due_at)
        if evaluation.matched and evaluation.due_at is not None:
            outcome.late = late_reason(rule, evaluation.due_at, now)
        if evaluation.matched:
            outcome.reason = unthrottled(rule, context)
        if evaluation.matched:
            if rule.unless is not None:
                try:
                    outcome.unless = {"unless": rule.unless.source, "now": rule.unless(context)}
                except EvaluationError as exc:
                    outcome.unless = {"unless": rule.unless.source, "error": str(exc)}
            for spec, bound in zip(rule.rule.do, rule.actions, strict=True):
                try:
                    outcome.actions.append({"type": spec.type, **_shown(bound.render(context, env))})
                except Exception as exc:  # a template that fails for this event: show it, do not stop
                    outcome.actions.append({"type": spec.type, "error": f"{type(exc).__name__}: {exc}"})
        outcomes.append(outcome)
    return outcomes


def _shown(rendered: dict[str, Any]) -> dict[str, Any]:
    """What a dry run prints of an action: its URLs without credentials (`https://crm:***@host/?api_key=***`);
    the output is pasted into tickets and chats, and the daemon's own request keeps the full URL."""
    return {
        key: redact_urls(value) if isinstance(value, str) and (key == "url" or key.endswith("_url")) else value
        for key, value in rendered.items()
    }


def format_outcomes(outcomes: list[RuleOutcome]) -> str:
    lines: list[str] = []
    for outcome in outcomes:
        if not outcome.matched:
            lines.append(f"rule {outcome.rule_id!r}: not matched: {outcome.reason}")
            continue
        due = f"; due {outcome.due_at.isoformat()}" if outcome.due_at else ""
        lines.append(f"rule {outcome.rule_id!r}: matched{due}")
        lines.extend(f"  if {c['if']!r}: {c['result']}" for c in outcome.conditions)
        if outcome.reason:  # matched, with a note: the throttle could not apply
            lines.append(f"  {outcome.reason}")
        if outcome.late:
            lines.append(f"  not run: the due time is past, the scheduler would cancel it as {outcome.late}")
        if outcome.unless:
            lines.append(f"  unless {outcome.unless['unless']!r} (re-checked when due): {outcome.unless.get('now')}")
        for index, action in enumerate(outcome.actions):
            lines.append(f"  do[{index}] {action['type']}:")
            for key, value in action.items():
                if key == "type" or value is None:
                    continue
                text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
                if "\n" in text.strip():
                    lines.append(f"    {key}: |")
                    lines += [f"      {line}" for line in text.rstrip().splitlines()]
                else:
                    lines.append(f"    {key}: {text}")
    return "\n".join(lines)
