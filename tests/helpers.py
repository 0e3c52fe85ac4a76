"""Test helpers: wait on a condition with a deadline, free ports, corpus paths, the CLI in a clean environment."""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"
POLL = 0.02  # the first poll interval; it grows to POLL_MAX while the condition is not met
POLL_MAX = 0.1
# Deadlines say when a test gives up, never how fast something must be: the CI machine's speed varies threefold
# between sessions, and its two cores run four test processes and their daemons. A passing test never waits them.
DEADLINE_SCALE = 3.0


async def wait_for(probe: Callable[[], Awaitable[T]], *, timeout: float = 10.0, what: str = "condition") -> T:
    """Poll `probe` until it returns something truthy; fail the test with `what` at the deadline.

    The interval grows from 20 to 100 ms: a probe that lists hundreds of items over HTTP, polled every 20 ms for
    half a minute, took the CPU from the very work it waited for."""
    timeout *= DEADLINE_SCALE
    deadline = time.monotonic() + timeout
    last: T | None = None
    interval = POLL
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)  # a poll interval under the deadline, not a wait for something
        interval = min(POLL_MAX, interval * 1.5)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what}; last value: {last!r}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def corpus(*parts: str) -> Path:
    """A path under ../shared/corpus; the test is skipped when the corpus is absent."""
    path = CORPUS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"corpus not available: {path}")
    return path


def run_leadhub(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`leadhub ARGS` as a user runs it: no LEADHUB_ variable of the test run's own, only those in `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("LEADHUB_")}
    return subprocess.run(
        [sys.executable, "-m", "leadhub.hub", *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def directory_of_another_user(parent: Path) -> tuple[Path, int, int]:
    """A directory owned by `nobody`, as the daemon's home on a new machine: a command run as root in it must leave
    what it makes to that user. The directory, and that user's uid and gid."""
    nobody = pwd.getpwnam("nobody")
    home = parent / "opt-leadhub"
    home.mkdir()
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    return home, nobody.pw_uid, nobody.pw_gid
