"""The rule engine takes only the event types its rules listen to; a type a reload adds acts from the reload on."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from leadhub.triggers.consumer import EVERYTHING, NOTHING, covered, event_subjects
from tests.helpers import wait_for
from tests.triggers.conftest import Shop

LEADS = """
rules:
  - id: call-back
    on: lead.created
    do: [{create_task: {title: "Call"}}]
"""
ORDERS = """
rules:
  - id: thank-you
    on: [order.created]
    do: [{create_task: {title: "Thank"}}]
"""


def test_the_subjects_are_those_of_the_listened_types() -> None:
    assert event_subjects([]) == [NOTHING]
    assert event_subjects(["order.created", "lead.created", "lead.created"]) == [
        "events.lead.created",
        "events.order.created",
    ]
    assert event_subjects(["lead.created", "lead created"]) == [EVERYTHING], "not a plain subject: every event"
    assert event_subjects(["lead.*"]) == [EVERYTHING]


def test_covered_follows_nats_wildcards() -> None:
    assert covered("events.lead.created", [EVERYTHING])
    assert covered("events.lead.created", ["events.order.created", "events.lead.created"])
    assert covered("events.lead.created", ["events.*.created"])
    assert not covered("events.lead.created", [NOTHING])
    assert not covered("events.lead.created", ["events.lead"])
    assert not covered("events.lead", ["events.lead.>"])
    assert not covered("events.lead.created", [])


async def _consumer(running: Any) -> Any:
    return await running.hub.queue.jetstream.consumer_info("EVENTS", "triggers")


async def _events_on_stream(running: Any, count: int) -> bool:
    return (await running.hub.queue.jetstream.stream_info("EVENTS")).state.messages >= count


async def test_only_listened_events_are_delivered_and_a_reload_adds_a_type_from_then_on(
    trigger_hub, clock, rules_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    (rules_dir / "leads.yaml").write_text(LEADS)
    running = await trigger_hub()
    shop = Shop(running.engine, clock)

    async def listening(subject: str) -> bool:
        return subject in running.hub.triggers.consumer.filter

    await wait_for(lambda: listening("events.lead.created"), timeout=20, what="the consumer to listen")
    assert (await _consumer(running)).config.filter_subjects == ["events.lead.created"]

    contact_id, lead_id = await shop.customer()
    order_ids = [await shop.order(contact_id, lead_id, f"N{i}") for i in range(3)]
    for order_id in order_ids:  # before any rule listens to order.created
        await shop.emit("order.created", order_id, order_id=order_id, contact_id=contact_id, lead_id=lead_id)
    await shop.emit("lead.created", lead_id, lead_id=lead_id, contact_id=contact_id)
    await running.wait_items("/api/tasks", 1, timeout=30, lead_id=lead_id)
    await wait_for(lambda: _events_on_stream(running, 4), timeout=20, what="the four events relayed")
    assert (await _consumer(running)).delivered.consumer_seq == 1, "the order events were never delivered"

    (rules_dir / "orders.yaml").write_text(ORDERS)

    await wait_for(lambda: listening("events.order.created"), timeout=30, what="the reload to add order.created")
    late_order = await shop.order(contact_id, lead_id, "N9")
    await shop.emit("order.created", late_order, order_id=late_order, contact_id=contact_id, lead_id=lead_id)
    await wait_for(lambda: _events_on_stream(running, 5), timeout=20, what="the fifth event relayed")
    await running.wait_items("/api/tasks", 2, timeout=30, lead_id=lead_id)
    thanks = (await running.api("/api/actions", rule_id="thank-you"))["items"]
    assert len(thanks) == 1, f"only the order.created after the reload: {thanks}"
    assert (await _consumer(running)).num_ack_pending == 0


class _Recorder:
    """Stands in for the matcher (not under test here): the events the consumer hands on."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def handle(self, event: dict[str, Any]) -> int:
        self.seen.append(event["data"]["n"])
        return 0


async def test_events_older_than_a_listener_stay_unseen_even_where_nats_would_deliver_them(tmp_path: Path) -> None:
    import asyncio
    import json

    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

    from leadhub.hub.embedded_nats import EmbeddedNats
    from leadhub.triggers.consumer import EventConsumer

    server = EmbeddedNats(tmp_path / "nats")
    connection = await nats.connect(await server.start())
    try:
        jetstream = connection.jetstream()
        await jetstream.add_stream(StreamConfig(name="EVENTS", subjects=["events.>"]))
        # The consumer's state after a NATS restart: filtered to leads, its position back at the start.
        await jetstream.add_consumer(
            "EVENTS",
            ConsumerConfig(
                durable_name="triggers", ack_policy=AckPolicy.EXPLICIT, filter_subjects=["events.lead.created"]
            ),
        )

        async def publish(kind: str, n: str) -> None:
            body = {
                "id": n,
                "type": kind,
                "subject_id": None,
                "occurred_at": "2026-12-01T00:00:00+00:00",
                "data": {"n": n},
            }
            await jetstream.publish(f"events.{kind}", json.dumps(body).encode())

        for n in ("old-order-1", "old-order-2"):
            await publish("order.created", n)
        await publish("lead.created", "lead-1")
        recorder = _Recorder()
        consumer = EventConsumer(
            lambda: jetstream, recorder, lambda: None, listened=lambda: ["lead.created", "order.created"]
        )
        running = asyncio.create_task(consumer.run())
        await wait_for(lambda: asyncio.sleep(0, "lead-1" in recorder.seen), timeout=20, what="the lead event")
        await publish("order.created", "new-order")
        await wait_for(lambda: asyncio.sleep(0, "new-order" in recorder.seen), timeout=20, what="the new order event")
        consumer.stop()
        await running
        assert recorder.seen == ["lead-1", "new-order"], "orders from before the listener were acked unseen"
        info = await jetstream.consumer_info("EVENTS", "triggers")
        assert info.num_ack_pending == 0 and info.num_pending == 0
        assert sorted(info.config.filter_subjects) == ["events.lead.created", "events.order.created"]
    finally:
        await connection.close()
        await server.stop()


async def test_a_replica_whose_rules_do_not_listen_gives_an_event_back_to_one_whose_rules_do(tmp_path: Path) -> None:
    """Replicas share the durable consumer; while one has loaded a rule on a new type and the other not yet (a
    hot reload a moment apart, a rules change rolled out host by host), the shared filter delivers that type to
    both. The replica without the rule acked the event unhandled: the new rule never saw it. It gives it back."""
    import asyncio
    import json

    import nats
    from nats.js.api import StreamConfig

    from leadhub.hub.embedded_nats import EmbeddedNats
    from leadhub.triggers.consumer import EventConsumer

    server = EmbeddedNats(tmp_path / "nats")
    connection = await nats.connect(await server.start())
    tasks: list[asyncio.Task[None]] = []
    try:
        jetstream = connection.jetstream()
        await jetstream.add_stream(StreamConfig(name="EVENTS", subjects=["events.>"]))

        async def filter_is(subjects: list[str]) -> bool:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                info = await jetstream.consumer_info("EVENTS", "triggers")
                return sorted(info.config.filter_subjects or []) == subjects
            return False

        def start(listened: list[str]) -> tuple[EventConsumer, _Recorder]:
            recorder = _Recorder()
            consumer = EventConsumer(lambda: jetstream, recorder, lambda: None, listened=lambda: listened)
            tasks.append(asyncio.create_task(consumer.run()))
            return consumer, recorder

        _, old_rules = start(["lead.created"])
        await wait_for(lambda: filter_is(["events.lead.created"]), timeout=20, what="the first replica's filter")
        reloaded, _ = start(["lead.created", "order.created"])
        both = ["events.lead.created", "events.order.created"]
        await wait_for(lambda: filter_is(both), timeout=20, what="the reloaded replica's filter")
        reloaded.stop()  # for a moment only the replica without the rule is fetching
        await tasks[-1]
        for n in ("order-1", "order-2", "order-3"):
            body = {"id": n, "type": "order.created", "subject_id": None, "occurred_at": None, "data": {"n": n}}
            await jetstream.publish("events.order.created", json.dumps(body).encode())

        async def taken_by_the_old_replica() -> bool:
            info = await jetstream.consumer_info("EVENTS", "triggers")
            return bool(old_rules.seen) or info.num_redelivered > 0

        await wait_for(taken_by_the_old_replica, timeout=20, what="the old replica to take the orders")
        _, new_rules = start(["lead.created", "order.created"])
        await wait_for(
            lambda: asyncio.sleep(0, len(new_rules.seen) == 3), timeout=30, what="the orders at the reloaded replica"
        )
        assert sorted(new_rules.seen) == ["order-1", "order-2", "order-3"]
        assert old_rules.seen == [], "not handed to rules that do not listen to them"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await connection.close()
        await server.stop()


async def test_an_event_nested_too_deeply_to_read_is_skipped_not_the_consumers_end(tmp_path: Path) -> None:
    """json.loads raises RecursionError (not a ValueError) past the parser's stack: it ended the consumer's task,
    which stops the daemon, and the unacked message came back at every start."""
    import asyncio
    import json

    import nats
    from nats.js.api import StreamConfig

    from leadhub.hub.embedded_nats import EmbeddedNats
    from leadhub.triggers.consumer import EventConsumer

    server = EmbeddedNats(tmp_path / "nats")
    connection = await nats.connect(await server.start())
    try:
        jetstream = connection.jetstream()
        await jetstream.add_stream(StreamConfig(name="EVENTS", subjects=["events.>"]))
        await jetstream.publish("events.lead.created", b"[" * 100_000 + b"]" * 100_000)
        body = {"id": "after", "type": "lead.created", "subject_id": None, "occurred_at": None, "data": {"n": "after"}}
        await jetstream.publish("events.lead.created", json.dumps(body).encode())
        recorder = _Recorder()
        consumer = EventConsumer(lambda: jetstream, recorder, lambda: None, listened=lambda: ["lead.created"])
        running = asyncio.create_task(consumer.run())
        await wait_for(
            lambda: asyncio.sleep(0, "after" in recorder.seen or running.done()), timeout=20, what="the next event"
        )
        assert not running.done(), running.exception()
        consumer.stop()
        await running
        assert recorder.seen == ["after"]
        assert (await jetstream.consumer_info("EVENTS", "triggers")).num_ack_pending == 0
    finally:
        await connection.close()
        await server.stop()
