"""The outbox relay: each committed event reaches EVENTS once; `leadhub_outbox_pending` says what waits."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from leadhub.pipelines import outbox_relay
from leadhub.pipelines.outbox_relay import OutboxRelay
from leadhub.store.models import Inquiry, OutboxEvent
from tests.conftest import HubFactory
from tests.helpers import wait_for

FORM = {"name": "site-form", "type": "form", "rate_limit": None}


async def test_relay_publishes_every_event_and_reports_what_is_left(
    make_hub: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = await make_hub([FORM], roles="http,pipeline")  # no relay of its own: the outbox keeps the events
    for i in range(4):
        response = await hub.post("/hooks/site-form", json={"name": f"P {i}", "email": f"p{i}@example.com"})
        assert response.status == 202, await response.text()

    async def stored() -> bool:
        async with hub.engine.connect() as conn:
            return (await conn.execute(select(func.count()).select_from(Inquiry))).scalar_one() == 4

    await wait_for(stored, what="4 inquiries stored")
    async with hub.engine.connect() as conn:
        waiting = (await conn.execute(select(func.count()).select_from(OutboxEvent))).scalar_one()
    assert waiting == 12, "a new person's form post: contact.created, inquiry.received, lead.created"
    async with hub.session.get(hub.url("/metrics")) as response:
        assert "leadhub_outbox_written_total 12.0" in await response.text()

    monkeypatch.setattr(outbox_relay, "BATCH", 5)  # claims of 5: the relay is behind for two claims
    monkeypatch.setattr(outbox_relay, "PENDING_EVERY", 0.0)
    published: list[int] = []
    pending: list[int] = []
    relay = OutboxRelay(hub.engine, hub.hub.queue.publish_many, published.append, pending.append)
    while await relay.relay_once():
        pass
    assert published == [5, 5, 2]
    assert pending == [7, 2, 0, 0], "counted while claims were full; 0 once a claim was not, and when none was left"

    info = await hub.hub.queue.jetstream.stream_info("EVENTS")
    assert info.state.messages == 12
    assert await relay.relay_once() == 0, "published events are not claimed again"


async def test_a_stop_during_a_claim_ends_the_relay_without_waiting_out_the_poll_interval(
    make_hub: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stop() sets the wake the loop clears after its claim: the relay slept a whole poll interval (every stop 1 s)."""
    hub = await make_hub([FORM], roles="http,pipeline")
    monkeypatch.setattr(outbox_relay, "POLL_INTERVAL", 3600.0)  # a lost wake would hold the stop for an hour
    claiming, release = asyncio.Event(), asyncio.Event()

    class HeldRelay(OutboxRelay):
        async def relay_once(self) -> int:
            claiming.set()
            await release.wait()
            return await super().relay_once()

    relay = HeldRelay(hub.engine, hub.hub.queue.publish_many, lambda n: None)
    running = asyncio.create_task(relay.run())
    await asyncio.wait_for(claiming.wait(), 10)
    relay.stop()  # while the claim is in hand
    release.set()
    await asyncio.wait_for(running, 30)


async def test_a_wake_during_a_claim_starts_another_claim_at_once(
    make_hub: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipeline wakes the relay after it commits events; a wake that came while a claim was in hand was cleared
    with it, and the events it announced waited out the poll interval (1 s) instead of going out at once."""
    hub = await make_hub([FORM], roles="http,pipeline")
    monkeypatch.setattr(outbox_relay, "POLL_INTERVAL", 3600.0)  # a lost wake would hold the events for an hour
    claims: list[int] = []
    first_claim, release = asyncio.Event(), asyncio.Event()

    class HeldRelay(OutboxRelay):
        async def relay_once(self) -> int:
            claims.append(len(claims))
            first_claim.set()
            await release.wait()
            return await super().relay_once()

    relay = HeldRelay(hub.engine, hub.hub.queue.publish_many, lambda n: None)
    running = asyncio.create_task(relay.run())
    try:
        await asyncio.wait_for(first_claim.wait(), 10)
        relay.wake()  # events committed while the first claim is in hand
        release.set()
        await wait_for(lambda: asyncio.sleep(0, len(claims) >= 2), what="a second claim after the wake")
    finally:
        relay.stop()
        await asyncio.wait_for(running, 30)
