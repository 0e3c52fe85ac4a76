"""How many CPUs this process may use, for `workers: auto`: its affinity mask, and its cgroup's CPU quota.

A container limited with `docker run --cpus 2` (or a unit with `CPUQuota=200%`) sees every core of the host in its
affinity mask; counting those on a 64-core host started 64 processes (~120 MiB each) to share two CPUs' time.
The quota is the tightest `cpu.max` (cgroup v2) or `cpu.cfs_quota_us` / `cpu.cfs_period_us` (v1) from the
process's cgroup up to the root, rounded up: 1.5 CPUs are two processes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

CGROUP_ROOTS = (Path("/sys/fs/cgroup"),)
OWN_CGROUP = Path("/proc/self/cgroup")


def usable_cpus() -> int:
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return allowed if quota is None else max(1, min(allowed, math.ceil(quota)))


def cgroup_cpu_quota() -> float | None:
    """CPUs' worth of time the cgroups allow this process; None: no quota (or no cgroup information)."""
    quotas = [quota for directory, read in _cgroup_directories() if (quota := _read(read, directory)) is not None]
    return min(quotas) if quotas else None


def _cgroup_directories() -> Iterator[tuple[Path, Callable[[Path], float | None]]]:
    """Each directory from the process's cgroup up to its hierarchy's root (a container's own group is the root of
    the mount it sees), with how its quota is read there."""
    try:
        lines = OWN_CGROUP.read_text().splitlines()
    except OSError:
        return
    for line in lines:
        fields = line.split(":", 2)  # hierarchy id, controllers (none: cgroup v2), the group's path
        if len(fields) != 3:
            continue
        _, controllers, group = fields
        if controllers == "":
            bases, read = list(CGROUP_ROOTS), _v2_quota
        elif "cpu" in controllers.split(","):
            bases, read = [root / controllers for root in CGROUP_ROOTS], _v1_quota
        else:
            continue
        for base in bases:
            directory = base / group.lstrip("/")
            for candidate in (directory, *directory.parents):
                yield candidate, read
                if candidate == base:
                    break


def _read(read: Callable[[Path], float | None], directory: Path) -> float | None:
    try:
        return read(directory)
    except (OSError, ValueError, ZeroDivisionError):  # not there, not readable, not numbers: no quota known here
        return None


def _v2_quota(directory: Path) -> float | None:
    quota, period = (directory / "cpu.max").read_text().split()[:2]
    return None if quota == "max" else int(quota) / int(period)


def _v1_quota(directory: Path) -> float | None:
    quota = int((directory / "cpu.cfs_quota_us").read_text())
    return None if quota <= 0 else quota / int((directory / "cpu.cfs_period_us").read_text())
