"""Publishing to JetStream with acks over one reply subscription (hub/stream_publisher.py), on the embedded NATS."""

from __future__ import annotations

import asyncio
import time

import pytest

from leadhub.connectors.base import QueueUnavailable
from leadhub.hub.queue import EVENTS, INBOUND
from leadhub.hub.stream_publisher import SWEEP_EVERY, StreamPublisher
from tests.conftest import HubFactory
from tests.helpers import wait_for

FORM = {"name": "site-form", "type": "form", "rate_limit": None}


async def test_acks_tell_new_from_duplicate_and_keep_order(make_hub: HubFactory) -> None:
    hub = await make_hub([FORM], roles="http")  # nothing consumes: the stream keeps what is published
    queue = hub.hub.queue
    before = (await queue.jetstream.stream_info(EVENTS)).state.messages
    batch = [(f"events.test.n{i}", f'{{"n":{i}}}'.encode(), {"Nats-Msg-Id": f"pub-test-{i}"}) for i in range(500)]
    await queue.publish_many(batch, EVENTS)
    assert await queue.publish("events.test.n0", b"{}", {"Nats-Msg-Id": "pub-test-0"}, EVENTS) is True
    assert await queue.publish("events.test.new", b"{}", {"Nats-Msg-Id": "pub-test-new"}, EVENTS) is False
    assert (await queue.jetstream.stream_info(EVENTS)).state.messages == before + 501
    first = await queue.jetstream.get_last_msg(EVENTS, "events.test.n0")
    last = await queue.jetstream.get_last_msg(EVENTS, "events.test.n499")
    assert first.seq + 499 == last.seq and last.data == b'{"n":499}'
    assert queue._publisher is not None and not queue._publisher._waiting  # every reply consumed


async def test_a_subject_no_stream_takes_is_refused_not_acked(make_hub: HubFactory) -> None:
    hub = await make_hub([FORM], roles="http")
    queue = hub.hub.queue
    with pytest.raises(QueueUnavailable, match="NoStreamResponseError"):
        await queue.publish("nowhere.at.all", b"{}", {"Nats-Msg-Id": "lost-1"}, INBOUND)
    with pytest.raises(QueueUnavailable, match="stream"):  # the subject belongs to another stream
        await queue.publish("events.test.x", b"{}", {"Nats-Msg-Id": "wrong-stream-1"}, INBOUND)
    assert not queue._publisher._waiting  # type: ignore[union-attr]
    assert await queue.publish("events.test.after", b"{}", {"Nats-Msg-Id": "after-errors"}, EVENTS) is False


async def test_a_reply_that_never_comes_fails_its_publish_with_a_timeout(make_hub: HubFactory) -> None:
    """A subscriber that takes the message and never answers (not JetStream): the publish fails, nothing waits on."""
    hub = await make_hub([FORM], roles="http")
    client = hub.hub.queue.connection
    publisher = StreamPublisher(client, timeout=0.5)
    await publisher.start()
    swallowed = asyncio.Event()

    async def swallow(_msg: object) -> None:
        swallowed.set()

    await client.subscribe("quiet.>", cb=swallow)
    began = time.monotonic()
    with pytest.raises(TimeoutError, match=r"did not acknowledge within 0\.5s"):
        await publisher.publish([("quiet.one", b"{}", {"Nats-Msg-Id": "quiet-1"})], INBOUND)
    waited = time.monotonic() - began
    assert swallowed.is_set()
    assert 0.5 <= waited < 0.5 + 2 * SWEEP_EVERY + 1.0, waited  # due at 0.5 s, swept within SWEEP_EVERY of it
    assert not publisher._waiting and not publisher._deadlines
    # The publisher keeps working, and its sweep stops once nothing waits.
    assert await publisher.publish(
        [("events.test.after-timeout", b"{}", {"Nats-Msg-Id": "after-timeout"})], EVENTS
    ) == [False]

    async def swept() -> bool:
        return publisher._sweep is None and not publisher._deadlines

    await wait_for(swept, timeout=5, what="the sweep to stop once nothing waits")
