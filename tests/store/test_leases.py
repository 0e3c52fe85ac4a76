"""Leases on PostgreSQL: each holds a connection of its own, outside the store's pool, with TCP keepalives on."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from leadhub.store.db import create_engine
from leadhub.store.leases import KEEPALIVE_SETTINGS, Lease, try_lease
from tests.conftest import PG_ADMIN_URL

pytestmark = pytest.mark.skipif(not PG_ADMIN_URL, reason="leases are PostgreSQL advisory locks (SQLite always grants)")


async def test_held_leases_take_no_connection_from_the_stores_pool(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=2)  # a pool of 4 in all
    leases: list[Lease] = []
    try:
        for i in range(6):  # more held leases (IMAP mailboxes, polled shops) than the pool has connections
            lease = await try_lease(engine, f"mailbox-{i}")
            assert lease is not None
            leases.append(lease)
        async with asyncio.timeout(5), engine.connect() as connection:  # a pool timeout would take 30 s
            assert (await connection.execute(text("SELECT 1"))).scalar() == 1
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        assert all([await lease.alive() for lease in leases])
    finally:
        for lease in leases:
            await lease.release()
        await engine.dispose()


async def test_a_released_lease_can_be_taken_again(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        first = await try_lease(engine, "shop")
        assert first is not None
        assert await try_lease(engine, "shop") is None
        await first.release()
        second = await try_lease(engine, "shop")
        assert second is not None
        await second.release()
    finally:
        await engine.dispose()


async def test_the_lease_session_has_tcp_keepalives_so_a_silent_client_frees_the_lock(database_url: str) -> None:
    engine = create_engine(database_url)
    lease = await try_lease(engine, "mailbox")
    assert lease is not None
    try:
        assert lease._connection is not None
        for setting, value in KEEPALIVE_SETTINGS.items():
            shown = (await lease._connection.execute(text(f"SHOW {setting}"))).scalar()
            assert str(shown).removesuffix("ms") == str(value), setting
    finally:
        await lease.release()
        await engine.dispose()
