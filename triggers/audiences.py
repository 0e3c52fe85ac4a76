"""`for_each: contact` schedule rules: the contacts a tick runs for, each as its own `schedule` event."""

from __future__ import annotations

import calendar
import re
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.durations import parse_duration
from leadhub.ids import id_for_key
from leadhub.store import audiences
from leadhub.triggers.compile import CompiledRule
from leadhub.triggers.context import aware

ISO = re.compile(r"^\s*(?:(\d{4})-)?(\d{1,2})-(\d{1,2})\s*$")  # 1990-05-17, 05-17
DOTTED = re.compile(r"^\s*(\d{1,2})\.(\d{1,2})(?:\.(\d{4}))?\s*$")  # 17.05.1990, 17.05


def birthday(text: str) -> tuple[int, int] | None:
    """(month, day) of a birthday as people type it: 1990-05-17, 05-17, 17.05.1990, 17.05; None if unreadable."""
    if match := ISO.match(text):
        year, month, day = match.group(1), int(match.group(2)), int(match.group(3))
    elif match := DOTTED.match(text):
        day, month, year = int(match.group(1)), int(match.group(2)), match.group(3)
    else:
        return None
    leap_or_given = int(year) if year else 2024  # without a year, 29 February is a possible birthday
    if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(leap_or_given, month)[1]:
        return None
    return month, day


def is_birthday(month_day: tuple[int, int], today: date) -> bool:
    """29 February is celebrated on the 28th in other years."""
    if month_day == (2, 29) and not calendar.isleap(today.year):
        return (today.month, today.day) == (2, 28)
    return month_day == (today.month, today.day)


async def audience(engine: AsyncEngine, rule: CompiledRule, tick: datetime) -> dict[str, dict[str, Any]]:
    """contact id -> what the selection found (`last_order_at`, `birthday`), for the rule at this tick."""
    spec = rule.rule.for_each.contact  # type: ignore[union-attr]
    schedule = rule.rule.schedule
    zone = ZoneInfo(schedule.timezone if schedule else "UTC")
    chosen: dict[str, dict[str, Any]] | None = None
    async with engine.connect() as conn:
        if spec.no_orders_for:
            found = await audiences.last_order_before(conn, tick - parse_duration(spec.no_orders_for))
            chosen = {cid: {"last_order_at": aware(at).isoformat()} for cid, at in found.items()}
        if spec.birthday_field:
            today = tick.astimezone(zone).date()
            values = await audiences.field_values(conn, spec.birthday_field)
            born = {cid: text for cid, text in values.items() if (md := birthday(text)) and is_birthday(md, today)}
            chosen = {
                cid: {**(chosen or {}).get(cid, {}), "birthday": text}
                for cid, text in born.items()
                if chosen is None or cid in chosen
            }
        if chosen is None:
            chosen = {cid: {} for cid in await audiences.every_contact(conn)}
    return chosen


def contact_events(rule: CompiledRule, tick: datetime, chosen: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One `schedule` event per contact; ids derive from (rule, tick, contact), so replicas and re-runs agree."""
    return [
        {
            "id": id_for_key(f"schedule:{rule.id}:{tick.isoformat()}:{contact_id}"),
            "type": "schedule",
            "subject_id": contact_id,
            "occurred_at": tick.isoformat(),
            "data": {"rule_id": rule.id, "tick": tick.isoformat(), "contact_id": contact_id, **found},
        }
        for contact_id, found in sorted(chosen.items())
    ]
