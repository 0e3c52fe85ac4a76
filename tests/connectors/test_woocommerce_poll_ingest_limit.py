"""The WooCommerce poller against a NATS that bounds a stream's ingest queue (tests/bounded_nats.py), while a burst of
webhooks fills that queue: the poller publishes one order at a time and moves its checkpoint only after a page is
acknowledged, so an order the stream refused is read again by a later poll. Every order arrives, each once. (Whether
the burst catches the poller mid-walk depends on timing: most runs log a refused poll; the end state holds either way.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from leadhub.store.connector_state import load_state
from tests.bounded_nats import BoundedIngestNats, bounded_nats
from tests.conftest import HubFactory
from tests.connectors.woo_shop import FakeShop, poller, shop_fixture  # noqa: F401 - the `shop` fixture
from tests.helpers import wait_for

INGEST_BOUND = 5
ORDERS = 120
BURST = 300


@pytest.fixture
async def bounded(tmp_path: Path) -> AsyncIterator[BoundedIngestNats]:
    async with bounded_nats(tmp_path / "bounded-nats", INGEST_BOUND) as server:
        yield server


async def test_every_order_gets_in_beside_a_refused_burst(
    make_hub: HubFactory, shop: FakeShop, bounded: BoundedIngestNats
) -> None:
    for n in range(ORDERS):
        shop.put(1000 + n, "processing", f"2026-11-01T10:{n // 60:02d}:{n % 60:02d}", f"buyer{n}@example.com")
    form = {"name": "site-form", "type": "form", "rate_limit": None}
    hub = await make_hub([form, poller(shop, per_page=20)], nats_url=bounded.url)

    async def post(session: aiohttp.ClientSession, n: int) -> int:
        body = {"name": f"Customer {n}", "email": f"customer{n}@client.example"}
        async with session.post(hub.url("/hooks/site-form"), json=body) as response:
            return response.status

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=BURST)) as session:
        statuses = await asyncio.gather(*(post(session, n) for n in range(BURST)))
    assert set(statuses) <= {202, 503}

    orders = await hub.wait_items("/api/orders", ORDERS, timeout=60)
    assert sorted(int(o["external_id"]) for o in orders) == list(range(1000, 1000 + ORDERS)), "each order once"

    async def checkpoint_at_the_last_order() -> dict[str, Any] | None:
        state = await load_state(hub.engine, "woo-pull", "orders")
        return state if state and state["modified_after"] == "2026-11-01T10:01:59+00:00" else None

    await wait_for(checkpoint_at_the_last_order, timeout=20, what="the checkpoint at the last order")
