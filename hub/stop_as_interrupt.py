"""SIGTERM and SIGHUP end a file-writing command as Ctrl-C does, so that its clean-up runs."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stop_as_interrupt() -> Iterator[None]:
    """Within it, SIGTERM (`timeout` in a cron job, a service manager) and SIGHUP (a closed terminal) do what SIGINT
    does: by default Python ends on them at once, skipping `finally`, and `db backup` left its partial file,
    `db restore` its copy of the backup, as large as the database, beside the data; `db upgrade` left a new SQLite
    database root's (not handed to the daemon's user), or its PostgreSQL session waiting for the migration lock."""

    def interrupt(_signal: int, frame: FrameType | None) -> None:
        ctrl_c = signal.getsignal(signal.SIGINT)
        if callable(ctrl_c):  # Python's raises KeyboardInterrupt; asyncio.run's cancels its task first, then does
            ctrl_c(signal.SIGINT, frame)
            return
        raise KeyboardInterrupt  # SIGINT ignored (a background job) or left to the system: Ctrl-C's end all the same

    # One ignored on purpose stays ignored: `nohup leadhub db backup` must outlive the terminal it was started from.
    taken = [number for number in STOP_SIGNALS if signal.getsignal(number) is not signal.SIG_IGN]
    previous = {number: signal.signal(number, interrupt) for number in taken}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
