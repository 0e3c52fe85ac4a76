"""Business and quiet hours: weekly open intervals in a time zone, and the first open instant at or after a time.

Quiet hours are stored as their complement (the hours when acting is allowed), so both kinds share one
search. Wall-clock times are resolved in the zone on the day in question, so a daylight-saving change
moves the UTC instant, never the local opening time; an opening inside a skipped hour (spring forward)
opens when the clock jumps, at the end of the gap. An opening inside a repeated hour (fall back) opens at
its first occurrence, closes when the clock goes back below it, and opens again at its second: quiet hours
ending at 02:30 are kept while the wall clock shows 02:00-02:30 the second time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SPAN = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
MIDNIGHT = time(0, 0)
Interval = tuple[time, time | None]  # end None: until midnight (24:00)


class HoursError(ValueError):
    """A day list or time span an admin wrote that cannot be read; the message shows the valid forms."""


def parse_days(text: str) -> list[int]:
    """`mon`, `mon-fri`, `sat,sun`, `daily` → weekday numbers (Monday 0)."""
    days: list[int] = []
    for part in str(text).lower().replace(" ", "").split(","):
        if part in ("daily", "everyday", "all"):
            days += range(7)
            continue
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise HoursError(f"unknown day {part!r}; write mon..sun, a range (mon-fri), a list (sat,sun) or daily")
        start, end = DAYS.index(first), DAYS.index(last or first)
        days += [(start + n) % 7 for n in range((end - start) % 7 + 1)]
    return days


def _clock(hours: str, minutes: str, text: str) -> time | None:
    h, m = int(hours), int(minutes)
    if (h, m) == (24, 0):
        return None
    if h > 23 or m > 59:
        raise HoursError(f"invalid time in {text!r}; use 24-hour HH:MM, e.g. 09:00-18:00")
    return time(h, m)


def parse_spans(text: str) -> list[Interval]:
    """`09:00-18:00`, `09:00-13:00, 14:00-18:00`, or `closed` → intervals within one day (24:00 allowed as end)."""
    text = str(text).strip().lower()
    if text == "closed":
        return []
    spans: list[Interval] = []
    for part in text.split(","):
        match = SPAN.match(part)
        if not match:
            raise HoursError(f"invalid hours {part.strip()!r}; write HH:MM-HH:MM, e.g. 09:00-18:00, or closed")
        start, end = _clock(*match.group(1, 2), part), _clock(*match.group(3, 4), part)
        if start is None or (end is not None and end <= start):
            raise HoursError(f"{part.strip()!r} ends before it starts; for hours past midnight use two days")
        spans.append((start, end))
    return sorted(spans, key=lambda span: span[0])


def parse_quiet(text: str) -> list[Interval]:
    """A daily quiet span (`21:00-09:00` may cross midnight) → the allowed intervals of a day."""
    match = SPAN.match(str(text))
    if not match:
        raise HoursError(f"invalid quiet hours {text!r}; write HH:MM-HH:MM, e.g. 21:00-09:00")
    start = _clock(*match.group(1, 2), text) or MIDNIGHT
    end = _clock(*match.group(3, 4), text) or MIDNIGHT
    if start == end:
        raise HoursError(f"quiet hours {text!r} start and end at the same time")
    if start > end:  # 21:00-09:00: allowed 09:00-21:00
        return [(end, start)]
    allowed: list[Interval] = []
    if start != MIDNIGHT:
        allowed.append((MIDNIGHT, start))
    allowed.append((end, None))
    return allowed


@dataclass(frozen=True)
class WeeklyHours:
    """When acting is allowed: per weekday (Monday 0) a sorted list of intervals, in `zone` unless told another."""

    name: str
    zone: ZoneInfo
    week: tuple[tuple[Interval, ...], ...]

    def next_open(self, when: datetime, zone: ZoneInfo | None = None) -> datetime:
        """The first instant at or after `when` inside the hours (UTC), in `zone` or the hours' own."""
        zone = zone or self.zone
        day = when.astimezone(zone).date() - timedelta(days=1)  # yesterday's span may run past midnight
        for offset in range(9):
            current = day + timedelta(days=offset)
            for start, end in self.week[current.weekday()]:
                closes = wall_to_utc(current + timedelta(days=1), MIDNIGHT, zone) if end is None else None
                closes = closes or wall_to_utc(current, end, zone)  # type: ignore[arg-type]
                for opens, until in _open_spans(current, start, closes, zone):
                    if when < until and opens < until:
                        return max(when, opens).astimezone(UTC)
        raise ValueError(f"hours {self.name!r} are never open")


def _open_spans(day: date, start: time, closes: datetime, zone: ZoneInfo) -> list[tuple[datetime, datetime]]:
    """The UTC spans in which the wall clock shows `start` or later (and before `closes`): one, or two when
    `start` falls in the hour a fall-back repeats (the clock goes back below `start` in between)."""
    opens = wall_to_utc(day, start, zone)
    again = second_occurrence(day, start, zone)
    if again is None:
        return [(opens, closes)]
    target = datetime.combine(day, start)
    low, high = int(opens.timestamp()), int(again.timestamp())  # the clock goes back somewhere in between
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if _wall(datetime.fromtimestamp(middle, UTC), zone) >= target else (low, middle)
    return [(opens, min(closes, datetime.fromtimestamp(high, UTC))), (again, closes)]


def second_occurrence(day: date, clock: time, zone: ZoneInfo) -> datetime | None:
    """The later instant the wall clock shows `day clock`, when a fall-back makes it show it twice."""
    naive = datetime.combine(day, clock)
    early = naive.replace(tzinfo=zone).astimezone(UTC)
    late = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if late > early and _wall(early, zone) == naive and _wall(late, zone) == naive:
        return late
    return None


def wall_to_utc(day: date, clock: time, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) at which the wall clock in `zone` shows `day clock` or later."""
    early = datetime.combine(day, clock, tzinfo=zone).astimezone(UTC)  # fold=0: the earlier offset
    if _wall(early, zone) == datetime.combine(day, clock):
        return early
    late = datetime.combine(day, clock, tzinfo=zone).replace(fold=1).astimezone(UTC)
    # A skipped hour: the clock jumps past `clock` between the two readings; find the jump to the second.
    low, high = int(min(early, late).timestamp()), int(max(early, late).timestamp())
    target = datetime.combine(day, clock)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if _wall(datetime.fromtimestamp(middle, UTC), zone) < target else (low, middle)
    return datetime.fromtimestamp(high, UTC)


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def weekly(name: str, zone: str, days: dict[str, str]) -> WeeklyHours:
    """Business hours from `{mon-fri: "09:00-18:00", sat: "10:00-14:00"}`; a later key overrides a day."""
    week: list[tuple[Interval, ...]] = [() for _ in range(7)]
    for spec, spans in days.items():
        intervals = tuple(parse_spans(spans))
        for day in parse_days(spec):
            week[day] = intervals
    if not any(week):
        raise HoursError("the hours are closed every day; give at least one open span")
    return WeeklyHours(name, ZoneInfo(zone), tuple(week))


def quiet(name: str, zone: str, span: str) -> WeeklyHours:
    """Quiet hours `21:00-09:00` every day, as the hours outside them."""
    allowed = tuple(parse_quiet(span))
    return WeeklyHours(name, ZoneInfo(zone), tuple(allowed for _ in range(7)))


def contact_zone(phone: str | None) -> ZoneInfo | None:
    """The contact's time zone when their phone number names exactly one (a German number does, a Russian
    one does not); None otherwise, and the hours' own zone applies."""
    if not phone:
        return None
    import phonenumbers
    from phonenumbers import timezone as phone_zones

    try:
        zones = phone_zones.time_zones_for_number(phonenumbers.parse(phone, None))
    except phonenumbers.NumberParseException:
        return None
    if len(zones) != 1 or zones[0] == phone_zones.UNKNOWN_TIMEZONE:
        return None
    try:
        return ZoneInfo(zones[0])
    except (KeyError, ValueError):
        return None


def move_into(when: datetime, hours: list[WeeklyHours], zone: ZoneInfo | None = None) -> datetime:
    """The first instant at or after `when` inside every one of `hours` (business hours and quiet hours)."""
    for _ in range(32):  # each pass only moves forward; two calendars settle within a few passes
        moved = when
        for calendar in hours:
            moved = calendar.next_open(moved, zone)
        if moved == when:
            return when
        when = moved
    raise ValueError(f"no time is inside all of {', '.join(h.name for h in hours)}")
