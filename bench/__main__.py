"""`python -m bench`: the benchmarks in one run, one table, and bench/results.json.

    python -m bench                                   # quick sizes, embedded NATS + SQLite, every bench
    python -m bench --size full                       # the sizes BENCHMARKS.md quotes
    python -m bench --only intake,rules               # some of: intake, imap, rules, identity
    python -m bench --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test
    python -m bench --compare                         # also the same form load against Node-RED
    python -m bench compare-n8n                       # only that comparison (Node-RED; n8n when supported)

On PostgreSQL every bench works in a scratch database created next to the one given and dropped afterwards.
Each bench is the module of the same name (bench/intake.py, bench/imap.py, bench/rules.py, bench/identity.py,
bench/nodered.py); this file only chooses sizes, runs them and reports. Figures are not assertions: the table
marks each against the issue's target on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import REPO, machine

BENCHES = ("intake", "imap", "rules", "identity")
SIZES: dict[str, dict[str, int]] = {
    "quick": {"intake_seconds": 5, "concurrency": 32, "imap_messages": 2000, "rules": 1000, "events": 5000,
              "actions": 300, "identity_people": 2000, "identity_preload": 100_000},
    "full": {"intake_seconds": 10, "concurrency": 32, "imap_messages": 10000, "rules": 1000, "events": 20000,
             "actions": 1000, "identity_people": 5000, "identity_preload": 1_000_000},
}  # fmt: skip
MB = 1_000_000 / 2**20  # MiB per MB: the RSS target is in MB


@asynccontextmanager
async def scratch_database(admin_url: str | None) -> AsyncIterator[str | None]:
    """A fresh PostgreSQL database next to admin_url (dropped afterwards); None stays None (SQLite in a temp dir)."""
    if not admin_url:
        yield None
        return
    from tests.conftest import _create_pg_database, _drop_pg_database

    url, name = await _create_pg_database(admin_url)
    try:
        yield url
    finally:
        await _drop_pg_database(admin_url, name)


async def bench_intake(size: dict[str, int], database_url: str | None) -> dict[str, Any]:
    """Form posts from wrk for a fixed time: accepted/s, p50/p99, leads/s end to end, daemon + NATS peak RSS."""
    from bench.common import spawned_daemon
    from bench.intake import measure_wrk

    if shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    form = {"name": "site-form", "type": "form", "rate_limit": None}
    async with scratch_database(database_url) as url:
        env = {"LEADHUB_DATABASE_URL": url} if url else {}
        async with spawned_daemon([form], env=env) as (base_url, process):
            await measure_wrk(base_url, "site-form", 2, size["concurrency"], 1, None)  # warm-up
            return await measure_wrk(base_url, "site-form", size["intake_seconds"], size["concurrency"], 1, process.pid)


async def bench_imap(size: dict[str, int], database_url: str | None) -> dict[str, Any]:
    """A backlog of messages in a real Dovecot until all are leads."""
    from bench import imap
    from tests.imap_server import DOVECOT

    if shutil.which(DOVECOT) is None:
        return {"skipped": "dovecot is not installed (apt-get install dovecot-imapd)"}
    from leadhub.hub.logging import configure

    configure("warning")  # the hub runs in this process; its info lines would bury the table
    async with scratch_database(database_url) as url:
        result = await imap.run(size["imap_messages"], live=False, limit=300.0, fetch_batch=100, database_url=url)
    result.pop("machine", None)
    return result


async def bench_rules(size: dict[str, int], database_url: str | None) -> dict[str, Any]:
    """Rule matching in memory, and the scheduler sending survey emails into a local SMTP sink."""
    from bench import rules

    matching = await asyncio.to_thread(rules.bench_matching, size["rules"], size["events"])
    scheduler = await rules.bench_scheduler(size["actions"], database_url)
    return {"matching": matching, "scheduler": scheduler}


async def bench_identity(size: dict[str, int], database_url: str | None) -> dict[str, Any]:
    """Precision, recall and duplicate rate on the labelled data set; throughput empty and with contacts preloaded."""
    from bench import identity

    async with scratch_database(database_url) as url:
        return await identity.run(size["identity_people"], size["identity_preload"], url)


def _redact(arg: str) -> str:
    """A database URL's password stays out of results.json."""
    if "://" not in arg:
        return arg
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    prefix, _, url = arg.rpartition("=") if arg.startswith("--") else ("", "", arg)
    try:
        return prefix + ("=" if prefix else "") + make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not a database URL: keep only its scheme
        return arg.split("://", 1)[0] + "://..."


async def bench_compare(size: dict[str, int]) -> dict[str, Any]:
    """The intake load (same wrk script, time and connections) against an equivalent Node-RED flow."""
    from bench import nodered

    return await nodered.run(size["intake_seconds"], size["concurrency"])


async def _guarded(name: str, run: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """Run one bench; a failure is recorded in its result and the others still run."""
    print(f"bench: {name} ...", file=sys.stderr, flush=True)
    began = time.perf_counter()
    try:
        result = await run()
    except (Exception, SystemExit) as exc:
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
    result["wall_seconds"] = round(time.perf_counter() - began, 1)
    return result


def rows(results: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(what, figure, target, verdict) for the table; skipped and failed benches get one row saying so."""
    table: list[tuple[str, str, str, str]] = []

    def add(what: str, value: Any, target: str = "", met: bool | None = None, fmt: str = "{:,.0f}") -> None:
        shown = fmt.format(value) if isinstance(value, int | float) else str(value)
        table.append((what, shown, target, "" if met is None else ("met" if met else "NOT met")))

    for name, result in results.items():
        if "skipped" in result or "error" in result:
            add(name, f"skipped: {result['skipped']}" if "skipped" in result else f"error: {result['error']}")
            continue
        if name == "intake":
            add("intake: accepted/s (wrk)", result["accepted_per_s"], ">= 8,000", result["accepted_per_s"] >= 8000)
            add("intake: p50 latency", result["p50_ms"], "", None, "{:.1f} ms")
            add("intake: p99 latency", result["p99_ms"], "<= 50 ms", result["p99_ms"] <= 50, "{:.1f} ms")
            leads = result["with_events_leads_per_s"]
            add("end to end: leads/s, their events out", leads, ">= 3,000", leads >= 3000)
            add("  leads/s stored (events not waited for)", result["end_to_end_leads_per_s"])
            rss_mb = (result["daemon_peak_rss_mib"] or 0) / MB
            add("peak RSS, daemon + NATS (+ workers), under intake", rss_mb, "<= 200 MB", rss_mb <= 200, "{:.0f} MB")
            own, nats = result["daemon_peak_rss_own_mib"] / MB, result["daemon_peak_rss_children_mib"] / MB
            add("  of which daemon / its children (each at its peak)", f"{own:.0f} / {nats:.0f} MB")
            if pss := result.get("daemon_peak_pss_mib"):  # shared code pages counted once: what the machine gives
                add("  the same as PSS (shared pages counted once)", pss / MB, "", None, "{:.0f} MB")
            if result["failures"]:
                add("intake: non-2xx answers", result["failures"], "0", False)
        elif name == "imap":
            rate = result["messages_per_second"] or 0
            add(f"IMAP: {result['messages']:,} messages to leads, messages/s", rate, ">= 400", rate >= 400)
        elif name == "rules":
            events = result["matching"]["events_per_second"]
            add(f"rules: events/s against {result['matching']['rules']:,} rules", events, ">= 20,000", events >= 20000)
            actions = result["scheduler"]["actions_per_second"]
            add("rules: scheduler, survey emails/s", actions, ">= 500", actions >= 500)
        elif name == "identity":
            add("identity: precision", result["precision"], ">= 0.995", result["precision"] >= 0.995, "{:.4f}")
            add("identity: recall", result["recall"], ">= 0.97", result["recall"] >= 0.97, "{:.4f}")
            add("identity: recall of the linkable pairs", result["recall_of_linkable"], "", None, "{:.4f}")
            add("identity: duplicate rate (contacts per person - 1)", result["duplicate_rate"], "", None, "{:.4f}")
            add("identity: inquiries/s, empty store", result["per_s_empty"])
            if "per_s_preloaded" in result:
                ratio = result["preloaded_vs_empty"]
                add(f"identity: inquiries/s with {result['preload']:,} contacts", result["per_s_preloaded"])
                add("identity: preloaded / empty", ratio, ">= 0.90", ratio >= 0.9, "{:.2f}")
        elif name == "nodered":
            add("Node-RED flow: accepted/s (same wrk load)", result["accepted_per_s"])
            add("Node-RED flow: p50 / p99", f"{result['p50_ms']:.1f} / {result['p99_ms']:.1f} ms")
            add("Node-RED flow: peak RSS", (result["peak_rss_mib"] or 0) / MB, "", None, "{:.0f} MB")
        else:
            for key, value in _numbers(result):
                add(f"{name}: {key}", value, "", None, "{:,.6g}")
    return table


def _numbers(result: dict[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    """The numeric leaves of a result (for a bench this file knows nothing about)."""
    found: list[tuple[str, float]] = []
    for key, value in result.items():
        if key == "wall_seconds":
            continue
        if isinstance(value, dict):
            found += _numbers(value, f"{prefix}{key}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            found.append((f"{prefix}{key}", value))
    return found


def render(table: list[tuple[str, str, str, str]]) -> str:
    header = ("what", "figure", "target (2 cores)", "")
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(4)]
    lines = [" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in [header, *table]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", nargs="?", choices=("run", "compare-n8n", "compare-nodered"), default="run")
    parser.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated, from: {', '.join(BENCHES)}")
    parser.add_argument("--size", choices=tuple(SIZES), default="quick")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("LEADHUB_DATABASE_URL"),
        help="PostgreSQL (postgresql+asyncpg://...) to measure on; default: SQLite (or $LEADHUB_DATABASE_URL)",
    )
    parser.add_argument("--compare", action="store_true", help="also run the Node-RED comparison")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results.json")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    if unknown := sorted(set(args.only) - set(BENCHES)):
        parser.error(f"--only: unknown {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    if args.command != "run":
        args.only, args.compare = [], True
    return args


async def run(args: argparse.Namespace) -> dict[str, Any]:
    size = SIZES[args.size]
    facts = machine()
    plan: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
        "intake": lambda: bench_intake(size, args.database_url),
        "imap": lambda: bench_imap(size, args.database_url),
        "rules": lambda: bench_rules(size, args.database_url),
        "identity": lambda: bench_identity(size, args.database_url),
    }
    results = {name: await _guarded(name, plan[name]) for name in BENCHES if name in args.only}
    if args.compare:
        results["nodered"] = await _guarded("compare (Node-RED)", lambda: bench_compare(size))
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench", *map(_redact, sys.argv[1:])]),
        "machine": facts,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "parameters": {
            "size": args.size,
            **size,
            "database": "postgresql" if args.database_url else "sqlite",
            "nats": "embedded",
            "processes": layout(),
            "benches": list(results),
        },
        "results": results,
    }


def layout() -> dict[str, str]:
    """The daemon's process layout the benches pass on (bench/common.py): empty is one process, every role."""
    names = ("LEADHUB_WORKERS", "LEADHUB_ROLES", "LEADHUB_WORKER_ROLES", "LEADHUB_PIPELINE_BATCH_SIZE")
    return {name: os.environ[name] for name in names if os.environ.get(name)}


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    report = asyncio.run(run(args))
    table = rows(report["results"])
    report["table"] = [dict(zip(("what", "figure", "target", "verdict"), row, strict=True)) for row in table]
    args.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    m = report["machine"]
    print(
        f"leadhub {m['commit']}{' (uncommitted changes)' if m['uncommitted_changes'] else ''} on {m['cpus']} x "
        f"{m['cpu_model']}, {m['memory_gib']} GiB, Python {m['python']}; {report['parameters']['database']}, "
        f"size {args.size}; load average before {m['load_average'][0]}, after {report['load_average_after'][0]}"
    )
    processes = report["parameters"]["processes"]
    print("processes: " + (" ".join(f"{k}={v}" for k, v in processes.items()) or "one, every role (the default)"))
    print(render(table))
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
