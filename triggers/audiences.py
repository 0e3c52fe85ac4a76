"""`for_each: contact` schedule rules: the contacts a tick runs for, each as its own `schedule` event."""

from __future__ import annotations

import calendar
import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

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


Found = tuple[str, dict[str, Any]]  # (contact id, what the selection found)


async def audience(engine: AsyncEngine, rule: CompiledRule, tick: datetime) -> AsyncIterator[Found]:
    """(contact id, what the selection found: `last_order_at`, `birthday`) for the rule at this tick, in id order.

    Read a page of contacts at a time, and no connection is held while the caller handles a page: a million
    contacts and their events were held in memory at once (~800 MB) for the hour their events took.
    """
    after = None
    while True:
        async with engine.connect() as conn:
            page = await audiences.contacts_after(conn, after, audiences.PAGE)
            chosen = await _choose(conn, rule, tick, page) if page else {}
        for contact_id in page:
            if contact_id in chosen:
                yield contact_id, chosen[contact_id]
        if len(page) < audiences.PAGE:
            return
        after = page[-1]


async def _choose(conn: AsyncConnection, rule: CompiledRule, tick: datetime, page: list[str]) -> dict[str, Any]:
    """The contacts of `page` the rule's `for_each` selects; with both keys a contact must satisfy both."""
    spec = rule.rule.for_each.contact  # type: ignore[union-attr]
    chosen: dict[str, dict[str, Any]] = {contact_id: {} for contact_id in page}
    if spec.no_orders_for:
        # in UTC: SQLite stores UTC wall times and writes a bound datetime's wall time, whatever its zone
        before = (tick - parse_duration(spec.no_orders_for)).astimezone(UTC)
        found = await audiences.last_order_before(conn, before, page)
        chosen = {cid: {"last_order_at": aware(at).isoformat()} for cid, at in found.items()}
    if spec.birthday_field and chosen:
        schedule = rule.rule.schedule
        today = tick.astimezone(ZoneInfo(schedule.timezone if schedule else "UTC")).date()
        values = await audiences.field_values(conn, spec.birthday_field, list(chosen))
        chosen = {
            cid: {**chosen[cid], "birthday": text}
            for cid, text in values.items()
            if cid in chosen and (md := birthday(text)) and is_birthday(md, today)
        }
    return chosen


def contact_event(rule: CompiledRule, tick: datetime, contact_id: str, found: dict[str, Any]) -> dict[str, Any]:
    """The contact's `schedule` event; its id derives from (rule, tick, contact), so replicas and re-runs agree."""
    return {
        "id": id_for_key(f"schedule:{rule.id}:{tick.isoformat()}:{contact_id}"),
        "type": "schedule",
        "subject_id": contact_id,
        "occurred_at": tick.isoformat(),
        "data": {"rule_id": rule.id, "tick": tick.isoformat(), "contact_id": contact_id, **found},
    }
