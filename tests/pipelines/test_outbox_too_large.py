"""An outbox event larger than the queue takes is dead-lettered, and the events behind it still go out.

The relay publishes the oldest events first and retries what NATS did not take; an event over the server's
`max_payload` (a notes field pasted whole into a lead on a NATS with the stock 1 MB limit) can never be taken, and
held every event after it in the outbox for good.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, insert, select

from leadhub.hub import embedded_nats
from leadhub.pipelines import outbox_relay
from leadhub.pipelines.outbox_relay import OutboxRelay
from leadhub.store import outbox
from leadhub.store.models import OutboxEvent
from tests.conftest import HubFactory, RunningHub
from tests.helpers import wait_for

FORM = {"name": "site-form", "type": "form", "rate_limit": None}
LIMIT = 64 * 1024  # the embedded server's max_payload in these tests


async def _unpublished(hub: RunningHub) -> int:
    async with hub.engine.connect() as conn:
        return await outbox.count_unpublished(conn)


async def _events_in_stream(hub: RunningHub) -> int:
    return (await hub.hub.queue.jetstream.stream_info("EVENTS")).state.messages


async def _add_event(hub: RunningHub, event_id: str, note: str) -> None:
    """An event as the store writes one (`lead.updated` of a lead's notes), straight into the outbox."""
    event = outbox.outbox_event("lead.updated", "lead-1", datetime.now(UTC), changes=["notes"], notes=note)
    async with hub.engine.begin() as conn:
        await conn.execute(insert(OutboxEvent).values({**event, "id": event_id}))


@pytest.fixture
async def small_queue_hub(make_hub: HubFactory, monkeypatch: pytest.MonkeyPatch) -> RunningHub:
    """A hub whose NATS takes messages of up to 64 KiB, and no relay of its own: the test drives one."""
    monkeypatch.setattr(embedded_nats, "MAX_PAYLOAD", LIMIT)
    return await make_hub([FORM], roles="http,pipeline")


async def test_an_event_too_large_for_the_queue_is_dead_lettered_and_the_rest_go_out(
    small_queue_hub: RunningHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = small_queue_hub
    await _add_event(hub, "0001-small", "short")
    await _add_event(hub, "0002-large", "x" * (LIMIT + 1))
    await _add_event(hub, "0003-small", "short too")
    await _add_event(hub, "0004-large", "y" * (2 * LIMIT))
    await _add_event(hub, "0005-small", "last")
    failures: list[str] = []
    dead: list[str] = []
    relay = OutboxRelay(
        hub.engine, hub.hub.queue.publish_many, lambda n: None, on_failure=failures.append, on_dead=dead.append
    )
    monkeypatch.setattr(outbox_relay, "BATCH", 5)  # one claim holds all five: the large ones sit between small ones

    assert await relay.relay_once() == 5
    assert relay.last_error is None
    assert await _unpublished(hub) == 0, "the small events went out, the large ones to dead letters"
    assert await _events_in_stream(hub) == 3
    assert failures == ["too_large", "too_large"] and dead == ["ItemTooLarge", "ItemTooLarge"]

    letters = (await hub.api("/api/dead-letters"))["items"][::-1]  # the API lists the newest first
    assert [(d["source"], d["key"], d["subject"]) for d in letters] == [
        ("outbox", "0002-large", "events.lead.updated"),
        ("outbox", "0004-large", "events.lead.updated"),
    ]
    assert "the queue takes at most 65536 bytes per item" in letters[0]["reason"]
    shown = await hub.api(f"/api/dead-letters/{letters[0]['id']}")
    assert shown["headers"]["Nats-Msg-Id"] == "0002-large"
    async with hub.session.get(hub.url(f"/api/dead-letters/{letters[0]['id']}/payload")) as response:
        event = json.loads(await response.read())
    assert event["id"] == "0002-large" and event["data"]["notes"] == "x" * (LIMIT + 1), "the whole event is kept"
    assert await relay.relay_once() == 0, "nothing is claimed again"


async def test_a_replayed_event_goes_back_to_the_outbox_and_fails_again_into_the_same_dead_letter(
    small_queue_hub: RunningHub,
) -> None:
    """Replay puts the event back for the relay (after the admin raised the server's limit it goes out); while it is
    still too large, the same dead letter opens again rather than a second one."""
    hub = small_queue_hub
    await _add_event(hub, "0001-large", "x" * (LIMIT + 1))
    relay = OutboxRelay(hub.engine, hub.hub.queue.publish_many, lambda n: None)
    assert await relay.relay_once() == 1
    [letter] = (await hub.api("/api/dead-letters"))["items"]

    async with hub.session.post(hub.url(f"/api/dead-letters/{letter['id']}/replay")) as response:
        assert response.status == 200 and await response.json() == {"id": letter["id"], "resolved": True}
    assert await _unpublished(hub) == 1, "back in the outbox"
    assert (await hub.api("/api/dead-letters", resolved="false"))["items"] == []

    assert await relay.relay_once() == 1
    [again] = (await hub.api("/api/dead-letters"))["items"]
    assert again["id"] == letter["id"] and again["replays"] == 1 and again["resolved_at"] is None
    async with hub.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(OutboxEvent))).scalar_one() == 1


@pytest.mark.store_independent  # the wiring; the store's part runs on both in the tests above
async def test_the_daemon_relay_moves_past_a_large_event(small_queue_hub: RunningHub, make_hub: HubFactory) -> None:
    """End to end: a hub with its relay running publishes the events written after a large one."""
    hub = small_queue_hub
    await _add_event(hub, "0001-large", "x" * (LIMIT + 1))
    relaying = await make_hub([FORM], roles="http,relay")  # the same database, its own NATS
    response = await hub.post("/hooks/site-form", json={"name": "Ann", "email": "ann@example.com"})
    assert response.status == 202

    async def all_out() -> bool:
        return await _unpublished(hub) == 0 and await _events_in_stream(relaying) >= 3

    await wait_for(all_out, timeout=20, what="the events behind the large one relayed")
    async with relaying.session.get(relaying.url("/metrics")) as response:
        text = await response.text()
    assert 'leadhub_relay_failures_total{reason="too_large"} 1.0' in text
    assert 'leadhub_dead_letters_total{reason="ItemTooLarge"} 1.0' in text
