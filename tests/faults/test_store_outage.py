"""The database away for 20 s while webhooks keep arriving: every 202 ends as exactly one inquiry, and the outage shows.

PostgreSQL is made unreachable by cutting a TCP proxy the daemon connects through (the shared server keeps
running); SQLite is locked by another process holding `BEGIN EXCLUSIVE`. The daemon is the real `leadhub run`
subprocess; it is not restarted: it must notice the outage, report it (log, /metrics, /readyz) and catch up.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
from sqlalchemy import func, select

from leadhub.hub.embedded_nats import EmbeddedNats
from leadhub.store.db import create_engine
from leadhub.store.models import DeadLetter, Inquiry, Lead, OutboxEvent
from tests.faults.conftest import Outage
from tests.helpers import wait_for

pytestmark = pytest.mark.slow
FORM = {"name": "site-form", "type": "form", "rate_limit": None}
OUTAGE_SECONDS = 20.0
BURST = 2000  # posted as fast as the clients go right after the cut; a trickle follows until the outage ends
TRICKLE_PAUSE = 0.2  # seconds between a poster's posts after the burst (pacing the load, not waiting on anything)
STORE_ERRORS = re.compile(r'^leadhub_store_errors_total\{kind="transient",operation="pipeline"\} (\S+)$', re.M)
RETRY_LOG = "store unavailable; envelopes will be retried"


async def _get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as response:
        return response.status, await response.json()


async def _store_errors(session: aiohttp.ClientSession, base_url: str) -> float:
    async with session.get(base_url + "/metrics") as response:
        match = STORE_ERRORS.search(await response.text())
    return float(match.group(1)) if match else 0.0


def _retry_log_lines(log_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log_path.read_text(errors="replace").splitlines() if RETRY_LOG in line]


async def _store_counts(database_url: str) -> dict[str, Any]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            ids = list((await conn.execute(select(Inquiry.id))).scalars())
            keys = (await conn.execute(select(func.count(func.distinct(Inquiry.key))))).scalar_one()
            leads = (await conn.execute(select(func.count()).select_from(Lead))).scalar_one()
            dead = (await conn.execute(select(func.count()).select_from(DeadLetter))).scalar_one()
            unpublished = (
                await conn.execute(
                    select(func.count()).select_from(OutboxEvent).where(OutboxEvent.published_at.is_(None))
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    return {"ids": ids, "keys": keys, "leads": leads, "dead": dead, "unpublished": unpublished}


async def test_database_away_for_20s_during_a_burst(  # type: ignore[no-untyped-def]
    make_daemon, database_url: str, outage: Outage, external_nats: EmbeddedNats
) -> None:
    env = {"LEADHUB_DATABASE_URL": outage.hub_url, "LEADHUB_LOG_FORMAT": "json", "LEADHUB_NATS_URL": external_nats.url}
    daemon = make_daemon({"connectors": [FORM]}, env=env)
    await daemon.start()
    accepted: dict[int, str] = {}
    next_item = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def post(i: int) -> None:
            async with session.post(
                daemon.base_url + "/hooks/site-form",
                json={"name": f"Outage {i}", "email": f"outage{i}@example.com"},
                headers={"Idempotency-Key": f"outage-{i}"},
            ) as response:
                assert response.status == 202, f"post {i} in the outage: {response.status} {await response.text()}"
                accepted[i] = (await response.json())["id"]

        async def poster(until: float) -> None:
            nonlocal next_item
            while time.monotonic() < until:
                i = next_item
                next_item += 1
                await post(i)
                if next_item >= BURST:
                    await asyncio.sleep(TRICKLE_PAUSE)  # noqa: sleep-ok - paces the trickle (load shape), waits on nothing

        await post(-1)  # one item stored before the outage, so the store worked with this daemon
        await outage.cut()
        cut_at = time.monotonic()
        posting = asyncio.gather(*(poster(cut_at + OUTAGE_SECONDS) for _ in range(16)))

        async def outage_reported() -> dict[str, Any] | None:
            status, body = await _get_json(session, daemon.base_url + "/readyz")
            pipeline = body["detail"].get("pipeline", {})
            if status != 503 or pipeline.get("ok") is not False:
                return None
            if await _store_errors(session, daemon.base_url) < 1 or not _retry_log_lines(daemon.log_path):
                return None
            return body

        readyz = await wait_for(outage_reported, timeout=OUTAGE_SECONDS, what="the outage in /readyz, /metrics, log")
        assert readyz["ready"] is False and readyz["queue"] is True, readyz
        reported = readyz["detail"]["pipeline"]["error"]
        assert reported and "\n" not in reported and "[SQL" not in reported and "outage" not in reported, readyz
        if outage.proxy is not None:
            assert readyz["store"] is False, "PostgreSQL unreachable: the store check fails too"
        logged = _retry_log_lines(daemon.log_path)[0]
        assert logged["level"] == "warning" and logged["error"] and logged["count"] >= 1, logged
        assert "[SQL" not in logged["error"] and "@example.com" not in logged["error"], logged
        await posting
        still_reported = await _get_json(session, daemon.base_url + "/readyz")
        assert still_reported[0] == 503, f"the outage is still on at its end: {still_reported}"
        assert time.monotonic() - cut_at >= OUTAGE_SECONDS
        outage.restore()
        restored_at = time.monotonic()

        async def caught_up() -> dict[str, Any] | None:
            counts = await _store_counts(database_url)
            assert len(counts["ids"]) <= len(accepted), f"more inquiries than 202 answers: {len(counts['ids'])}"
            return counts if len(counts["ids"]) == len(accepted) else None

        counts = await wait_for(caught_up, timeout=40, what=f"{len(accepted)} accepted posts stored after the outage")

        async def ready_again() -> bool:
            status, _ = await _get_json(session, daemon.base_url + "/readyz")
            return status == 200

        await wait_for(ready_again, timeout=20, what="/readyz to recover without a restart")

        async def relayed() -> dict[str, Any] | None:
            latest = await _store_counts(database_url)
            return latest if latest["unpublished"] == 0 else None

        counts = await wait_for(relayed, timeout=20, what="every domain event relayed")
        recovery = time.monotonic() - restored_at

    assert len(accepted) > BURST, f"only {len(accepted)} posts during the outage"
    assert set(counts["ids"]) == set(accepted.values()), "every 202 names a stored inquiry, and nothing else is stored"
    assert counts["keys"] == len(accepted) and counts["leads"] == len(accepted), counts
    assert counts["dead"] == 0, "a store outage must not dead-letter anything"
    assert daemon.process is not None and daemon.process.poll() is None, "the daemon recovered by itself"
    assert await _lead_created_events(external_nats) == len(accepted), "each lead's lead.created exactly once on EVENTS"
    print(f"{len(accepted)} accepted during a {OUTAGE_SECONDS:.0f} s outage; all stored {recovery:.1f} s after it")
    assert await daemon.terminate() == 0


async def _lead_created_events(server: EmbeddedNats) -> int:
    """How many `lead.created` messages the daemon's NATS holds on EVENTS."""
    connection = await nats.connect(server.url)
    try:
        info = await connection.jetstream().stream_info("EVENTS", subjects_filter="events.lead.created")
        return (info.state.subjects or {}).get("events.lead.created", 0)
    finally:
        await connection.close()
