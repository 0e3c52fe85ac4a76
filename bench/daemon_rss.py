"""Idle resident memory of `leadhub run`: the Python process and its NATS child, right after /readyz says 200.

Not a load test: it starts the daemon (one form connector, SQLite in a temporary data dir) a few times on
the same database and reads VmRSS once the daemon is ready and has settled. The first start creates the
schema; the figures are from the restarts, which is what a deployed daemon does every day.

    python -m bench.daemon_rss --runs 3
    python -m bench.daemon_rss --runs 3 --env MALLOC_ARENA_MAX=2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from bench.common import child_pids, free_port, machine, rss_kib, stop_process, wait_ready

CONNECTORS = [{"name": "site-form", "type": "form", "rate_limit": None}]


async def one_start(tmp: Path, env: dict[str, str], settle: float) -> dict[str, float]:
    """Start the daemon on `tmp`'s data dir, wait for ready + `settle` seconds, read RSS, stop it."""
    port = free_port()
    config = tmp / "leadhub.yaml"
    config.write_text(yaml.safe_dump({"connectors": CONNECTORS, "log_level": "warning"}))
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LEADHUB_")}
    full_env |= {"LEADHUB_DATA_DIR": str(tmp / "data"), "LEADHUB_HTTP_PORT": str(port), **env}
    log_path = tmp / "daemon.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "leadhub.hub", "run", "--config", str(config)], env=full_env, stdout=log, stderr=log
        )
        try:
            await wait_ready(f"http://127.0.0.1:{port}", process, log_path)
            await asyncio.sleep(settle)  # the store side and the first relay/consumer polls have run
            own = rss_kib(process.pid) / 1024
            nats = sum(rss_kib(child) for child in child_pids(process.pid)) / 1024
        finally:
            stop_process(process)
    return {"daemon_mib": round(own, 1), "nats_mib": round(nats, 1)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="restarts measured on the same database")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds after ready before reading RSS")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the daemon's environment")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory(prefix="leadhub-rss-") as name:
        tmp = Path(name)
        first = await one_start(tmp, env, args.settle)  # creates the schema: alembic is imported here
        runs = [await one_start(tmp, env, args.settle) for _ in range(args.runs)]
    own = [run["daemon_mib"] for run in runs]
    print(
        json.dumps(
            {
                "env": env,
                "first_start_on_empty_database": first,
                "restarts": runs,
                "daemon_median_mib": statistics.median(own),
                "machine": machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
