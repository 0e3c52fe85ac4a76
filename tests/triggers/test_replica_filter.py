"""Replicas whose rules differ share one durable event consumer: its filter is the union of what all their rules
listen to, so the replica that subscribes last cannot narrow it under the others."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import pytest

from leadhub.hub.embedded_nats import EmbeddedNats
from leadhub.triggers.clock import ManualClock
from tests.conftest import RunningHub
from tests.helpers import wait_for
from tests.triggers.conftest import Shop, started_hub, stop_hub

LEADS = """
rules:
  - id: call-back
    on: lead.created
    do: [{create_task: {title: "Call"}}]
"""
LEADS_AND_ORDERS = (
    LEADS
    + """
  - id: thank-you
    on: order.created
    do: [{create_task: {title: "Thank"}}]
"""
)
BOTH = ["events.lead.created", "events.order.created"]

ReplicaFactory = Callable[[str, str], Awaitable[RunningHub]]


def test_the_filter_is_the_union_of_the_replicas_subjects() -> None:
    from leadhub.triggers.consumer import EVERYTHING, NOTHING, union_of

    assert union_of([["events.lead.created"]]) == ["events.lead.created"], "one replica: its own"
    assert union_of([["events.order.created", "events.lead.created"], ["events.lead.created"]]) == BOTH
    assert union_of([[NOTHING], ["events.lead.created"]]) == ["events.lead.created"]
    assert union_of([[NOTHING], [NOTHING]]) == [NOTHING]
    assert union_of([[EVERYTHING], ["events.lead.created"]]) == [EVERYTHING]


@pytest.fixture
async def replica(
    tmp_path: Path, database_url: str, clock: ManualClock, external_nats: EmbeddedNats
) -> AsyncIterator[ReplicaFactory]:
    """Start `leadhub run` replicas in this process, each with its own rules, on one NATS and one database."""
    running: list[RunningHub] = []

    async def make(name: str, rules: str) -> RunningHub:
        rules_dir = tmp_path / name / "rules"
        rules_dir.mkdir(parents=True)
        (rules_dir / "rules.yaml").write_text(rules)
        raw = {
            "data_dir": str(tmp_path / name / "data"),
            "database_url": database_url,
            "nats_url": external_nats.url,
            "http_port": 0,
            "rules_dir": str(rules_dir),
            "public_url": "https://shop.example",
        }
        handle = await started_hub(raw, clock)
        hub = handle.hub
        running.append(handle)

        async def listening() -> bool:
            return hub.triggers is not None and bool(hub.triggers.consumer.filter)

        await wait_for(listening, timeout=20, what=f"replica {name} to listen for events")
        return handle

    yield make
    for handle in reversed(running):
        if not handle.session.closed:
            await stop_hub(handle)


async def test_a_replica_with_older_rules_subscribing_last_leaves_the_others_types_delivered(
    replica: ReplicaFactory, external_nats: EmbeddedNats, clock: ManualClock
) -> None:
    """Found by a review: each replica set the shared consumer's filter to its own rules' types, so a replica
    restarted with older rules (listening to lead.created only) took order.created out of it; NATS then moved
    the consumer past every order event and the newer replica's thank-you rule never saw one."""
    connection = await nats.connect(external_nats.url)
    jetstream = connection.jetstream()

    async def server_filter() -> list[str]:
        return sorted((await jetstream.consumer_info("EVENTS", "triggers")).config.filter_subjects or [])

    async def filter_is_both() -> bool:
        return await server_filter() == BOTH

    try:
        newer = await replica("newer", LEADS_AND_ORDERS)
        await wait_for(filter_is_both, timeout=20, what="the newer replica's filter")
        older = await replica("older", LEADS)  # subscribes last, with rules on lead.created only

        shop = Shop(newer.engine, clock)
        contact_id, lead_id = await shop.customer()
        for number in ("N1", "N2", "N3"):
            order_id = await shop.order(contact_id, lead_id, number)
            await shop.emit("order.created", order_id, order_id=order_id, contact_id=contact_id, lead_id=lead_id)

        async def thanked() -> list[Any] | None:
            runs = await shop.actions(rule_id="thank-you")
            return runs if len(runs) == 3 else None

        await wait_for(thanked, timeout=20, what="the thank-you rule to act on each order.created")
        assert await server_filter() == BOTH, "the older replica's rules did not narrow the shared filter"
        assert older.hub.triggers is not None
        assert older.hub.triggers.consumer.listening == ["events.lead.created"], "its own rules are unchanged"
    finally:
        await connection.close()


async def test_each_live_replica_keeps_one_entry_and_a_stopped_one_takes_its_entry_out(
    replica: ReplicaFactory, external_nats: EmbeddedNats
) -> None:
    from leadhub.triggers.listeners import BUCKET

    connection = await nats.connect(external_nats.url)
    try:
        jetstream = connection.jetstream()
        newer = await replica("newer", LEADS_AND_ORDERS)
        older = await replica("older", LEADS)
        bucket = await jetstream.key_value(BUCKET)
        assert newer.hub.triggers is not None and older.hub.triggers is not None
        keys = {newer.hub.triggers.consumer.listeners.key, older.hub.triggers.consumer.listeners.key}
        assert set(await bucket.keys()) == keys, "one entry per live replica"
        await stop_hub(older)
        assert await bucket.keys() == [newer.hub.triggers.consumer.listeners.key], "the stopped one's entry is out"
    finally:
        await connection.close()


async def test_a_killed_replicas_types_leave_the_filter_once_its_entry_expires(tmp_path: Path) -> None:
    """A replica killed cannot delete its entry: the bucket forgets it after its TTL (here 1 s, set by the test's
    bucket; 30 s as the queue declares it) and the live replica narrows the filter at its next check."""
    import asyncio

    from nats.js.api import KeyValueConfig, StreamConfig

    from leadhub.triggers.consumer import EventConsumer
    from leadhub.triggers.listeners import BUCKET

    server = EmbeddedNats(tmp_path / "nats")
    connection = await nats.connect(await server.start())
    try:
        jetstream = connection.jetstream()
        await jetstream.add_stream(StreamConfig(name="EVENTS", subjects=["events.>"]))
        bucket = await jetstream.create_key_value(KeyValueConfig(bucket=BUCKET, history=1, ttl=1.0))
        await bucket.put("killed-replica", b'["events.order.created"]')

        class Nobody:
            async def handle(self, event: dict[str, Any]) -> int:
                return 0

        consumer = EventConsumer(lambda: jetstream, Nobody(), lambda: None, listened=lambda: ["lead.created"])
        running = asyncio.create_task(consumer.run())

        async def filter_is(subjects: list[str]) -> bool:
            with contextlib.suppress(nats.js.errors.NotFoundError):  # not created yet
                info = await jetstream.consumer_info("EVENTS", "triggers")
                return sorted(info.config.filter_subjects or []) == subjects
            return False

        try:
            await wait_for(lambda: filter_is(BOTH), timeout=20, what="the killed replica's types in the filter")
            await wait_for(lambda: filter_is(["events.lead.created"]), timeout=20, what="its entry to expire")
        finally:
            consumer.stop()
            await running
        assert await _live_keys(bucket) == [], "the live replica's entry goes at its stop, the killed one's expired"
    finally:
        await connection.close()
        await server.stop()


async def _live_keys(bucket: Any) -> list[str]:
    try:
        return list(await bucket.keys())
    except nats.js.errors.NoKeysError:
        return []


async def test_a_bucket_that_refuses_the_entry_does_not_stop_the_replica_taking_its_events(tmp_path: Path) -> None:
    """Found by review: a put the bucket refused (a full disk, a cluster without its leader) raised out of the filter
    check, which the consumer treated as a failed fetch: no event was taken while the bucket refused."""
    import asyncio
    import json

    from nats.js.api import KeyValueConfig, StreamConfig

    from leadhub.triggers.consumer import EventConsumer
    from leadhub.triggers.listeners import BUCKET

    server = EmbeddedNats(tmp_path / "nats")
    connection = await nats.connect(await server.start())
    try:
        jetstream = connection.jetstream()
        await jetstream.add_stream(StreamConfig(name="EVENTS", subjects=["events.>"]))
        await jetstream.create_key_value(KeyValueConfig(bucket=BUCKET, history=1, max_value_size=4))  # refuses all
        handled: list[str] = []

        class Recorder:
            async def handle(self, event: dict[str, Any]) -> int:
                handled.append(event["id"])
                return 0

        consumer = EventConsumer(lambda: jetstream, Recorder(), lambda: None, listened=lambda: ["lead.created"])
        running = asyncio.create_task(consumer.run())
        try:
            event = {"id": "e1", "type": "lead.created", "subject_id": "l1", "occurred_at": "2026-12-07T10:00:00+00:00"}
            await jetstream.publish("events.lead.created", json.dumps({**event, "data": {}}).encode())

            async def taken() -> bool:
                return handled == ["e1"]

            await wait_for(taken, timeout=20, what="the replica to take its event while the bucket refuses entries")
        finally:
            consumer.stop()
            await running
    finally:
        await connection.close()
        await server.stop()
