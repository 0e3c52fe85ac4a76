"""Webhooks against a NATS that bounds a stream's ingest queue (tests/bounded_nats.py): a burst the stream refuses
in part (`429 too many requests`) is answered 503 for what was refused, never 202; every 202 is stored, and the
senders' retries get the rest in, each submission once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.bounded_nats import BoundedIngestNats, bounded_nats
from tests.conftest import HubFactory, RunningHub
from tests.helpers import wait_for

INGEST_BOUND = 5
BURST = 300


@pytest.fixture
async def bounded(tmp_path: Path) -> AsyncIterator[BoundedIngestNats]:
    async with bounded_nats(tmp_path / "bounded-nats", INGEST_BOUND) as server:
        yield server


async def _post(hub: RunningHub, session: aiohttp.ClientSession, n: int) -> tuple[int, str | None]:
    """Submission `n` with its own idempotency key (a retry is the same submission); (status, stored id)."""
    body = {"name": f"Customer {n}", "email": f"customer{n}@client.example", "message": f"quote for {n} units"}
    headers = {"Idempotency-Key": f"burst-{n}"}
    async with session.post(hub.url("/hooks/site-form"), json=body, headers=headers) as response:
        answer = await response.json()
        return response.status, answer.get("id") if response.status == 202 else None


async def test_a_refused_burst_is_503_and_every_202_is_stored(make_hub: HubFactory, bounded: BoundedIngestNats) -> None:
    hub = await make_hub([{"name": "site-form", "type": "form", "rate_limit": None}], nats_url=bounded.url)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=BURST)) as session:
        answers = await asyncio.gather(*(_post(hub, session, n) for n in range(BURST)))
        statuses = [status for status, _ in answers]
        assert set(statuses) <= {202, 503}, "a refusal is 503, never a 2xx and never a 500"
        assert 503 in statuses, "the burst reached the bound: the test shows what it says"
        accepted = {n: stored for n, (status, stored) in enumerate(answers) if status == 202}

        async def stored_ids() -> set[str] | None:
            ids = {item["id"] for item in (await hub.api("/api/inquiries", limit=1000))["items"]}
            return ids if set(accepted.values()) <= ids else None

        await wait_for(stored_ids, timeout=30, what=f"the {len(accepted)} accepted submissions stored")

        for n in range(BURST):  # the senders retry what was refused, one at a time
            if n not in accepted:
                status, stored = await _post(hub, session, n)
                assert status == 202
                accepted[n] = stored
    inquiries = await hub.wait_items("/api/inquiries", BURST, timeout=30)
    assert sorted(item["id"] for item in inquiries) == sorted(accepted.values()), "each submission stored once"
