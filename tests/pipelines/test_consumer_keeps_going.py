"""The inbound consumer outlives an error nothing below it expected, and says so while it lasts."""

from __future__ import annotations

import asyncio

import structlog

from leadhub.pipelines.consumer import InboundConsumer
from leadhub.pipelines.dead_letters import DeadLetterSink
from leadhub.pipelines.intake import IntakePipeline
from leadhub.pipelines.model import SourceSpec
from tests.conftest import HubFactory
from tests.helpers import wait_for

FORM = {"name": "site-form", "type": "form", "rate_limit": None}
SOURCE = SourceSpec("form", {"name": "site-form"})


async def test_an_unexpected_error_after_a_batch_leaves_the_pipeline_running_and_unhealthy_until_the_next(
    make_hub: HubFactory,
) -> None:
    """It ended the consumer's task: nothing more was stored, and /readyz said nothing of it."""
    hub = await make_hub([FORM], roles="http,relay")  # the hub's own pipeline is off: the test's consumer runs
    inner = hub.hub
    commits = 0

    def on_committed() -> None:  # the relay's wake-up, here failing once as a bug would
        nonlocal commits
        commits += 1
        if commits == 1:
            raise RuntimeError("wake-up failed")

    pipeline = IntakePipeline(inner.engine, {"site-form": SOURCE})
    dead = DeadLetterSink(inner.engine, inner.queue.publish, lambda reason: None)
    consumer = InboundConsumer(lambda: inner.queue.jetstream, pipeline, dead, on_committed=on_committed)
    task = asyncio.create_task(consumer.run())
    try:
        with structlog.testing.capture_logs() as lines:
            async with await hub.post("/hooks/site-form", json={"name": "first"}) as response:
                assert response.status == 202
            await hub.wait_items("/api/inquiries", 1)

            async def reported() -> bool:
                return consumer.last_error is not None

            await wait_for(reported, timeout=10, what="the error reported")
        assert not consumer.healthy and consumer.last_error == "RuntimeError: wake-up failed"
        [line] = [line for line in lines if line["log_level"] == "error"]
        assert line["event"].startswith("storing a batch failed unexpectedly") and line["exc_info"]

        async with await hub.post("/hooks/site-form", json={"name": "second"}) as response:
            assert response.status == 202
        await hub.wait_items("/api/inquiries", 2, timeout=20)
        assert not task.done()

        async def healthy_again() -> bool:
            return consumer.healthy

        await wait_for(healthy_again, timeout=10, what="healthy after the next commit")
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 15)
