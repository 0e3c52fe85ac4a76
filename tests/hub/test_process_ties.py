"""A child tied to the daemon ends with it, even when the daemon died before the tie was made."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from leadhub.hub import process_ties
from leadhub.hub.process_ties import dies_with_parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")


def test_a_child_whose_parent_died_before_the_tie_ends_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """PR_SET_PDEATHSIG set after the parent died signals nothing: a worker forked just before the daemon's SIGKILL
    ran on, orphaned, holding the HTTP port with SO_REUSEPORT, so no new daemon could bind it. The child sees that
    its parent is no longer the one that forked it (reparented), and ends itself with the signal. Here the
    "parent that forked it" is made another pid, as it is once the daemon has died."""
    monkeypatch.setattr(process_ties.os, "getpid", lambda: 1)
    tie = dies_with_parent(signal.SIGTERM)
    monkeypatch.undo()
    child = subprocess.Popen(["sleep", "30"], preexec_fn=tie)  # noqa: PLW1509 - what the daemon does
    try:
        assert child.wait(timeout=10) == -signal.SIGTERM
    finally:
        child.kill()


def test_a_child_of_a_living_parent_runs() -> None:
    child = subprocess.Popen([sys.executable, "-c", "print(1)"], preexec_fn=dies_with_parent(signal.SIGTERM))  # noqa: PLW1509
    assert child.wait(timeout=10) == 0
    assert os.getpid() > 1
