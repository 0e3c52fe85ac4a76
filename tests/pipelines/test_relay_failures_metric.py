"""`leadhub_relay_failures_total{reason}`: the outbox relay's failed publishes show on /metrics (they were only
logged), with a fixed set of reasons."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert

from leadhub.hub.embedded_nats import EmbeddedNats
from leadhub.ids import new_id
from leadhub.store import outbox
from leadhub.store.models import OutboxEvent
from tests.conftest import HubFactory, RunningHub
from tests.helpers import wait_for

REASONS = ("queue_busy", "queue_unavailable", "store", "too_large")  # a fixed set: the metric's contract


async def _failures(hub: RunningHub) -> dict[str, float]:
    async with hub.session.get(hub.url("/metrics")) as response:
        text = await response.text()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("leadhub_relay_failures_total{"):
            labels, value = line.rsplit(" ", 1)
            found[labels.split('reason="', 1)[1].split('"', 1)[0]] = float(value)
    return found


async def test_a_relay_publish_with_nats_away_counts_as_queue_unavailable(
    make_hub: HubFactory, external_nats: EmbeddedNats
) -> None:
    hub = await make_hub([], nats_url=external_nats.url, roles="pipeline,relay,http")
    assert await _failures(hub) == dict.fromkeys(REASONS, 0.0), "every reason shows from the start"
    await external_nats.stop()
    async with hub.engine.begin() as conn:
        await conn.execute(
            insert(OutboxEvent.__table__), [outbox.outbox_event("lead.created", new_id(), datetime.now(UTC), n=1)]
        )
    assert hub.hub.relay is not None
    hub.hub.relay.wake()

    async def counted() -> dict[str, float] | None:
        found = await _failures(hub)
        return found if found.get("queue_unavailable", 0) >= 1 else None

    found = await wait_for(counted, timeout=30, what="a relay failure counted as queue_unavailable")
    assert set(found) == set(REASONS) and found["queue_busy"] == 0 and found["store"] == 0
