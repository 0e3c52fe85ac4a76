"""Rule engine figures: events matched per second against N rules (in memory), and scheduler throughput
into a local SMTP server (aiosmtpd) on SQLite or PostgreSQL.

    python -m bench.rules --rules 1000 --events 20000
    python -m bench.rules --actions 2000 [--database-url postgresql+asyncpg://...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from leadhub.triggers.context import build_context
from leadhub.triggers.engine import RuleIndex, evaluate_all
from leadhub.triggers.events import EVENT_OBJECTS
from leadhub.triggers.loader import load_rules
from leadhub.triggers.sandbox import Templates

CHANNELS = ("form", "email", "phone", "chat", "shop")


def _rules_yaml(count: int) -> str:
    """`count` rules spread over the event types, each with a typical two-part condition and one action."""
    kinds = list(EVENT_OBJECTS)
    lines = ["rules:"]
    for n in range(count):
        kind = kinds[n % len(kinds)]
        objects = EVENT_OBJECTS[kind]
        subject = "lead" if "lead" in objects else objects[0]
        field = {"lead": "channel", "order": "status", "contact": "email", "inquiry": "channel"}.get(subject, "id")
        lines += [
            f"  - id: rule-{n}",
            f"    on: {kind}",
            f"    if: \"{subject}.{field} == '{CHANNELS[n % len(CHANNELS)]}' and event.data.n is not none\"",
            "    do:",
            f'      - create_task: {{title: "rule {n} for {{{{ {subject}.id }}}}"}}',
        ]
    return "\n".join(lines) + "\n"


def bench_matching(rule_count: int, events: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "bench.yaml").write_text(_rules_yaml(rule_count))
        started = time.perf_counter()
        loaded = load_rules(Path(tmp), Templates())
        compile_seconds = time.perf_counter() - started
    assert not loaded.problems, loaded.problems[:3]
    index = RuleIndex(loaded.rules)
    now = datetime.now(UTC)
    kinds = list(EVENT_OBJECTS)
    row = {"id": "x", "channel": "form", "status": "completed", "email": "a@example.com", "tags": []}
    contexts = [
        build_context(
            {"id": f"e{n}", "type": kinds[n % len(kinds)], "data": {"n": n}},
            {name: row for name in EVENT_OBJECTS[kinds[n % len(kinds)]]},
            now,
        )
        for n in range(events)
    ]
    matched = 0
    started = time.perf_counter()
    for context in contexts:  # what the matcher does per event: every listener gets an evaluation (its trace)
        matched += sum(e.matched for e in evaluate_all(index, context["event"].type, context, now))
    seconds = time.perf_counter() - started
    return {
        "rules": rule_count,
        "events": events,
        "compile_seconds": round(compile_seconds, 2),
        "events_per_second": round(events / seconds),
        "evaluations_per_second": round(events * rule_count / len(kinds) / seconds),
        "matched": matched,
    }


async def bench_scheduler(actions: int, database_url: str | None) -> dict[str, float]:
    from leadhub.store.db import create_engine, upgrade
    from leadhub.triggers.actions.base import Deps
    from leadhub.triggers.actions.smtp_pool import SmtpPool
    from leadhub.triggers.clock import ManualClock
    from leadhub.triggers.matcher import Matcher
    from leadhub.triggers.scheduler import Scheduler
    from tests.helpers import free_port
    from tests.triggers.conftest import Shop

    port = free_port()
    # A separate process: an in-process aiosmtpd thread would compete with the scheduler for the GIL.
    smtp = subprocess.Popen(
        [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}", "-c", "aiosmtpd.handlers.Sink"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            break
        await asyncio.sleep(0.05)  # waiting for the child to listen
    from tests.conftest import _create_pg_database, _drop_pg_database

    tmp = tempfile.TemporaryDirectory()
    scratch = None  # on PostgreSQL a fresh database next to the one given, dropped afterwards
    if database_url:
        url, scratch = await _create_pg_database(database_url)
    else:
        url = f"sqlite+aiosqlite:///{tmp.name}/bench.db"
    engine = create_engine(url)
    try:
        await upgrade(engine)
        rules_dir = Path(tmp.name) / "rules"
        rules_dir.mkdir()
        (rules_dir / "r.yaml").write_text(
            "rules:\n  - id: mail\n    on: order.completed\n    mode: parallel\n"
            "    do: [{send_email: {template: survey, to: '{{ contact.email }}'}}]\n"
        )
        loaded = load_rules(rules_dir, Templates())
        assert not loaded.problems, loaded.problems
        index = RuleIndex(loaded.rules)
        clock = ManualClock()
        shop = Shop(engine, clock)
        matcher = Matcher(engine, lambda: index, clock)
        contact_id, lead_id = await shop.customer("bench@example.com")
        order_id = await shop.order(contact_id, lead_id, "1")
        for n in range(actions):
            await matcher.handle(
                {"id": f"bench-{n}", "type": "order.completed", "subject_id": f"s{n}", "occurred_at": None,
                 "data": {"lead_id": lead_id, "contact_id": contact_id, "order_id": order_id}}
            )  # fmt: skip
        deps = Deps(
            engine=engine, smtp_url=f"smtp://127.0.0.1:{port}?from=shop@example.com", extra={"smtp_pool": SmtpPool()}
        )
        scheduler = Scheduler(engine, lambda: index, deps, clock, batch=100)
        clock.advance(timedelta(seconds=1))
        started = time.perf_counter()
        done = 0
        while done < actions:
            claimed = await scheduler.run_once()
            if not claimed:
                rows = await shop.actions(status="pending")
                raise RuntimeError(f"{len(rows)} actions not run; first error: {rows[0].last_error if rows else None}")
            done += claimed
        seconds = time.perf_counter() - started
        return {
            "actions": actions,
            "database": url.split(":")[0],
            "actions_per_second": round(actions / seconds),
            "done": sum(r.status == "done" for r in await shop.actions()),
        }
    finally:
        await engine.dispose()
        if scratch:
            await _drop_pg_database(database_url, scratch)  # type: ignore[arg-type]
        smtp.terminate()
        smtp.wait(10)
        tmp.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--actions", type=int, default=0, help="also measure the scheduler with this many emails")
    parser.add_argument("--database-url")
    args = parser.parse_args()
    print(json.dumps({"matching": bench_matching(args.rules, args.events)}))
    if args.actions:
        print(json.dumps({"scheduler": asyncio.run(bench_scheduler(args.actions, args.database_url))}))


if __name__ == "__main__":
    main()
