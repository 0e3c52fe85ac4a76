"""CPU cost per item, split by stage: intake (HTTP + publish) and pipeline + relay, daemon and NATS separately.

CPU seconds per 1,000 items does not depend on what else the machine is doing, so it compares
code versions fairly on a shared box where throughput figures wobble.

    python -m bench.cpu_per_item -n 10000
    python -m bench.cpu_per_item -n 10000 --profile /tmp/prof   # also py-spy raw profiles of both phases
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml

from bench.common import child_pids, free_port, machine, metric, wait_ready

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def start_profiler(folder: Path | None, phase: str, pid: int) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the daemon for one phase; its own CPU is not the daemon's, so the figures stand.

    `--nonblocking`: py-spy otherwise stops the process for each sample, and on these VMs the stop lands at the
    next system call, which piled the samples onto syscall sites (a cheap getpid inside get_running_loop showed
    as 17% of an accept) and hid the Python code that ran before them.
    """
    if folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    command = [py_spy, "record", "--nonblocking", "-r", "200", "-f", "raw", "-o", str(folder / f"{phase}.txt")]
    command += ["--pid", str(pid)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL)


def stop_profiler(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(30)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("-c", type=int, default=32)
    parser.add_argument("--profile", type=Path, help="write py-spy raw profiles of each phase here")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("needs wrk (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "leadhub.yaml"
        config.write_text(
            yaml.safe_dump(
                {"log_level": "warning", "connectors": [{"name": "site-form", "type": "form", "rate_limit": None}]}
            )
        )
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEADHUB_")}
        env |= {"LEADHUB_DATA_DIR": f"{tmp}/data", "LEADHUB_HTTP_PORT": str(port)}
        if os.environ.get("LEADHUB_DATABASE_URL"):
            env["LEADHUB_DATABASE_URL"] = os.environ["LEADHUB_DATABASE_URL"]
        command = [sys.executable, "-m", "leadhub.hub", "run", "--config", str(config)]
        # Phase 1: intake only (the pipeline role off), so its CPU is the HTTP + publish cost alone.
        process = subprocess.Popen([*command], env={**env, "LEADHUB_ROLES": "http"})
        await wait_ready(base_url, process)
        nats_pid = child_pids(process.pid)[0]
        profiler = start_profiler(args.profile, "intake", process.pid)
        daemon0, nats0 = cpu_seconds(process.pid), cpu_seconds(nats_pid)
        script = Path(__file__).with_name("wrk_form.lua")
        # wrk has no request count: run long enough for about n requests at a modest rate.
        began = time.perf_counter()
        out = subprocess.run(
            [
                "wrk",
                "-t",
                "1",
                "-c",
                str(args.c),
                "-d",
                f"{max(2, args.n // 2000)}s",
                "-s",
                str(script),
                base_url,
                "--",
                "/hooks/site-form",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        intake_wall = time.perf_counter() - began
        accepted = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        intake_daemon, intake_nats = cpu_seconds(process.pid) - daemon0, cpu_seconds(nats_pid) - nats0
        stop_profiler(profiler)
        process.terminate()
        process.wait(15)
        # Phase 2: the pipeline and relay drain the backlog (HTTP idle).
        process = subprocess.Popen([*command], env={**env, "LEADHUB_ROLES": "pipeline,relay"})
        await wait_ready(base_url, process)
        nats_pid = child_pids(process.pid)[0]
        profiler = start_profiler(args.profile, "pipeline", process.pid)
        daemon0, nats0 = cpu_seconds(process.pid), cpu_seconds(nats_pid)
        began = time.perf_counter()
        async with aiohttp.ClientSession() as session:
            while await metric(session, base_url, "leadhub_pipeline_processed_total", 'outcome="stored"') < accepted:
                await asyncio.sleep(0.05)
            # Every event the stored items wrote, relayed: three per new person, fewer for one already known (a
            # PostgreSQL database kept from an earlier run knows the phones wrk sends again).
            while await metric(session, base_url, "leadhub_events_published_total") < await metric(
                session, base_url, "leadhub_outbox_written_total"
            ):
                await asyncio.sleep(0.05)
        drain_wall = time.perf_counter() - began
        pipe_daemon, pipe_nats = cpu_seconds(process.pid) - daemon0, cpu_seconds(nats_pid) - nats0
        stop_profiler(profiler)
        process.terminate()
        process.wait(15)
    per_k = 1000 / accepted
    print(
        json.dumps(
            {
                "bench": "cpu_per_item",
                "machine": machine(),
                "items": accepted,
                "result": {
                    "intake_cpu_ms_per_item": {
                        "daemon": round(intake_daemon * per_k, 3),
                        "nats": round(intake_nats * per_k, 3),
                    },
                    "pipeline_relay_cpu_ms_per_item": {
                        "daemon": round(pipe_daemon * per_k, 3),
                        "nats": round(pipe_nats * per_k, 3),
                    },
                    "intake_wall_per_s": round(accepted / intake_wall),
                    "drain_items_per_s": round(accepted / drain_wall),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
