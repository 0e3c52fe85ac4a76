"""A WooCommerce poller killed (kill -9) in the middle of a walk: the next poller goes on from the last page
checkpointed, and the re-read orders dedupe to exactly one inquiry each. With two replicas on one PostgreSQL database
only the lease holder polls, and the other takes the lease over when the holder dies.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from leadhub.hub.embedded_nats import EmbeddedNats
from leadhub.store.connector_state import load_state
from leadhub.store.db import create_engine
from tests.conftest import PG_ADMIN_URL, HubFactory, RunningHub
from tests.connectors.woo_shop import FakeShop, poller, shop_fixture  # noqa: F401 - the `shop` fixture
from tests.helpers import wait_for
from tests.pg_leases import end_lease_connections

pytestmark = pytest.mark.slow
# SQLite is one process by construction and always grants the lease; PostgreSQL holds it as an advisory lock.
needs_postgres = pytest.mark.skipif(not PG_ADMIN_URL, reason="the poller lease needs LEADHUB_TEST_DATABASE_URL")


async def _detail(hub: RunningHub) -> dict[str, Any]:
    async with hub.session.get(hub.url("/readyz")) as response:
        return (await response.json())["detail"].get("connector:woo-pull") or {}


@needs_postgres
async def test_one_replica_polls_and_a_killed_one_hands_over_without_loss_or_duplicates(  # type: ignore[no-untyped-def]
    make_daemon, make_hub: HubFactory, shop: FakeShop, external_nats: EmbeddedNats
) -> None:
    holder = await _daemon_mid_walk(make_daemon, shop, external_nats)
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
    await _each_order_once(standby)


@needs_postgres
async def test_a_walk_stops_without_checkpointing_when_its_lease_ends_mid_walk(
    make_hub: HubFactory, shop: FakeShop
) -> None:
    """Another replica takes a lost lease within seconds and walks from the same checkpoint: the first must not walk
    on, moving the checkpoint under it. The walk stops before its next save; the new lease's walk starts again from
    page 1's checkpoint."""
    for i, order_id in enumerate(range(801, 806)):
        shop.put(order_id, "processing", f"2026-11-01T10:0{i}:00", f"k{order_id}@example.com")

    def hang_after_the_first_page(query: dict[str, str]) -> None:
        if shop.hang is None:
            shop.hang = asyncio.Event()

    shop.after_request = hang_after_the_first_page
    hub = await make_hub([poller(shop)])

    async def second_page_asked() -> bool:
        return len(shop.requests) >= 2

    await wait_for(second_page_asked, what="the poller to checkpoint page 1 and ask for page 2")
    assert await end_lease_connections(hub.engine) == 1  # the lease's session ends: a restart or a network cut
    assert shop.hang is not None
    shop.hang.set()

    async def next_walk_asked() -> bool:
        return len(shop.requests) >= 3

    await wait_for(next_walk_asked, what="the poller's next request")
    assert shop.requests[1]["modified_after"] == shop.requests[2]["modified_after"] == "2026-11-01T10:00:59", (
        "page 2's walk stopped unsaved; the next walk reads from page 1's checkpoint again"
    )
    await _each_order_once(hub)


async def test_a_poller_killed_mid_walk_loses_and_doubles_nothing(  # type: ignore[no-untyped-def]
    make_daemon, make_hub: HubFactory, shop: FakeShop, external_nats: EmbeddedNats, database_url: str
) -> None:
    holder = await _daemon_mid_walk(make_daemon, shop, external_nats)
    holder.kill()
    engine = create_engine(database_url)
    try:  # page 1 is kept; page 1's last second is read again, and orders 803-805 were never read
        assert await load_state(engine, "woo-pull", "orders") == {"modified_after": "2026-11-01T10:01:00+00:00"}
    finally:
        await engine.dispose()
    assert shop.hang is not None
    shop.hang.set()
    successor = await make_hub([poller(shop)], nats_url=external_nats.url)  # same queue, same database
    await _each_order_once(successor)


async def _daemon_mid_walk(make_daemon, shop: FakeShop, nats: EmbeddedNats):  # type: ignore[no-untyped-def]
    """A `leadhub run` that has published page 1 (orders 801, 802) and waits on page 2."""
    for i, order_id in enumerate(range(801, 806)):
        shop.put(order_id, "processing", f"2026-11-01T10:0{i}:00", f"k{order_id}@example.com")

    def hang_after_the_first_page(query: dict[str, str]) -> None:
        if shop.hang is None:
            shop.hang = asyncio.Event()  # the next request waits: the poller sits in the middle of its walk

    shop.after_request = hang_after_the_first_page
    daemon = make_daemon({"connectors": [poller(shop)]}, env={"LEADHUB_NATS_URL": str(nats.url)})
    await daemon.start()

    async def second_page_asked() -> bool:
        return len(shop.requests) >= 2

    await wait_for(second_page_asked, what="the daemon to publish page 1 and ask for page 2")
    return daemon


async def _each_order_once(hub: RunningHub) -> None:
    orders = await hub.wait_items("/api/orders", 5, timeout=30)
    assert sorted(o["external_id"] for o in orders) == [str(i) for i in range(801, 806)]
    inquiries = await hub.wait_items("/api/inquiries", 5)
    assert len({i["id"] for i in inquiries}) == 5, "each order is one inquiry, though page 1 was published twice"

    async def checkpoint() -> bool:
        return await load_state(hub.engine, "woo-pull", "orders") == {"modified_after": "2026-11-01T10:04:00+00:00"}

    await wait_for(checkpoint, what="the checkpoint at the newest order")
