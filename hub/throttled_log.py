"""A warning that can come thousands of times a second (every webhook refused while the queue is away, every
reconnect attempt): one line per interval, with how many times it happened since the last line."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class ThrottledWarning:
    def __init__(
        self,
        logger: Any,
        event: str,
        *,
        count_as: str,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger, self.event, self.count_as = logger, event, count_as
        self.interval, self.clock = interval, clock
        self.count, self.logged_at = 0, None

    def __call__(self, **fields: Any) -> None:
        self.count += 1
        now = self.clock()
        if self.logged_at is None or now - self.logged_at >= self.interval:
            self.logger.warning(self.event, **fields, **{self.count_as: self.count})
            self.count, self.logged_at = 0, now
