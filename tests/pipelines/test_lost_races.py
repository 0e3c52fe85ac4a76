"""The consumer and transactions that lose to concurrent ones, against real NATS and the real database: a lost
race is tried again at once and never counts towards the dead-letter limit, while an item that fails the same
way on every try is still dead-lettered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import select

from leadhub.pipelines.consumer import InboundConsumer
from leadhub.pipelines.dead_letters import DeadLetterSink
from leadhub.pipelines.intake import IntakePipeline
from leadhub.pipelines.model import SourceSpec
from leadhub.store.intake import BatchResult, InquiryRow
from leadhub.store.models import DeadLetter
from tests.conftest import HubFactory, RunningHub
from tests.helpers import wait_for
from tests.pipelines.contention import create_fought, deadlock, postgresql_only

FORM = {"name": "site-form", "type": "form", "rate_limit": None}
SOURCES = {"site-form": SourceSpec("form", {"name": "site-form"})}


class LosingPipeline(IntakePipeline):
    """Stands for a worker whose transactions keep losing to other workers': its first `losses` stores fail with
    `lost`, an error the real database raised, instead of storing."""

    def __init__(self, *args: Any, lost: Exception, losses: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lost = lost
        self.losses = losses

    async def store(self, rows: Sequence[InquiryRow]) -> BatchResult:
        if self.losses:
            self.losses -= 1
            raise self.lost
        return await super().store(rows)


async def _dead_letters(hub: RunningHub) -> list[Any]:
    async with hub.engine.connect() as conn:
        return list((await conn.execute(select(DeadLetter.__table__))).all())


async def stored_none_dead(hub: RunningHub, count: int) -> list[dict[str, Any]]:
    """The inquiries once `count` are stored; fails at once if an envelope is dead-lettered meanwhile."""

    async def probe() -> list[dict[str, Any]] | None:
        dead = await _dead_letters(hub)
        assert dead == [], f"a good envelope was dead-lettered: {dead[0].reason}"
        items = (await hub.api("/api/inquiries", limit=1000))["items"]
        return items if len(items) == count else None

    return await wait_for(probe, timeout=20, what=f"{count} inquiries stored")


async def _accepted(hub: RunningHub, *bodies: dict[str, str]) -> None:
    for body in bodies:
        async with await hub.post("/hooks/site-form", json=body) as response:
            assert response.status == 202, await response.text()


@asynccontextmanager
async def consuming(hub: RunningHub, pipeline: IntakePipeline, max_deliveries: int) -> AsyncIterator[None]:
    """The inbound consumer of `hub`'s queue, storing with `pipeline`, for the block's duration."""
    dead = DeadLetterSink(hub.engine, hub.hub.queue.publish, lambda reason: None)
    consumer = InboundConsumer(
        lambda: hub.hub.queue.jetstream, pipeline, dead, batch_size=100, max_deliveries=max_deliveries
    )
    task = asyncio.create_task(consumer.run())
    try:
        yield
    finally:
        consumer.stop()
        await task


async def test_an_envelope_whose_transactions_keep_deadlocking_is_stored_not_dead_lettered(
    make_hub: HubFactory,
) -> None:
    """Six deadlocks in a row, one delivery allowed: the batch, every immediate retry and the first try of the
    redelivery lose; a deadlock takes two transactions, so the envelope is retried until it is stored."""
    hub = await make_hub([FORM], roles="http,relay")  # accepts, does not consume: the test's consumer does
    postgresql_only(hub.engine)
    await create_fought(hub.engine)
    lost = await deadlock(hub.engine)
    await _accepted(hub, {"name": "Ivan", "email": "ivan@x.example"})
    pipeline = LosingPipeline(hub.engine, SOURCES, lost=lost, losses=6)
    async with consuming(hub, pipeline, max_deliveries=1):
        (inquiry,) = await stored_none_dead(hub, 1)
    assert inquiry["email"] == "ivan@x.example"
    assert pipeline.losses == 0
    assert await _dead_letters(hub) == []
