"""The outbox relay under a NATS that bounds a stream's ingest queue (`max_buffered_msgs`, nats-server 2.11+).

Such a server answers publishes beyond the bound with `429 too many requests`. Retrying a whole claim of 2,000
pipelined hit the bound again at the same place every time, and the relay never got past it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.hub.queue import EVENTS, Queue
from leadhub.ids import new_id
from leadhub.pipelines.outbox_relay import OutboxRelay
from leadhub.store import outbox
from leadhub.store.db import create_engine, upgrade
from leadhub.store.models import OutboxEvent
from tests.bounded_nats import BoundedIngestNats, bounded_nats
from tests.helpers import wait_for

INGEST_BOUND = 100  # messages a stream queues before storing them; far under a claim of 2,000
EVENT_COUNT = 5000  # two full claims and a part


@pytest.fixture
async def bounded(tmp_path: Path) -> AsyncIterator[BoundedIngestNats]:
    async with bounded_nats(tmp_path / "bounded-nats", INGEST_BOUND) as server:
        yield server


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await upgrade(engine)
    yield engine
    await engine.dispose()


async def _message_ids(url: str) -> list[str]:
    """Every Nats-Msg-Id on EVENTS, read back by an ephemeral pull consumer."""
    client = await nats.connect(url)
    try:
        unacked = ConsumerConfig(ack_policy=AckPolicy.NONE)  # an acked consumer stops at max_ack_pending
        subscription = await client.jetstream().pull_subscribe("events.>", stream=EVENTS, config=unacked)
        ids: list[str] = []
        info = await client.jetstream().stream_info(EVENTS)
        while len(ids) < info.state.messages:
            ids.extend((msg.headers or {})["Nats-Msg-Id"] for msg in await subscription.fetch(1000, timeout=5))
        return ids
    finally:
        await client.close()


async def test_relay_gets_every_event_through_a_bounded_ingest_queue(
    engine: AsyncEngine, bounded: BoundedIngestNats
) -> None:
    now = datetime.now(UTC)
    rows = [outbox.outbox_event("lead.created", new_id(), now, n=n, note="x" * 200) for n in range(EVENT_COUNT)]
    async with engine.begin() as conn:
        await conn.execute(insert(OutboxEvent.__table__), rows)

    queue = Queue(bounded.url)
    await queue.start()
    published: list[int] = []
    failures: list[str] = []
    relay = OutboxRelay(engine, queue.publish_many, published.append, on_failure=failures.append)
    running = asyncio.create_task(relay.run())
    try:

        async def all_relayed() -> bool:
            async with engine.connect() as conn:
                return await outbox.count_unpublished(conn) == 0

        await wait_for(all_relayed, timeout=30, what=f"all {EVENT_COUNT} events relayed")
        ids = await _message_ids(bounded.url)
        assert sorted(ids) == sorted(row["id"] for row in rows), "each event exactly once on EVENTS"
        assert sum(published) == EVENT_COUNT
        assert failures and set(failures) == {"queue_busy"}, "each refusal is counted, as nothing else"
    finally:
        relay.stop()
        await running
        await queue.stop()
