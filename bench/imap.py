"""IMAP benchmark: N messages in a real Dovecot -> time until all are leads in an in-process hub.

    python -m bench.imap                      # 10,000 messages, backlog mode, embedded NATS + SQLite
    python -m bench.imap -n 2000 --live       # append while the hub is already IDLE on the folder
    LEADHUB_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/bench python -m bench.imap

backlog: the messages are appended first (not timed), then the hub starts; the clock runs from the hub's start
to the last lead. live: the hub runs first; the clock runs from the first append to the last lead. Needs
`dovecot` (apt-get install dovecot-imapd) and the `imap` parser registered in pipelines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench.common import machine
from leadhub.hub.config import config_from_dict
from leadhub.hub.daemon import Hub
from leadhub.pipelines.parsers import PARSERS
from leadhub.store.connector_state import load_state
from leadhub.store.models import Inquiry, Lead
from tests.imap_server import Dovecot, make_dovecot, make_mail

APPEND_CHUNK = 200
POLL = 0.25  # seconds between progress queries: the resolution of the figures


def append_all(server: Dovecot, n: int) -> float:
    """Append n messages with MULTIAPPEND in chunks; returns the seconds it took."""
    began = time.perf_counter()
    client = server.client()
    for start in range(0, n, APPEND_CHUNK):
        client.multiappend("INBOX", [make_mail(i) for i in range(start + 1, min(n, start + APPEND_CHUNK) + 1)])
    client.logout()
    server.clients.remove(client)
    return time.perf_counter() - began


async def count(hub: Hub, model: type[Lead] | type[Inquiry]) -> int:
    assert hub.engine is not None
    async with hub.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(model))).scalar_one())


async def wait_leads(hub: Hub, n: int, limit: float) -> tuple[float, float | None, int]:
    """(when all were leads, when the connector had published all, leads); polls lightly (it shares the CPU)."""
    began = time.perf_counter()
    leads = 0
    published_at = None
    while time.perf_counter() - began < limit:
        await asyncio.sleep(POLL)
        if not hub.store_ready:
            continue
        if published_at is None:
            state = await load_state(hub.engine, "inbox", "folder:INBOX")  # type: ignore[arg-type]
            if state and state["last_uid"] >= n:
                published_at = time.perf_counter()
        leads = await count(hub, Lead)
        if leads >= n:
            break
    return time.perf_counter(), published_at, leads


async def connected(hub: Hub, limit: float) -> None:
    """Wait until the connector reports its first sync (the folder is IDLE)."""
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        if hub.connector_status.get("inbox", {}).get("ok"):
            return
        await asyncio.sleep(0.05)
    raise SystemExit(f"the connector did not sync within {limit}s: {hub.connector_status}")


async def run(n: int, live: bool, limit: float, fetch_batch: int, database_url: str | None = None) -> dict[str, Any]:
    """Time n messages from Dovecot to leads; database_url (default LEADHUB_DATABASE_URL, else SQLite) is used as is."""
    if "imap" not in PARSERS:
        raise SystemExit("no `imap` parser is registered in pipelines/parsers.py; nothing would become a lead")
    server = make_dovecot()
    server.start()
    tmp = Path(tempfile.mkdtemp(prefix="leadhub-bench-imap-"))
    connector = server.connector(fetch_batch=fetch_batch, poll_interval="5m", backfill_days=1)
    raw = {
        "data_dir": str(tmp / "data"),
        "http_port": 0,
        "log_level": "warning",
        "connectors": [connector],
        "database_url": database_url
        or os.environ.get("LEADHUB_DATABASE_URL")
        or f"sqlite+aiosqlite:///{tmp / 'leadhub.db'}",
    }
    hub = Hub(config_from_dict(raw, env={}))
    append_seconds = 0.0
    try:
        if not live:
            append_seconds = append_all(server, n)
        began = time.perf_counter()
        await hub.start()
        if live:
            await connected(hub, limit)
            began = time.perf_counter()
            append_seconds = await asyncio.to_thread(append_all, server, n)
        ended, published_at, leads = await wait_leads(hub, n, limit)
        inquiries = await count(hub, Inquiry)
    finally:
        await hub.stop()
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = ended - began
    return {
        "messages": n,
        "mode": "live" if live else "backlog",
        "fetch_batch": fetch_batch,
        "database": "postgresql" if "postgresql" in raw["database_url"] else "sqlite",
        "append_seconds": round(append_seconds, 2),
        "seconds_to_all_published": round(published_at - began, 2) if published_at else None,
        "seconds_to_all_leads": round(seconds, 2),
        "messages_per_second": round(leads / seconds, 1) if seconds else None,
        "leads": leads,
        "inquiries": inquiries,
        "complete": leads >= n,
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=10_000, help="messages (default 10000)")
    parser.add_argument("--live", action="store_true", help="append while the hub runs (default: backlog)")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    parser.add_argument("--fetch-batch", type=int, default=100, help="the connector's fetch_batch")
    args = parser.parse_args()
    result = asyncio.run(run(args.n, args.live, args.timeout, args.fetch_batch))
    print(json.dumps(result, indent=2))
    if not result["complete"]:
        raise SystemExit(f"only {result['leads']} of {args.n} messages became leads within {args.timeout}s")


if __name__ == "__main__":
    main()
