"""Intake benchmark: N form posts with concurrency C; accepted/s, latency p50/p99, end-to-end leads/s.

python -m bench.intake -n 20000 -c 64            # spawns a daemon (embedded NATS + SQLite)
python -m bench.intake --url http://host:8080 --connector site-form
LEADHUB_DATABASE_URL=postgresql+asyncpg://... python -m bench.intake   # spawned, on PostgreSQL
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import RssPeak, machine, metric, spawned_daemon

PROCESSED = "leadhub_pipeline_processed_total"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def _client(url: str, start: int, count: int, concurrency: int, run_id: str) -> tuple[list[float], int]:
    latencies: list[float] = []
    failures = 0
    next_index = start
    end = start + count
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal next_index, failures
            while next_index < end:
                i = next_index
                next_index += 1
                body = {
                    "name": f"Bench {i}",
                    "phone": f"+7916{i % 10_000_000:07d}",
                    "email": f"b{i}-{run_id}@example.com",
                    "message": "benchmark",
                    "utm_source": "bench",
                }
                began = time.perf_counter()
                async with session.post(url, json=body, headers={"Idempotency-Key": f"{run_id}-{i}"}) as response:
                    await response.read()
                    if response.status != 202:
                        failures += 1
                latencies.append(time.perf_counter() - began)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, failures


def _client_process(args: tuple[str, int, int, int, str]) -> tuple[list[float], int]:
    return asyncio.run(_client(*args))


async def measure(
    base_url: str, connector: str, n: int, concurrency: int, procs: int, daemon_pid: int | None
) -> dict[str, Any]:
    url = f"{base_url}/hooks/{connector}"
    run_id = os.urandom(4).hex()
    rss = RssPeak(daemon_pid)
    async with aiohttp.ClientSession() as session:
        stored_before = await metric(session, base_url, PROCESSED, 'outcome="stored"')
        per_proc = n // procs
        jobs = [(url, p * per_proc, per_proc, max(1, concurrency // procs), run_id) for p in range(procs)]
        began = time.perf_counter()
        loop = asyncio.get_running_loop()
        with multiprocessing.get_context("spawn").Pool(procs) as pool:
            result = loop.run_in_executor(None, pool.map, _client_process, jobs)
            while not result.done():
                rss.sample()
                await asyncio.sleep(0.2)
            outcomes = await result
        accepted_at = time.perf_counter()
        latencies = [lat for lats, _ in outcomes for lat in lats]
        failures = sum(f for _, f in outcomes)
        total = per_proc * procs
        done_at, events_at = await _stored_then_relayed(session, base_url, stored_before + total - failures, rss)
    return {
        "posts": total,
        "failures": failures,
        "concurrency": concurrency,
        "client_processes": procs,
        "accepted_per_s": round(total / (accepted_at - began)),
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
        **_end_to_end(total - failures, began, accepted_at, done_at, events_at),
        **rss.figures("daemon_"),
    }


def _wrk_seconds(text: str) -> float:
    value, unit = re.match(r"([0-9.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


async def run_wrk(
    base_url: str, path: str, seconds: int, concurrency: int, threads: int, pid: int | None = None
) -> tuple[dict[str, Any], RssPeak]:
    """wrk with bench/wrk_form.lua (unique form posts) against base_url + path; its figures and the peak RSS of pid.

    Shared by the leadhub intake bench and the comparison with other tools (bench/nodered.py), so both get
    exactly the same load.
    """
    script = Path(__file__).with_name("wrk_form.lua")
    began = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(concurrency),
        "-d",
        f"{seconds}s",
        "--latency",
        "-s",
        str(script),
        base_url,
        "--",
        path,
        stdout=asyncio.subprocess.PIPE,
    )
    rss = RssPeak(pid)
    while process.returncode is None:
        rss.sample()
        try:
            await asyncio.wait_for(process.wait(), 0.25)
        except TimeoutError:
            pass
    out = (await process.stdout.read()).decode()  # type: ignore[union-attr]
    ended = time.perf_counter()
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    errors = re.search(r"Socket errors: .*", out)
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
    return {
        "tool": "wrk",
        "posts": requests,
        "failures": non_2xx,
        "socket_errors": errors.group(0) if errors else None,
        "concurrency": concurrency,
        "seconds": seconds,
        "accepted_per_s": round((requests - non_2xx) / (ended - began)),
        "p50_ms": round(_wrk_seconds(percentiles["50"]) * 1000, 2),
        "p99_ms": round(_wrk_seconds(percentiles["99"]) * 1000, 2),
        "began": began,
        "ended": ended,
    }, rss


async def _reach(
    session: aiohttp.ClientSession, base_url: str, name: str, labels: str, target: float, rss: RssPeak
) -> float:
    """Until the metric reaches `target` (at most 300 s), sampling memory meanwhile; the time it was reached."""
    deadline = time.perf_counter() + 300
    while await metric(session, base_url, name, labels) < target:
        rss.sample()
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{name} did not reach {target} within 300 s")
        await asyncio.sleep(0.05)
    return time.perf_counter()


async def _stored_then_relayed(
    session: aiohttp.ClientSession, base_url: str, stored_target: float, rss: RssPeak
) -> tuple[float, float]:
    """When every accepted post was a stored lead, and when every event those leads made was on EVENTS."""
    done_at = await _reach(session, base_url, PROCESSED, 'outcome="stored"', stored_target, rss)
    written = await metric(session, base_url, "leadhub_outbox_written_total")  # all of them are written by now
    return done_at, await _reach(session, base_url, "leadhub_events_published_total", "", written, rss)


def _end_to_end(leads: int, began: float, accepted_at: float, done_at: float, events_at: float) -> dict[str, Any]:
    return {
        "end_to_end_leads_per_s": round(leads / (done_at - began)),
        "drain_after_last_accept_s": round(done_at - accepted_at, 2),
        "with_events_leads_per_s": round(leads / (events_at - began)),
        "events_out_after_last_accept_s": round(events_at - accepted_at, 2),
    }


async def measure_wrk(
    base_url: str, connector: str, seconds: int, concurrency: int, threads: int, daemon_pid: int | None
) -> dict[str, Any]:
    """Load from wrk (C), so the load generator does not take the daemon's CPU the way a Python client does."""
    async with aiohttp.ClientSession() as session:
        stored_before = await metric(session, base_url, PROCESSED, 'outcome="stored"')
        load, rss = await run_wrk(base_url, f"/hooks/{connector}", seconds, concurrency, threads, daemon_pid)
        began, accepted_at = load.pop("began"), load.pop("ended")
        leads = load["posts"] - load["failures"]
        done_at, events_at = await _stored_then_relayed(session, base_url, stored_before + leads, rss)
    return {
        **load,
        **_end_to_end(leads, began, accepted_at, done_at, events_at),
        **rss.figures("daemon_"),  # own: the Python process; children: the embedded NATS server and workers
    }


async def run_load(args: argparse.Namespace, base_url: str, pid: int | None) -> dict[str, Any]:
    if args.tool == "wrk":
        await measure_wrk(base_url, args.connector, 2, args.c, 1, None)  # warm-up
        return await measure_wrk(base_url, args.connector, args.seconds, args.c, args.wrk_threads, pid)
    await measure(base_url, args.connector, args.warmup, args.c, 1, None)
    return await measure(base_url, args.connector, args.n, args.c, args.procs, pid)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20_000, help="form posts")
    parser.add_argument("-c", type=int, default=64, help="concurrent requests in flight")
    parser.add_argument("--procs", type=int, default=1, help="client processes generating the load")
    parser.add_argument("--url", help="a running daemon (default: spawn one)")
    parser.add_argument("--connector", default="site-form")
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument(
        "--tool",
        choices=("wrk", "python"),
        default="wrk" if shutil.which("wrk") else "python",
        help="load generator (wrk when installed: apt-get install wrk)",
    )
    parser.add_argument("--seconds", type=int, default=10, help="wrk: how long to load")
    parser.add_argument("--wrk-threads", type=int, default=1)
    args = parser.parse_args()
    if args.url:
        result = await run_load(args, args.url, None)
    else:
        form = {"name": args.connector, "type": "form", "rate_limit": None}
        async with spawned_daemon([form]) as (base_url, process):
            result = await run_load(args, base_url, process.pid)
    result["database"] = "postgresql" if "postgresql" in os.environ.get("LEADHUB_DATABASE_URL", "") else "sqlite"
    print(json.dumps({"bench": "intake", "machine": machine(), "result": result}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
