"""After a fault, nothing left stuck: the inbound queue drained, every domain event relayed once, no dead letters.

Counting inquiries is not enough: an envelope redelivered after its commit (a kill between the commit and the
ack) that the pipeline cannot absorb is retried and dead-lettered *after* the counts are already right.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from sqlalchemy import func, select

from leadhub.store.db import create_engine
from leadhub.store.models import DeadLetter, OutboxEvent
from tests.helpers import wait_for

PIPELINE_DURABLE = "pipeline"


def embedded_nats_url(data_dir: Path) -> str:
    """The client URL of the daemon's embedded NATS, token included, as the daemon writes it for the operator."""
    url_file = data_dir.resolve() / "nats" / "client.url"
    assert url_file.exists(), f"no {url_file}: the daemon's embedded NATS is not running"
    return url_file.read_text().strip()


@dataclass(frozen=True)
class Settled:
    """What is left once the daemon has nothing more to do."""

    inbound_messages: int  # INBOUND is a work queue: an acked envelope leaves it
    unacked: int  # fetched by the pipeline and not acked (or naked for a retry)
    unpublished: int  # outbox rows the relay has not published
    dead_letters: int
    lead_events: int  # `lead.created` messages on EVENTS


async def _look(nats_url: str, database_url: str) -> Settled:
    connection = await nats.connect(nats_url)
    try:
        jetstream = connection.jetstream()
        inbound = await jetstream.stream_info("INBOUND")
        consumer = await jetstream.consumer_info("INBOUND", PIPELINE_DURABLE)
        events = await jetstream.stream_info("EVENTS", subjects_filter="events.lead.created")
    finally:
        await connection.close()
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            unpublished = (
                await conn.execute(
                    select(func.count()).select_from(OutboxEvent).where(OutboxEvent.published_at.is_(None))
                )
            ).scalar_one()
            dead = (await conn.execute(select(func.count()).select_from(DeadLetter))).scalar_one()
    finally:
        await engine.dispose()
    return Settled(
        inbound_messages=inbound.state.messages,
        unacked=consumer.num_pending + consumer.num_ack_pending,
        unpublished=unpublished,
        dead_letters=dead,
        lead_events=(events.state.subjects or {}).get("events.lead.created", 0),
    )


async def wait_settled(
    nats_url: str, database_url: str, *, leads: int, events_once: bool = True, timeout: float = 30.0
) -> Settled:
    """Wait until the queue is drained and the outbox relayed; nothing may be dead-lettered.

    `events_once`: each lead's `lead.created` is on EVENTS exactly once. Without it, at least once: a relay killed
    between its publish and marking the row published publishes again, which only EVENTS' duplicate window
    absorbs, and a restart can outlast a short window (the trigger engine's unique actions absorb the rest).
    """

    async def probe() -> Settled | None:
        seen = await _look(nats_url, database_url)
        assert seen.dead_letters == 0, f"a fault must not dead-letter anything: {seen}"
        assert not events_once or seen.lead_events <= leads, f"lead.created relayed more than once per lead: {seen}"
        idle = (seen.inbound_messages, seen.unacked, seen.unpublished) == (0, 0, 0)
        return seen if idle and seen.lead_events >= leads else None

    last: Any = await wait_for(probe, timeout=timeout, what="the inbound queue drained and every event relayed")
    return last
