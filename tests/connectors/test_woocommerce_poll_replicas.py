"""Two replicas with one WooCommerce poller on one PostgreSQL database and one NATS: only the lease holder polls,
and when it is killed (kill -9, between publishing a page and moving the checkpoint) the other takes the lease over
and re-reads; the re-read orders dedupe to exactly one inquiry each.

PostgreSQL only: the lease is an advisory lock there; SQLite is one process by construction and always grants it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from leadhub.hub.embedded_nats import EmbeddedNats
from leadhub.store.connector_state import load_state
from tests.conftest import PG_ADMIN_URL, HubFactory, RunningHub
from tests.connectors.woo_shop import FakeShop, poller, shop_fixture  # noqa: F401 - the `shop` fixture
from tests.helpers import wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PG_ADMIN_URL, reason="the poller lease needs PostgreSQL (LEADHUB_TEST_DATABASE_URL)"),
]


async def _detail(hub: RunningHub) -> dict[str, Any]:
    async with hub.session.get(hub.url("/readyz")) as response:
        return (await response.json())["detail"].get("connector:woo-pull") or {}


async def test_one_replica_polls_and_a_killed_one_hands_over_without_loss_or_duplicates(  # type: ignore[no-untyped-def]
    make_daemon, make_hub: HubFactory, shop: FakeShop, external_nats: EmbeddedNats
) -> None:
    for i, order_id in enumerate(range(801, 806)):
        shop.put(order_id, "processing", f"2026-11-01T10:0{i}:00", f"k{order_id}@example.com")

    def hang_after_the_first_page(query: dict[str, str]) -> None:
        if shop.hang is None:
            shop.hang = asyncio.Event()  # the next request waits: the holder sits between publish and checkpoint

    shop.after_request = hang_after_the_first_page
    holder = make_daemon({"connectors": [poller(shop)]}, env={"LEADHUB_NATS_URL": str(external_nats.url)})
    await holder.start()

    async def second_page_asked() -> bool:
        return len(shop.requests) >= 2

    await wait_for(second_page_asked, what="the daemon to publish page 1 and ask for page 2")
    standby = await make_hub([poller(shop)], nats_url=external_nats.url)

    async def in_standby() -> bool:
        return "standby" in await _detail(standby)

    await wait_for(in_standby, what="the second replica to stand by while the first holds the lease")
    assert len(shop.requests) == 2, "only the lease holder asks the shop"

    holder.kill()
    assert shop.hang is not None
    shop.hang.set()

    async def took_over() -> bool:
        detail = await _detail(standby)
        return bool(detail.get("ok")) and "published" in detail

    await wait_for(took_over, timeout=30, what="the second replica to take the lease and poll")
    orders = await standby.wait_items("/api/orders", 5)
    assert sorted(o["external_id"] for o in orders) == [str(i) for i in range(801, 806)]
    inquiries = await standby.wait_items("/api/inquiries", 5)
    assert len({i["id"] for i in inquiries}) == 5, "each order is one inquiry, though page 1 was published twice"
    state = await load_state(standby.engine, "woo-pull", "orders")
    assert state == {"modified_after": "2026-11-01T10:04:00+00:00"}
