"""Shared bench plumbing: a daemon to measure (spawned or given), metric scraping, machine facts."""

from __future__ import annotations

import asyncio
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import yaml

REPO = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    """Facts that make a figure comparable: CPUs, memory, load at the time, Python, OS, the commit measured."""
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = next((int(line.split()[1]) for line in meminfo if line.startswith("MemTotal")), 0)
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), None)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model or platform.processor() or None,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit,
        "uncommitted_changes": bool(dirty),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def metric(session: aiohttp.ClientSession, base_url: str, name: str, labels: str = "") -> float:
    async with session.get(base_url + "/metrics") as response:
        text = await response.text()
    pattern = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? ([0-9.e+-]+)$", re.MULTILINE)
    total = 0.0
    for match in pattern.finditer(text):
        if labels in (match.group(1) or ""):
            total += float(match.group(2))
    return total


def rss_kib(pid: int) -> int:
    return _proc_kib(f"/proc/{pid}/status", "VmRSS:")


def _proc_kib(path: str, field: str) -> int:
    """A `Field:   123 kB` line of a /proc file, in KiB; 0 when the process is gone."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def child_pids(pid: int) -> list[int]:
    """The children of `pid`, read from /proc. Sampled up to 20 times a second during a drain, where starting
    `pgrep` for each sample cost ~10 ms of CPU, taken from the daemon being measured."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []  # the process is gone
    children: list[int] = []
    readable = False
    for task in tasks:
        try:
            children += (int(child) for child in (task / "children").read_text().split())
            readable = True
        except OSError:
            continue  # the thread ended meanwhile, or the kernel has no such file
    if not readable:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout
        return [int(p) for p in out.split()]
    return children


def pss_kib(pid: int) -> int:
    """Proportional set size: resident memory with each page shared by N processes counted 1/N in each."""
    return _proc_kib(f"/proc/{pid}/smaps_rollup", "Pss:")


class RssPeak:
    """Peak resident memory of a process, of its children, and of both together (sampled by the caller).

    Also the peak of their PSS sum: worker processes share the interpreter's and extensions' code pages
    (~22 MiB each), which a sum of RSS counts once per process; the PSS sum is what the machine gives them.
    """

    PSS_EVERY = 0.25  # seconds: a PSS read walks the process's page tables (~1.3 ms of CPU for 100 MiB), an RSS
    # read does not (~0.02 ms); sampled 20 times a second during a drain, PSS alone took ~12% of a core from the
    # daemon being measured

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.total = self.own = self.children = self.proportional = 0.0
        self._pss_at = -self.PSS_EVERY

    def sample(self) -> None:
        if not self.pid:
            return
        children_pids = child_pids(self.pid)
        own = rss_kib(self.pid) / 1024
        children = sum(rss_kib(child) for child in children_pids) / 1024
        self.own, self.children = max(self.own, own), max(self.children, children)
        self.total = max(self.total, own + children)
        now = time.monotonic()
        if now - self._pss_at >= self.PSS_EVERY:
            self._pss_at = now
            proportional = sum(pss_kib(pid) for pid in (self.pid, *children_pids)) / 1024
            self.proportional = max(self.proportional, proportional)

    def figures(self, prefix: str) -> dict[str, float | None]:
        if not self.pid:
            return {f"{prefix}peak_rss_mib": None}
        return {
            f"{prefix}peak_rss_mib": round(self.total, 1),
            f"{prefix}peak_rss_own_mib": round(self.own, 1),
            f"{prefix}peak_rss_children_mib": round(self.children, 1),
            f"{prefix}peak_pss_mib": round(self.proportional, 1),
        }


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as an admin stops the daemon; SIGKILL if it has not exited within 15 s."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


async def wait_ready(base_url: str, process: subprocess.Popen[bytes], log: Path | None = None) -> None:
    """Until `/readyz` answers 200; RuntimeError with the log's tail if the daemon exits or a minute passes."""
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(base_url + "/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                tail = (await asyncio.to_thread(log.read_text))[-3000:] if log else ""
                raise RuntimeError(f"daemon did not start:\n{tail}")
            await asyncio.sleep(0.1)


@asynccontextmanager
async def spawned_daemon(connectors: list[dict[str, Any]], env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """`leadhub run` in a temporary data dir (embedded NATS + SQLite unless env says otherwise)."""
    with tempfile.TemporaryDirectory(prefix="leadhub-bench-") as tmp:
        port = free_port()
        config = Path(tmp) / "leadhub.yaml"
        config.write_text(yaml.safe_dump({"connectors": connectors, "log_level": "warning"}))
        # What the bench is asked to measure against, and the tuning knobs worth comparing.
        passed_on = (
            "LEADHUB_DATABASE_URL",
            "LEADHUB_NATS_URL",
            "LEADHUB_PIPELINE_BATCH_SIZE",
            "LEADHUB_WORKERS",
            "LEADHUB_ROLES",
            "LEADHUB_WORKER_ROLES",
            "LEADHUB_STREAM_DUPLICATE_WINDOW",
        )
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("LEADHUB_") or k in passed_on}
        full_env |= {"LEADHUB_DATA_DIR": str(Path(tmp) / "data"), "LEADHUB_HTTP_PORT": str(port), **(env or {})}
        log = open(Path(tmp) / "daemon.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "leadhub.hub", "run", "--config", str(config)], env=full_env, stdout=log, stderr=log
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            await wait_ready(base_url, process, Path(tmp) / "daemon.log")
            yield base_url, process
        finally:
            stop_process(process)
            log.close()
