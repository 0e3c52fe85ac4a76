"""Per-client token buckets for webhook endpoints: cheap, bounded in memory, no background task."""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PERIOD = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def parse_rate(text: str) -> tuple[int, float]:
    """`60/m` -> (60 requests, 60 seconds)."""
    match = _RATE.match(text)
    if not match:
        raise ValueError(f"invalid rate {text!r}; write requests per period, e.g. 60/m, 5/s, 1000/h")
    count, unit = match.groups()
    if int(count) < 1:
        raise ValueError("a rate limit must allow at least 1 request")
    return int(count), float(_PERIOD[unit])


class RateLimiter:
    """A token bucket per key (client IP); the least recently seen keys are forgotten first."""

    def __init__(
        self,
        count: int,
        period: float,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = float(count)
        self.refill_per_second = count / period
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def acquire(self, key: str) -> float:
        """Take one token; return 0 if allowed, else the seconds until a token is available."""
        now = self.clock()
        tokens, last = self._buckets.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.refill_per_second)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (1 - tokens) / self.refill_per_second
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait
