"""A stop that begins while the store side is still starting: nothing starts after it, nothing is left running.

The store side (hub/daemon.py) migrates, then starts the relay, the pipeline and the pull connectors, awaiting the
database on the way. A stop that came during the migration stopped the little that had started and waited for the
store side, which then went on to start a WooCommerce poller, the relay and the pipeline: they ran on, unstopped,
polling the shop and holding its lease while the queue and the store closed under them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from leadhub.connectors.base import Stop
from leadhub.hub.config import config_from_dict
from leadhub.hub.daemon import Hub
from leadhub.store.db import MIGRATION_LOCK_ID, create_engine
from tests.connectors.woo_shop import FakeShop, poller, shop_fixture  # noqa: F401 - the `shop` fixture
from tests.helpers import wait_for

POLLER_TASK = "woocommerce-poll:woo-pull"  # the task WooCommercePollConnector.start() creates


@contextlib.asynccontextmanager
async def migration_lock_held(database_url: str) -> AsyncIterator[None]:
    """Another process migrating the same (empty) database: a hub's migration waits for it to finish.

    SQLite: its write lock (the migration's BEGIN IMMEDIATE waits the busy timeout, 5 s, then retries);
    PostgreSQL: the migration's advisory lock (store/db.py).
    """
    engine = create_engine(database_url)
    try:
        async with engine.connect() as holder:
            if engine.dialect.name == "sqlite":
                await holder.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                await holder.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            try:
                yield
            finally:
                if engine.dialect.name == "sqlite":
                    await holder.rollback()
                else:
                    await holder.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
    finally:
        await engine.dispose()


def _running(hub: Hub) -> list[str]:
    """The hub's background tasks and the poller's that have not ended."""
    mine = {task for task in asyncio.all_tasks() if task.get_name() == POLLER_TASK} | set(hub.tasks)
    return sorted(task.get_name() for task in mine if not task.done())


async def test_a_stop_during_the_migration_starts_no_pull_connector_and_leaves_nothing_running(
    tmp_path: Path, database_url: str, shop: FakeShop
) -> None:
    raw = {
        "data_dir": str(tmp_path / "data"),
        "database_url": database_url,
        "http_port": 0,
        "connectors": [poller(shop)],
    }
    hub = Hub(config_from_dict(raw, env={}))
    stopping: asyncio.Task[None] | None = None
    try:
        async with migration_lock_held(database_url):
            await hub.start()  # serving HTTP; the store side waits for the migration lock
            assert not hub.store_ready and hub.connector_stops == []
            stopping = asyncio.create_task(hub.stop())

            async def stop_waits_for_the_store_side() -> bool:
                # HTTP closed: the stop has gone past the connectors it had and waits for the store side
                return hub.runner is not None and hub.runner.server is None

            await wait_for(stop_waits_for_the_store_side, what="the stop to close HTTP and wait for the store side")
        await asyncio.wait_for(asyncio.shield(stopping), 30)
        left = _running(hub)
        assert left == [], f"still running after the stop returned: {left}"
        assert shop.requests == [], "the poller asked the shop after the stop had begun"
        assert hub.connector_stops == [] and hub.consumer is None and hub.relay is None
    finally:
        if stopping is None:
            await hub.stop()
        else:
            await asyncio.gather(stopping, return_exceptions=True)
        leftovers = [t for t in asyncio.all_tasks() if t.get_name() == POLLER_TASK] + hub.tasks
        for task in leftovers:  # on a failure, not left to the next test
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)


class SlowStartingConnector:
    """A pull connector whose start awaits (a login, a first read) before its work runs: `running` until stopped."""

    def __init__(self) -> None:
        self.starting = asyncio.Event()
        self.may_finish_starting = asyncio.Event()
        self.running = False

    async def start(self) -> Stop:
        self.starting.set()
        await self.may_finish_starting.wait()
        self.running = True

        async def stop() -> None:
            self.running = False

        return stop


@pytest.mark.store_independent  # the stop's order; the test above holds each store's lock
async def test_a_connector_whose_start_the_stop_overtakes_is_stopped(tmp_path: Path, database_url: str) -> None:
    """The stop went over the connectors already started while one was still starting; that one ran on."""
    raw = {"data_dir": str(tmp_path / "data"), "database_url": database_url, "http_port": 0}
    hub = Hub(config_from_dict(raw, env={}))
    slow = SlowStartingConnector()
    stopping: asyncio.Task[None] | None = None
    try:
        async with migration_lock_held(database_url):
            await hub.start()
            hub.connectors["slow-pull"] = slow  # built with the others, started by the store side after them
        await wait_for(_is_set(slow.starting), timeout=20, what="the store side to start the slow connector")
        stopping = asyncio.create_task(hub.stop())

        async def stop_waits_for_the_store_side() -> bool:
            return hub.runner is not None and hub.runner.server is None

        await wait_for(stop_waits_for_the_store_side, what="the stop to close HTTP and wait for the store side")
        slow.may_finish_starting.set()
        await asyncio.wait_for(asyncio.shield(stopping), 30)
        assert not slow.running, "a connector started during the stop runs on after it"
        assert hub.connector_stops == []
    finally:
        slow.may_finish_starting.set()
        await (hub.stop() if stopping is None else asyncio.gather(stopping, return_exceptions=True))


def _is_set(event: asyncio.Event) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return event.is_set()

    return probe
