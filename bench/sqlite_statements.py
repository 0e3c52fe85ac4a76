"""SQLite memory held by prepared statements: marks of outbox claims of random lengths on one pooled connection.

python -m bench.sqlite_statements --claims 400

Every distinct SQL text is a statement Python's sqlite3 keeps prepared (up to 128 per connection), and an IN list
of n values is a distinct text for each n. Prints SQLite's own memory in use (sqlite3_status64) after 50, 100, 200
and 400 claims, and the seconds they took.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import random
import tempfile
import time
from datetime import UTC, datetime

from sqlalchemy import insert

from bench.common import machine
from leadhub.store.db import create_engine, upgrade
from leadhub.store.models import OutboxEvent
from leadhub.store.outbox import mark_published, outbox_event

SQLITE_STATUS_MEMORY_USED = 0


def sqlite_memory_mib() -> float:
    """What SQLite has allocated now, process-wide (the library Python's sqlite3 module is linked to)."""
    library = ctypes.CDLL("libsqlite3.so.0")
    current, highest = ctypes.c_int64(), ctypes.c_int64()
    library.sqlite3_status64(SQLITE_STATUS_MEMORY_USED, ctypes.byref(current), ctypes.byref(highest), 0)
    return current.value / 2**20


async def measure(claims: int, largest: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="leadhub-bench-") as tmp:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp}/leadhub.db")
        await upgrade(engine)
        now = datetime.now(UTC)
        rows = [outbox_event("lead.updated", f"s{n}", now, n=n) for n in range(largest)]
        async with engine.begin() as conn:
            await conn.execute(insert(OutboxEvent.__table__), rows)
        ids = [row["id"] for row in rows]
        lengths = random.Random(1)
        held: dict[int, float] = {}
        before, began = sqlite_memory_mib(), time.perf_counter()
        for claim in range(1, claims + 1):
            async with engine.begin() as conn:
                await mark_published(conn, ids[: lengths.randint(1, largest)], now)
            if claim in (50, 100, 200, 400, claims):
                held[claim] = round(sqlite_memory_mib() - before, 2)
        seconds = time.perf_counter() - began
        await engine.dispose()
    return {"claims": claims, "largest": largest, "sqlite_mib_held_after_claims": held, "seconds": round(seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--claims", type=int, default=400)
    parser.add_argument("--largest", type=int, default=2000, help="the relay's claim (pipelines/outbox_relay.BATCH)")
    args = parser.parse_args()
    result = asyncio.run(measure(args.claims, args.largest))
    print(json.dumps({"bench": "sqlite_statements", "machine": machine(), "result": result}, indent=2))


if __name__ == "__main__":
    main()
