"""Durations as admins write them: `30s`, `15m`, `2h`, `7d` (and `500ms`), parsed strictly."""

import re
from datetime import timedelta

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")


class DurationError(ValueError):
    """A duration string that is not `<number><unit>`."""


def parse_duration(text: str | int | float | timedelta) -> timedelta:
    """Parse `15m` into a timedelta; a bare number means seconds."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, int | float) and not isinstance(text, bool):
        return timedelta(seconds=text)
    match = _PATTERN.match(str(text))
    if not match:
        raise DurationError(f"invalid duration {text!r}: write a number and a unit, e.g. 30s, 15m, 2h, 7d")
    value, unit = match.groups()
    return timedelta(seconds=float(value) * _UNITS[unit])
