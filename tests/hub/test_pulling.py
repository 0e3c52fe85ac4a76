"""Pulling batches (leadhub/pulling.py) against the embedded NATS: prompt, complete, and never stuck."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from leadhub.pulling import fetch_batch, fetch_unless_stopped
from tests.conftest import HubFactory
from tests.helpers import wait_for

FORM = {"name": "site-form", "type": "form", "rate_limit": None}


async def _pull(make_hub: HubFactory, stream: str):  # type: ignore[no-untyped-def]
    hub = await make_hub([FORM], roles="http")
    js = hub.hub.queue.jetstream
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{stream.lower()}.>"]))
    config = ConsumerConfig(durable_name="t", ack_policy=AckPolicy.EXPLICIT, ack_wait=30)
    subscription = await js.pull_subscribe(f"{stream.lower()}.>", durable="t", stream=stream, config=config)
    return js, subscription


async def test_a_batch_comes_whole_in_order_and_what_is_there_comes_at_once(make_hub: HubFactory) -> None:
    js, subscription = await _pull(make_hub, "PULLA")
    for i in range(250):
        await js.publish("pulla.x", str(i).encode())
    first = await fetch_batch(subscription, 100, 5.0)
    second = await fetch_batch(subscription, 100, 5.0)
    began = time.monotonic()
    rest = await fetch_batch(subscription, 100, 5.0)  # 50 are there: they come without waiting out the 5 s
    assert time.monotonic() - began < 4.0
    assert [int(m.data) for m in first + second + rest] == list(range(250))
    for msg in first + second + rest:
        await msg.ack()
    with pytest.raises(TimeoutError):
        await fetch_batch(subscription, 100, 0.3)


async def test_a_message_published_while_waiting_is_returned(make_hub: HubFactory) -> None:
    js, subscription = await _pull(make_hub, "PULLB")
    waiting = asyncio.create_task(fetch_batch(subscription, 10, 10.0))

    async def lingering() -> bool:
        return (await subscription.consumer_info()).num_waiting > 0

    await wait_for(lingering, timeout=5, what="the fetch's lingering pull request")
    await js.publish("pullb.x", b"late")
    messages = await asyncio.wait_for(waiting, 9.0)
    assert [m.data for m in messages] == [b"late"]


async def test_a_stop_ends_an_idle_fetch_and_nothing_is_lost(make_hub: HubFactory) -> None:
    js, subscription = await _pull(make_hub, "PULLC")
    stopping = asyncio.Event()
    fetch = asyncio.create_task(fetch_unless_stopped(subscription, 10, 30.0, stopping))
    stopping.set()
    assert await asyncio.wait_for(fetch, 5.0) == []
    await js.publish("pullc.x", b"after the stop")  # may be delivered to the abandoned request: still ours
    messages = await fetch_batch(subscription, 10, 5.0)
    assert [m.data for m in messages] == [b"after the stop"]
