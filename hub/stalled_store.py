"""Noticing that the embedded NATS stopped storing, so it can be restarted.

Two ways a full disk outlives itself in nats-server 2.15, each until the server restarts: after a write error in a
stream's store (no space left) every later publish goes unanswered, even once space is back; and JetStream's
storage limit is 75% of the disk space free when the server started, so a server started on a nearly full disk
answers `insufficient resources` after a few items however much is freed later. Webhooks were answered 503 for
ever while `/readyz` said ready. A stall is publishes timing out or refused for lack of storage, none acknowledged,
for `stall_after` seconds while connected; then the server is restarted, at most once per `restart_every` seconds
(the disk may still be full).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import nats.js.errors

STALL_AFTER = 10.0
RESTART_EVERY = 60.0
INSUFFICIENT_RESOURCES = 10023  # JetStream's refusal when its storage limit is reached


def not_stored(exc: BaseException) -> bool:
    """Whether a publish failed as a server that stopped storing fails it: no answer, or no room in its store."""
    if isinstance(exc, TimeoutError):
        return True
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code == INSUFFICIENT_RESOURCES


class StallWatch:
    """Hears each publish's outcome and calls `restart` when none was stored for `stall_after` seconds."""

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
        self._first_failure: float | None = None  # of the failures since the last acknowledgement
        self._restarted = -restart_every

    def acknowledged(self) -> None:
        self._first_failure = None

    def not_stored(self) -> None:
        now = self.clock()
        if self._first_failure is None:
            self._first_failure = now
        elif now - self._first_failure >= self.stall_after and now - self._restarted >= self.restart_every:
            self._first_failure = None
            self._restarted = now
            self.restart()
