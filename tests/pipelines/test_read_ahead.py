"""Reading ahead (pipelines/consumer.py): the next batch is parsed while one is stored; stores stay one at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from leadhub.envelope import Envelope
from leadhub.pipelines.consumer import InboundConsumer
from leadhub.pipelines.dead_letters import DeadLetterSink
from leadhub.pipelines.intake import IntakePipeline
from leadhub.pipelines.model import SourceSpec
from leadhub.store.intake import BatchResult, InquiryRow
from tests.conftest import HubFactory
from tests.helpers import wait_for

FORM = {"name": "site-form", "type": "form", "rate_limit": None}
ITEMS = 120
SOURCE = SourceSpec("form", {"name": "site-form"})


class WatchedPipeline(IntakePipeline):
    """The real pipeline, noting what ran while a batch was being stored.

    With `hold_until_read_ahead`, a store waits (with a deadline) until an envelope of a later batch has been
    parsed, as a slow store under load would give the next batch time to arrive.
    """

    def __init__(self, *args, total: int, hold_until_read_ahead: bool, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.total = total
        self.hold = hold_until_read_ahead
        self.parsed = 0
        self.storing = 0
        self.most_at_once = 0
        self.parsed_while_storing = 0
        self.stored_names: list[str | None] = []

    def prepare(self, envelope: Envelope) -> InquiryRow:
        self.parsed += 1
        self.parsed_while_storing += self.storing > 0
        return super().prepare(envelope)

    async def store(self, rows: Sequence[InquiryRow]) -> BatchResult:
        self.storing += 1
        self.most_at_once = max(self.most_at_once, self.storing)
        try:
            if self.hold:
                through = len(self.stored_names) + len(rows)

                async def next_batch_parsed() -> bool:
                    return self.parsed > through or self.parsed == self.total

                await wait_for(next_batch_parsed, timeout=10, what="the next batch parsed during this store")
            result = await super().store(rows)
        finally:
            self.storing -= 1
        self.stored_names += [row.name for row in rows]
        return result


@pytest.mark.parametrize("read_ahead", [True, False])
async def test_the_next_batch_is_parsed_during_a_store_and_batches_land_in_order(
    make_hub: HubFactory, read_ahead: bool
) -> None:
    hub = await make_hub([FORM], roles="http,relay")  # the hub's own pipeline is off: the backlog waits
    for i in range(ITEMS):
        async with await hub.post("/hooks/site-form", json={"name": f"P{i:03}", "phone": f"+7916{i:07}"}) as r:
            assert r.status == 202
    inner = hub.hub
    pipeline = WatchedPipeline(inner.engine, {"site-form": SOURCE}, total=ITEMS, hold_until_read_ahead=read_ahead)
    dead = DeadLetterSink(inner.engine, inner.queue.publish, lambda reason: None)
    consumer = InboundConsumer(lambda: inner.queue.jetstream, pipeline, dead, batch_size=15, read_ahead=read_ahead)
    task = asyncio.create_task(consumer.run())
    try:
        await hub.wait_items("/api/leads", ITEMS, timeout=30)

        async def all_acked() -> bool:
            info = await inner.queue.jetstream.stream_info("INBOUND")
            return info.state.messages == 0

        await wait_for(all_acked, timeout=15, what="every envelope acked and gone from INBOUND")
    finally:
        consumer.stop()
        await task
    assert pipeline.stored_names == [f"P{i:03}" for i in range(ITEMS)]  # each once, in the order received
    assert pipeline.most_at_once == 1
    if read_ahead:
        assert pipeline.parsed_while_storing >= ITEMS - 15  # every batch but the first was parsed during a store
    else:
        assert pipeline.parsed_while_storing == 0


async def test_a_stop_stores_the_batch_read_ahead_too(make_hub: HubFactory) -> None:
    """Stopped while a batch is stored and the next is in hand: both are stored and acked, nothing waits."""
    hub = await make_hub([FORM], roles="http,relay")
    for i in range(40):
        async with await hub.post("/hooks/site-form", json={"name": f"S{i:03}"}) as r:
            assert r.status == 202
    inner = hub.hub
    pipeline = WatchedPipeline(inner.engine, {"site-form": SOURCE}, total=40, hold_until_read_ahead=True)
    dead = DeadLetterSink(inner.engine, inner.queue.publish, lambda reason: None)
    consumer = InboundConsumer(lambda: inner.queue.jetstream, pipeline, dead, batch_size=20, read_ahead=True)
    task = asyncio.create_task(consumer.run())

    async def storing_with_the_next_parsed() -> bool:
        return pipeline.storing > 0 and pipeline.parsed_while_storing >= 20

    await wait_for(storing_with_the_next_parsed, timeout=15, what="a store under way with the next batch parsed")
    consumer.stop()
    await asyncio.wait_for(task, timeout=15)
    assert sorted(pipeline.stored_names) == [f"S{i:03}" for i in range(40)]

    async def all_acked() -> bool:  # acks are published without waiting for the stream: give it a moment
        return (await inner.queue.jetstream.stream_info("INBOUND")).state.messages == 0

    await wait_for(all_acked, timeout=10, what="both batches acked, nothing left for redelivery")


@pytest.mark.parametrize("roles", ["http,pipeline,relay", "pipeline,relay"])
async def test_the_daemon_reads_ahead_only_on_postgresql_without_webhooks(
    make_hub: HubFactory, database_url: str, roles: str
) -> None:
    hub = await make_hub([FORM], roles=roles)

    async def consumer_built() -> bool:
        return hub.hub.consumer is not None

    await wait_for(consumer_built, timeout=15, what="the pipeline's consumer")
    assert hub.hub.consumer is not None
    expected = database_url.startswith("postgresql") and "http" not in roles
    assert hub.hub.consumer.read_ahead is expected
