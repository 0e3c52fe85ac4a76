"""Durations as admins write them: `30s`, `15m`, `2h`, `7d` (and `500ms`), parsed strictly."""

import math
import re
from datetime import timedelta

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
# Longer is a typo, not a plan: date arithmetic with it can overflow (`now + 3000000d` is past year 9999).
MAX_DURATION = timedelta(days=36500)  # 100 years


class DurationError(ValueError):
    """A duration string that is not `<number><unit>`, or one longer than MAX_DURATION."""


def parse_duration(text: str | int | float | timedelta) -> timedelta:
    """Parse `15m` into a timedelta; a bare number means seconds."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, int | float) and not isinstance(text, bool):
        return _within_maximum(text, float(text))
    match = _PATTERN.match(str(text))
    if not match:
        raise DurationError(f"invalid duration {text!r}: write a number and a unit, e.g. 30s, 15m, 2h, 7d")
    value, unit = match.groups()
    return _within_maximum(text, float(value) * _UNITS[unit])


def whole_days(text: str | int | float | timedelta) -> int | None:
    """The number of days of a duration written in whole days or weeks (`1d`, `30d`, `2w`); None for any other
    (`36h`, `1.5d`, a bare number): what may be counted in calendar days rather than as a fixed length."""
    match = _PATTERN.match(text) if isinstance(text, str) else None
    if not match or match.group(2) not in {"d", "w"}:
        return None
    days = float(match.group(1)) * (7 if match.group(2) == "w" else 1)
    return int(days) if days.is_integer() else None


def _within_maximum(text: object, seconds: float) -> timedelta:
    if math.isnan(seconds):
        raise DurationError(f"invalid duration {text!r}: write a number and a unit, e.g. 30s, 15m, 2h, 7d")
    if abs(seconds) > MAX_DURATION.total_seconds():
        raise DurationError(f"duration {text!r} is too long: at most {MAX_DURATION.days}d (100 years)")
    return timedelta(seconds=seconds)
