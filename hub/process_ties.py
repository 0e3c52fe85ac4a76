"""Child processes that end with the daemon: the kernel signals them when the daemon dies, even by SIGKILL."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def dies_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """A `preexec_fn` that asks Linux to send `sig` to the child when its parent exits; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None

    def tie() -> None:  # runs in the child between fork and exec
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig)

    return tie
