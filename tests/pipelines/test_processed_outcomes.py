"""`leadhub_pipeline_processed_total{outcome}`: every envelope ends in exactly one of `stored`, `duplicate` or
`dead_letter`; `retried` counts each time one is handed back for another delivery. An `acked` outcome used to be
counted on top of the others for the same envelopes, so the outcomes summed to twice what was processed."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence

from prometheus_client.parser import text_string_to_metric_families

from leadhub.pipelines.consumer import InboundConsumer, Stats
from leadhub.pipelines.dead_letters import DeadLetterSink
from leadhub.pipelines.intake import IntakePipeline
from leadhub.pipelines.model import SourceSpec
from leadhub.store.intake import BatchResult, InquiryRow
from tests.conftest import HubFactory, RunningHub
from tests.helpers import wait_for

FORM = {"name": "site-form", "type": "form", "rate_limit": None}


async def _processed(hub: RunningHub) -> dict[str, float]:
    async with hub.session.get(hub.url("/metrics")) as response:
        text = await response.text()
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "leadhub_pipeline_processed_total"
    }


async def test_each_stored_envelope_counts_once(make_hub: HubFactory) -> None:
    hub = await make_hub([FORM])
    for i in range(3):
        async with await hub.post("/hooks/site-form", json={"name": f"P {i}"}) as response:
            assert response.status == 202
    await hub.wait_items("/api/inquiries", 3)

    async def counted() -> dict[str, float] | None:
        found = await _processed(hub)
        return found if found.get("stored") == 3 else None

    found = await wait_for(counted, what="3 envelopes counted as stored")
    assert sum(found.values()) == 3, found


class PoisonedPipeline(IntakePipeline):
    """Stands for a bug in a step: storing any batch that holds the poisoned row fails (an unknown failure)."""

    async def store(self, rows: Sequence[InquiryRow]) -> BatchResult:
        if any(row.name == "Poison" for row in rows):
            raise ValueError("step crashed on the poisoned row")
        return await super().store(rows)


async def test_a_poisoned_envelope_counts_its_retries_and_its_dead_letter_once(make_hub: HubFactory) -> None:
    """Ten envelopes in one batch, one poisoned: nine stored, the poisoned one handed back twice, then dead-lettered.
    The hand-backs of an unknown failure were not counted at all."""
    hub = await make_hub([FORM], roles="http,relay")
    for i in range(10):
        async with await hub.post("/hooks/site-form", json={"name": "Poison" if i == 4 else f"Good {i}"}) as r:
            assert r.status == 202
    outcomes: Counter[str] = Counter()
    stats = Stats()
    stats.on_batch = lambda stored, duplicates, lag: outcomes.update(stored=stored, duplicate=duplicates)
    stats.on_outcome = lambda outcome, n: outcomes.update({outcome: n})
    inner = hub.hub
    pipeline = PoisonedPipeline(inner.engine, {"site-form": SourceSpec("form", {"name": "site-form"})})
    dead_sink = DeadLetterSink(inner.engine, inner.queue.publish, lambda reason: None)
    consumer = InboundConsumer(
        lambda: inner.queue.jetstream, pipeline, dead_sink, batch_size=100, max_deliveries=3, stats=stats
    )
    task = asyncio.create_task(consumer.run())
    try:

        async def dead_lettered() -> bool:
            return outcomes["dead_letter"] == 1

        await wait_for(dead_lettered, timeout=30, what="the poisoned envelope dead-lettered")
    finally:
        consumer.stop()
        await task
    assert {k: v for k, v in outcomes.items() if v} == {"stored": 9, "dead_letter": 1, "retried": 2}
