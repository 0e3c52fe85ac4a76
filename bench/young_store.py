"""A first burst into a fresh store: N new people through parse, store and relay in full batches of 500.

A new deployment's tables have no planner statistics until autovacuum's first analyze (a minute or more on
PostgreSQL), and a backlog is drained in full batches, so the same statements run again and again: the case
where a cached statement's generic plan decides the pace. Prints inquiries/s and the slowest batch.

    python -m bench.young_store -n 40000 --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test
    python -m bench.young_store -n 20000 --again-after 5000 --database-url ...   # second touches join open leads
    python -m bench.compare --base <old> -- bench.young_store -n 40000 --database-url ...   # old code, same run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import machine
from bench.identity import SOURCES, drop_tables, fresh_engine
from leadhub.envelope import Envelope
from leadhub.pipelines.intake import IntakePipeline
from leadhub.pipelines.outbox_relay import BATCH as RELAY_BATCH
from leadhub.pipelines.outbox_relay import OutboxRelay


def arrivals(count: int, again_after: int) -> list[Envelope]:
    """`count` new people; with `again_after`, each also writes a second time that many inquiries later."""
    now = datetime.now(UTC)
    order = [(n, 0) for n in range(count)]
    if again_after:
        order += [(n, 1) for n in range(max(0, count - again_after))]
        order.sort(key=lambda touch: touch[0] + touch[1] * again_after)
    return [
        Envelope(
            key=f"young:{n}:{touch}",
            channel="form",
            connector="site-form",
            content_type="application/json",
            received_at=now,
            payload=json.dumps({"name": f"Young {n}", "phone": f"+7916{n:07d}", "email": f"y{n}@example.com"}).encode(),
        )
        for n, touch in order
    ]


async def run(count: int, database_url: str | None, batch: int, again_after: int = 0) -> dict[str, Any]:
    envelopes = arrivals(count, again_after)
    published = 0

    async def publish(messages: list[Any], stream: str) -> None:  # the queue is not what is measured here
        nonlocal published
        published += len(messages)

    with tempfile.TemporaryDirectory(prefix="leadhub-young-") as tmp:
        engine = await fresh_engine(database_url, Path(tmp))
        try:
            pipeline = IntakePipeline(engine, SOURCES, default_region="RU")
            relay = OutboxRelay(engine, publish, lambda n: None)
            slowest = 0.0
            started = time.perf_counter()
            for start in range(0, len(envelopes), batch):
                began = time.perf_counter()
                await pipeline.store([pipeline.prepare(e) for e in envelopes[start : start + batch]])
                while await relay.relay_once() >= RELAY_BATCH:
                    pass
                slowest = max(slowest, time.perf_counter() - began)
            elapsed = time.perf_counter() - started
        finally:
            if database_url:
                await drop_tables(engine)
            await engine.dispose()
    return {
        "people": count,
        "inquiries": len(envelopes),
        "again_after": again_after,
        "batch": batch,
        "database": "postgresql" if database_url else "sqlite",
        "inquiries_per_s": round(len(envelopes) / elapsed),
        "slowest_batch_ms": round(slowest * 1000),
        "events_relayed": published,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=40_000, help="new people")
    parser.add_argument("--database-url", help="default: a fresh SQLite file; PostgreSQL tables are dropped!")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument(
        "--again-after", type=int, default=0, help="each person writes again this many inquiries later (0: never)"
    )
    args = parser.parse_args()
    result = asyncio.run(run(args.n, args.database_url, args.batch, args.again_after))
    print(json.dumps({"bench": "young_store", "machine": machine(), "result": result}, indent=2))


if __name__ == "__main__":
    main()
