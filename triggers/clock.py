"""Time as a dependency: the system clock in production, a hand-moved clock in tests (delays without waiting)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` when time jumps (a manual clock moved); the system clock never calls it."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def on_change(self, listener: Callable[[], None]) -> None:
        return None


class ManualClock:
    """A clock tests move with `advance`; schedulers listening are woken at once."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        self._now += delta
        for listener in list(self._listeners):
            listener()
        return self._now

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)
