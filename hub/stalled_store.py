"""Noticing that the embedded NATS stopped storing, so it can be restarted.

After a write error in a stream's store (the disk full), nats-server keeps that store failed: every later publish
goes unanswered, even once space is back, until the server restarts. Webhooks were answered 503 for ever while
`/readyz` said ready. A stall is publishes timing out, none acknowledged, for `stall_after` seconds while
connected; then the server is restarted, at most once per `restart_every` seconds (the disk may still be full).
"""

from __future__ import annotations

import time
from collections.abc import Callable

STALL_AFTER = 10.0
RESTART_EVERY = 60.0


class StallWatch:
    """Hears each publish's outcome and calls `restart` when only timeouts came for `stall_after` seconds."""

    def __init__(
        self,
        restart: Callable[[], None],
        *,
        stall_after: float = STALL_AFTER,
        restart_every: float = RESTART_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.restart = restart
        self.stall_after = stall_after
        self.restart_every = restart_every
        self.clock = clock
        self._first_timeout: float | None = None  # of the timeouts since the last acknowledgement
        self._restarted = -restart_every

    def acknowledged(self) -> None:
        self._first_timeout = None

    def timed_out(self) -> None:
        now = self.clock()
        if self._first_timeout is None:
            self._first_timeout = now
        elif now - self._first_timeout >= self.stall_after and now - self._restarted >= self.restart_every:
            self._first_timeout = None
            self._restarted = now
            self.restart()
