"""SIGTERM and SIGHUP end a file-writing command as Ctrl-C does, so that its clean-up runs."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stop_as_interrupt() -> Iterator[None]:
    """Within it, SIGTERM (`timeout` in a cron job, a service manager) and SIGHUP (a closed terminal) raise
    KeyboardInterrupt: by default Python ends on them at once, skipping `finally`, and `db backup` left its partial
    file, `db restore` its copy of the backup, as large as the database, beside the data."""

    def interrupt(_signal: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # One ignored on purpose stays ignored: `nohup leadhub db backup` must outlive the terminal it was started from.
    taken = [number for number in STOP_SIGNALS if signal.getsignal(number) is not signal.SIG_IGN]
    previous = {number: signal.signal(number, interrupt) for number in taken}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
