"""An exited worker's metric files folded into one file per type, so the shared directory stays bounded.

prometheus_client's multiprocess mode keeps each process's values in files named by its pid, and
`mark_process_dead` removes only the live gauges: the counters and histograms of every worker that ever ran
stay, and every /metrics reads them all. A worker in a crash loop left two 64 KiB files per restart, without end.
Their values still belong in the totals (a counter must not go down), so they are added into `counter_exited.db`
and `histogram_exited.db` and the pid's files removed. Readers take the directory's lock shared and the fold
takes it exclusive: a scrape never sees a value in both files or in neither.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import structlog
from prometheus_client import multiprocess
from prometheus_client.mmap_dict import MmapedDict

log = structlog.get_logger("leadhub.metrics")

SUMMED_TYPES = ("counter", "histogram", "summary")  # values that add up across processes (gauges do not)
EXITED = "exited"  # in place of a pid in the aggregate files' names: `counter_exited.db`
LOCK_FILE = ".lock"  # not *.db: the collector reads every *.db file
HEADER = 8  # a values file's used-bytes word and its padding
ENTRY_OVERHEAD = 28  # an entry beyond its key's UTF-8: length 4, padding up to 8, value and timestamp 16


@contextlib.contextmanager
def files_locked(directory: Path, *, shared: bool) -> Iterator[None]:
    """Hold the directory's lock: shared to read the files (a scrape), exclusive to fold them."""
    with open(directory / LOCK_FILE, "a+b") as lock:  # closing it releases the lock
        fcntl.flock(lock, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield


def fold_exited_process(directory: Path, pid: int) -> None:
    """Drop process `pid`'s live gauges and add its counters and histograms into the `exited` files.

    A file that cannot be folded (no room on the disk) stays as it is, counted as before, and is logged.
    """
    multiprocess.mark_process_dead(pid, str(directory))
    with files_locked(directory, shared=False):
        for kind in SUMMED_TYPES:
            exited = directory / f"{kind}_{pid}.db"
            if not exited.exists():
                continue
            try:
                _add_into(directory / f"{kind}_{EXITED}.db", exited)
            except OSError as exc:
                log.error("exited worker's metrics not folded; its file stays", file=str(exited), error=str(exc))
                continue
            exited.unlink()


def _add_into(total: Path, exited: Path) -> None:
    """Write `total` anew holding the sums of its values and `exited`'s, key by key; replaced in one rename."""
    sums: dict[str, float] = {}
    for path in (total, exited):
        if path.exists():
            for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
                sums[key] = sums.get(key, 0.0) + value
    new = total.with_name(f".{total.name}.new")
    size = HEADER + sum(len(key.encode()) + ENTRY_OVERHEAD for key in sums)
    fd = os.open(new, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
    try:  # every block allocated before it is mapped: a write to a sparse page on a full disk is a SIGBUS
        os.posix_fallocate(fd, 0, size)
    except OSError:
        new.unlink()
        raise
    finally:
        os.close(fd)
    values = MmapedDict(str(new))  # a file of this size is never grown: the entries fit
    try:
        for key, value in sums.items():
            values.write_value(key, value, 0.0)
    finally:
        values.close()
    os.replace(new, total)
