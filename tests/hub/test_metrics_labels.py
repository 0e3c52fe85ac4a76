"""/metrics under hostile input: however many distinct names, paths, bodies and errors senders send, the number of
series stays what the code and the config define (each series costs memory for the life of the process)."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from leadhub.envelope import Envelope
from leadhub.store.models import DeadLetter, Inquiry
from tests.conftest import HubFactory, RunningHub
from tests.helpers import wait_for

CONNECTORS: list[dict[str, Any]] = [
    {"name": "site-form", "type": "form", "token": "form-token", "rate_limit": None},
    {"name": "limited", "type": "form", "rate_limit": "2/m"},
    {"name": "shop", "type": "shopify", "secret": "shop-secret"},
]


async def _series(hub: RunningHub) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    async with hub.session.get(hub.url("/metrics")) as response:
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def _hostile_round(hub: RunningHub, tag: str, count: int) -> None:
    """`count` requests of each kind, every one with values never seen before."""
    json_type = {"Content-Type": "application/json"}
    for i in range(count):
        unique = f"{tag}-{i}"
        for method, path, kwargs in (
            ("POST", f"/hooks/no-such-{unique}", {}),
            ("GET", f"/{unique}/x?channel={unique}", {}),
            ("GET", f"/api/{unique}", {}),
            ("POST", f"/hooks/site-form?token={unique}", {"json": {"name": unique}}),
            ("POST", "/hooks/site-form?token=form-token", {"data": f'{{"{unique}":'.encode(), "headers": json_type}),
            ("POST", "/hooks/site-form?token=form-token", {"json": {"name": unique, "channel": unique}}),
            ("POST", "/hooks/limited", {"json": {"name": unique}}),
            (
                "POST",
                "/hooks/shop",
                {
                    "json": {"id": i, "note": unique},
                    "headers": {"X-Shopify-Hmac-Sha256": unique, "X-Shopify-Topic": unique},
                },
            ),
        ):
            async with hub.session.request(method, hub.url(path), **kwargs) as response:
                assert response.status < 500, (path, response.status, await response.text())
        envelope = Envelope(
            key=f"form:{unique}:idem:1",
            channel="form",
            connector=f"gone-{unique}",
            payload=b'{"name": "x"}',
            content_type="application/json",
        )
        await hub.hub.queue.publish_envelope(envelope)  # dead-lettered: no such connector


async def _wait_pipeline(hub: RunningHub, inquiries: int, dead: int) -> None:
    async def probe() -> bool:
        async with hub.engine.connect() as conn:
            stored = await conn.scalar(
                select(func.count()).select_from(Inquiry).where(Inquiry.connector == "site-form")
            )
            dead_now = await conn.scalar(select(func.count()).select_from(DeadLetter))
        return (stored, dead_now) == (inquiries, dead)

    await wait_for(probe, timeout=60, what=f"{inquiries} site-form inquiries and {dead} dead letters")


async def test_series_stay_bounded_under_distinct_hostile_values(make_hub: HubFactory) -> None:
    hub = await make_hub(CONNECTORS)
    await _series(hub)  # the scrape itself is counted from the second one on
    await _hostile_round(hub, "first", 3)  # 3: the rate limit (2/m) answers 429 in this round already
    await _wait_pipeline(hub, inquiries=3, dead=3)
    before = await _series(hub)

    await _hostile_round(hub, "second", 60)
    await _wait_pipeline(hub, inquiries=63, dead=63)
    after = await _series(hub)

    assert after == before, sorted(after - before)[:20]
    statuses = {dict(labels).get("status") for name, labels in after if name == "leadhub_http_requests_total"}
    assert {"202", "400", "401", "404", "429"} <= statuses  # every kind of answer was counted
