"""Metrics shared between worker processes live in memory-mapped files: a full disk costs the metrics, never the
process (a sparse file's first write on a full filesystem was a SIGBUS, and the daemon crash-looped without a word).
Each case runs in a child process: the multiprocess mode changes prometheus_client for the whole interpreter."""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Many series, as trouble brings (each store error, dead letter reason, connector...), well past the first file size.
RECORD = """
import sys
from pathlib import Path
from leadhub.hub.metrics import Metrics, share_between_processes

directory = Path(sys.argv[1])
share_between_processes(directory, fresh=False)
metrics = Metrics(directory)
for i in range(2000):
    metrics.store_errors.labels(f"operation-{i}", "transient").inc()
metrics.dead_letters.labels("PermanentError").inc(3)
text = metrics.render().decode()
print("rendered", "leadhub_store_errors_total" in text)
"""

NO_ROOM_PAST = """
import errno, os

allocate = os.posix_fallocate

def no_room(fd, offset, length):
    if length > {limit}:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    allocate(fd, offset, length)

os.posix_fallocate = no_room
"""


def _record(directory: Path, prelude: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", prelude + RECORD, str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("limit", [0, 1 << 16], ids=["no file can be made", "no file can grow"])
def test_a_metrics_file_without_room_is_logged_and_the_values_kept_in_memory(tmp_path: Path, limit: int) -> None:
    directory = tmp_path / "metrics"
    done = _record(directory, NO_ROOM_PAST.format(limit=limit))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "metrics file cannot be written" in done.stdout and "disk_full=True" in done.stdout
    assert "rendered" in done.stdout
    assert all(path.stat().st_size > 0 for path in directory.glob("*.db")), "an empty file breaks /metrics"


def test_metrics_files_are_allocated_not_sparse(tmp_path: Path) -> None:
    """Every block of a values file is the filesystem's before it is mapped: a write to it cannot fault."""
    directory = tmp_path / "metrics"
    done = _record(directory)
    assert done.returncode == 0 and "rendered True" in done.stdout, done.stdout + done.stderr
    assert "cannot be written" not in done.stdout
    files = list(directory.glob("*.db"))
    assert files and any(path.stat().st_size > 1 << 16 for path in files)  # grown
    for path in files:
        assert path.stat().st_blocks * 512 >= path.stat().st_size, f"{path.name} is sparse"


@pytest.fixture
def full_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs filled up, with an empty metrics directory on it; skipped where mounting is not permitted."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        (mount_point / "metrics").mkdir()
        with contextlib.suppress(OSError), open(mount_point / "filler", "wb", buffering=0) as filler:
            while True:  # until ENOSPC
                filler.write(b"\0" * 4096)
        yield mount_point / "metrics"
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_workers_metrics_on_a_full_filesystem_do_not_kill_the_process(full_filesystem: Path) -> None:
    done = _record(full_filesystem)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stdout + done.stderr}"
    assert "metrics file cannot be written" in done.stdout and "disk_full=True" in done.stdout
    assert "rendered" in done.stdout


# A worker's life as far as its metrics go: a request counted, a webhook timed, a gauge set; then it exits.
WORKER_LIFE = """
import sys
from pathlib import Path
from leadhub.hub.metrics import Metrics, share_between_processes

directory = Path(sys.argv[1])
share_between_processes(directory, fresh=False)
metrics = Metrics(directory)
metrics.http_requests.labels("/hooks/{name}", "200").inc()
metrics.webhook("site-form").latency.observe(0.003)
metrics.pipeline_pending.set(7)
"""


def _live_a_worker_life(directory: Path) -> int:
    """Run one worker's life in its own process; its pid (it has exited)."""
    child = subprocess.Popen([sys.executable, "-c", WORKER_LIFE, str(directory)])
    assert child.wait(timeout=60) == 0
    return child.pid


def test_exited_workers_leave_a_bounded_number_of_files_and_their_counts_stay_in_the_totals(tmp_path: Path) -> None:
    """A worker in a crash loop left its counter and histogram files at every restart (mark_process_dead removes
    live gauges only): the directory, and the time of every /metrics that reads it, grew without end."""
    from leadhub.hub.exited_metrics import fold_exited_process
    from leadhub.hub.metrics import Metrics

    directory = tmp_path / "metrics"
    directory.mkdir()
    files_after: list[int] = []
    for _ in range(4):  # each life is a process start: enough to show the count of files stays put
        pid = _live_a_worker_life(directory)
        fold_exited_process(directory, pid)  # what the pool does when it reaps the worker
        files_after.append(len(list(directory.glob("*.db"))))
    assert files_after[-1] == files_after[1] <= 2, f"files after each restart: {files_after}"
    assert not list(directory.glob(f"*_{pid}.db")), "the exited worker's own files are gone"

    text = Metrics(directory).render().decode()
    assert 'leadhub_http_requests_total{route="/hooks/{name}",status="200"} 4.0' in text
    assert 'leadhub_hook_seconds_count{connector="site-form"} 4.0' in text
    assert 'leadhub_hook_seconds_bucket{connector="site-form",le="0.001"} 0.0' in text
    assert 'leadhub_hook_seconds_bucket{connector="site-form",le="0.005"} 4.0' in text
    assert "leadhub_pipeline_pending " not in text, "an exited worker's gauge no longer counts"


# Scrapes in another process while workers exit and are folded: each total it sees, in order, one a line.
SCRAPER = """
import re, sys
from pathlib import Path
from leadhub.hub.metrics import Metrics

directory, stop = Path(sys.argv[1]), Path(sys.argv[2])
metrics = Metrics(directory)
while True:
    last = stop.exists()  # a scrape after the last fold ends the list
    found = re.search(r'^leadhub_http_requests_total{.*} (\\S+)$', metrics.render().decode(), re.MULTILINE)
    print(found.group(1) if found else 0.0, flush=True)
    if last:
        break
"""


def test_a_scrape_while_workers_start_and_exit_never_fails_nor_sees_a_total_go_down(tmp_path: Path) -> None:
    """A scrape failed (struct.error, /metrics 500) on the values file a starting worker had just created, still
    empty. And the fold writes the sum and removes the exited file under the directory's lock: a scrape between the
    two would count the worker twice (then the total falls, which Prometheus takes for a counter reset)."""
    from leadhub.hub.exited_metrics import fold_exited_process

    directory, stop = tmp_path / "metrics", tmp_path / "stop"
    directory.mkdir()
    scraper = subprocess.Popen(
        [sys.executable, "-c", SCRAPER, str(directory), str(stop)], stdout=subprocess.PIPE, text=True
    )
    try:
        for _ in range(4):
            fold_exited_process(directory, _live_a_worker_life(directory))
    finally:
        stop.touch()
        seen, _ = scraper.communicate(timeout=60)
    totals = [float(line) for line in seen.split()]
    assert totals and totals[-1] == 4.0
    assert all(later >= earlier for earlier, later in itertools.pairwise(totals)), totals
