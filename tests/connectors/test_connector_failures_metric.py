"""`leadhub_connector_failures_total{connector, reason}`: a pull connector's failed attempts on /metrics, by why they
failed, so an admin can tell a refused password (a person must act) from a server away or leadhub's own queue.

A store that hangs or cannot be reached fails a checkpoint call with a TimeoutError or asyncpg's OSError, which
by type look like the mail server's or the shop's: they must still count as `store`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from leadhub.connectors.base import ConnectorContext
from leadhub.connectors.failure_reason import FAILURE_REASONS, StoreFailed, failure_reason, in_store
from leadhub.connectors.imap_session import AuthFailed
from leadhub.connectors.woocommerce_api import KeyRefused, PollError
from leadhub.connectors.woocommerce_poll import WooCommercePollConfig, WooCommercePollConnector
from leadhub.hub.embedded_nats import EmbeddedNats
from leadhub.queue_errors import ItemTooLarge, QueueBusy, QueueUnavailable
from leadhub.store.db import create_engine
from tests.conftest import HubFactory, RunningHub
from tests.connectors.woo_shop import FakeShop, poller, shop_fixture  # noqa: F401 - the `shop` fixture
from tests.helpers import free_port, wait_for
from tests.imap_server import Dovecot, make_mail, running_dovecot
from tests.pg_leases import end_lease_connections


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with running_dovecot() as server:
        yield server


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (AuthFailed("the server refused the password"), "auth"),
        (KeyRefused("HTTP 401", status=401), "auth"),
        (KeyRefused("HTTP 403", status=403), "auth"),
        (PollError("HTTP 503", status=503), "source"),
        (PollError("the answer is not JSON"), "source"),
        (QueueBusy("429"), "queue_busy"),
        (QueueUnavailable("no responders"), "queue_unavailable"),
        (ItemTooLarge(2_000_000, 1_048_576), "queue_unavailable"),  # leadhub's NATS limit, not the mailbox's
        (OperationalError("SELECT 1", {}, Exception("database is locked")), "store"),
        (StoreFailed("ConnectionRefusedError: [Errno 111] Connection refused"), "store"),
        (ConnectionRefusedError(111, "refused"), "source"),
        (TimeoutError(), "source"),
    ],
)
def test_each_failure_has_its_reason(error: Exception, reason: str) -> None:
    assert failure_reason(error) == reason
    assert reason in FAILURE_REASONS


def test_whatever_fails_in_a_store_call_is_the_store() -> None:
    async def failed(error: Exception) -> BaseException:
        with pytest.raises(StoreFailed) as caught:
            async with in_store():
                raise error
        return caught.value

    for error in (ConnectionRefusedError(111, "refused"), TimeoutError()):
        failure = asyncio.run(failed(error))
        assert failure_reason(failure) == "store" and failure.__cause__ is error


async def _failures(hub: RunningHub, connector: str) -> dict[str, float]:
    async with hub.session.get(hub.url("/metrics")) as response:
        text = await response.text()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(f'leadhub_connector_failures_total{{connector="{connector}",'):
            labels, value = line.rsplit(" ", 1)
            found[labels.split('reason="', 1)[1].split('"', 1)[0]] = float(value)
    return found


async def _counted(hub: RunningHub, connector: str, reason: str) -> dict[str, float]:
    async def probe() -> dict[str, float] | None:
        found = await _failures(hub, connector)
        return found if found.get(reason, 0) >= 1 else None

    return await wait_for(probe, timeout=20, what=f"a {reason} failure of {connector} on /metrics")


async def test_a_refused_imap_password_counts_as_auth(make_hub: HubFactory, dovecot: Dovecot) -> None:
    hub = await make_hub([dovecot.connector(password="wrong")])
    found = await _counted(hub, "inbox", "auth")
    assert set(found) == set(FAILURE_REASONS), "every reason shows, at 0 until it happens"
    assert found["source"] == found["store"] == found["queue_unavailable"] == 0, found


async def test_an_imap_server_away_counts_as_source(make_hub: HubFactory, dovecot: Dovecot) -> None:
    hub = await make_hub([dovecot.connector(port=free_port())])  # nothing listens there
    found = await _counted(hub, "inbox", "source")
    assert found["auth"] == 0, found


async def test_mail_arriving_while_nats_is_away_counts_as_queue_unavailable(
    make_hub: HubFactory, dovecot: Dovecot, external_nats: EmbeddedNats
) -> None:
    dovecot.append([make_mail(1)])
    hub = await make_hub([dovecot.connector()], nats_url=external_nats.url)
    await hub.wait_items("/api/leads", 1)
    await external_nats.stop()
    dovecot.append([make_mail(2)])
    found = await _counted(hub, "inbox", "queue_unavailable")
    assert found["auth"] == found["source"] == 0, found


async def test_a_shop_refusing_the_key_counts_as_auth_and_a_failing_shop_as_source(
    make_hub: HubFactory, shop: FakeShop
) -> None:
    shop.refuse_always = (401, {})
    hub = await make_hub([poller(shop, interval="100ms")])
    found = await _counted(hub, "woo-pull", "auth")
    assert found["source"] == 0, found
    shop.refuse_always = (503, {})
    await _counted(hub, "woo-pull", "source")


async def test_every_reason_shows_at_0_before_the_first_attempt_ends(make_hub: HubFactory, shop: FakeShop) -> None:
    """Prometheus takes a series' first sample as its start: one born at 1 hides its first failure from increase()."""
    shop.hang = asyncio.Event()  # the first poll never ends, so the poller reports nothing
    hub = await make_hub([poller(shop)])

    async def zeros() -> dict[str, float] | None:
        found = await _failures(hub, "woo-pull")
        return found if shop.requests and found else None

    found = await wait_for(zeros, what="the poller's reasons on /metrics while its first poll hangs")
    assert found == dict.fromkeys(FAILURE_REASONS, 0.0)


@contextlib.asynccontextmanager
async def checkpoint_table_locked(hub: RunningHub) -> AsyncIterator[None]:
    """Another client holds an exclusive lock on connector_state: checkpoint reads hang until the connector's
    `timeout` ends them."""
    async with hub.engine.connect() as conn:
        await conn.execute(text("LOCK TABLE connector_state IN ACCESS EXCLUSIVE MODE"))
        try:
            yield
        finally:
            await conn.rollback()


async def test_a_hung_checkpoint_store_counts_as_store_not_source(make_hub: HubFactory, dovecot: Dovecot) -> None:
    """PostgreSQL only: on SQLite a held lock ends in its busy timeout's OperationalError, a `store` already (and a
    `timeout` under that busy timeout makes the checkpoint race the pipeline's own writes)."""
    hub = await make_hub([dovecot.connector(timeout="2s", poll_interval="1s")])
    if hub.engine.url.get_backend_name() != "postgresql":
        pytest.skip("a lock that hangs reads needs PostgreSQL (LEADHUB_TEST_DATABASE_URL)")
    dovecot.append([make_mail(1)])
    await hub.wait_items("/api/inquiries", 1)
    async with checkpoint_table_locked(hub):
        dovecot.append([make_mail(2)])  # the next sync's checkpoint read waits for the lock until `timeout`
        found = await _counted(hub, "inbox", "store")
    assert found["source"] == found["auth"] == 0, found


async def test_a_poll_with_the_store_unreachable_fails_as_store() -> None:
    """PostgreSQL away: asyncpg's ConnectionRefusedError comes unwrapped by SQLAlchemy."""
    engine = create_engine(f"postgresql+asyncpg://leadhub@127.0.0.1:{free_port()}/leadhub")  # nothing listens
    config = WooCommercePollConfig.model_validate(
        {"name": "woo-pull", "url": "http://127.0.0.1:1", "consumer_key": "ck", "consumer_secret": "cs"}
    )
    connector = WooCommercePollConnector(config, ConnectorContext(publish=_no_publish, engine=engine))
    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(Exception) as caught:
                await connector.poll_once(session)
    finally:
        await engine.dispose()
    assert failure_reason(caught.value) == "store", repr(caught.value)


async def _no_publish(envelope: object) -> object:
    raise AssertionError("nothing is published before the checkpoint is read")


async def test_a_lost_mailbox_lease_counts_as_store_and_the_mailbox_goes_on(
    make_hub: HubFactory, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL only (SQLite has no lease): the lease's connection ends under a replica that reads the mailbox."""
    monkeypatch.setattr("leadhub.connectors.imap.LEASE_CHECK", 0.2)
    dovecot.append([make_mail(1)])
    hub = await make_hub([dovecot.connector(poll_interval="1s")])
    if hub.engine.url.get_backend_name() != "postgresql":
        pytest.skip("the mailbox lease is a PostgreSQL advisory lock (LEADHUB_TEST_DATABASE_URL)")
    await hub.wait_items("/api/leads", 1)
    assert await end_lease_connections(hub.engine) == 1
    found = await _counted(hub, "inbox", "store")
    assert found["source"] == found["auth"] == 0, found
    dovecot.append([make_mail(2)])  # read once the replica holds the mailbox again
    await hub.wait_items("/api/leads", 2)
    assert len((await hub.api("/api/inquiries"))["items"]) == 2


async def test_a_lost_poller_lease_counts_as_store_and_polling_goes_on(make_hub: HubFactory, shop: FakeShop) -> None:
    hub = await make_hub([poller(shop, interval="100ms")])
    if hub.engine.url.get_backend_name() != "postgresql":
        pytest.skip("the poller's lease is a PostgreSQL advisory lock (LEADHUB_TEST_DATABASE_URL)")

    async def polled(at_least: int) -> bool:
        return len(shop.requests) >= at_least

    await wait_for(lambda: polled(1), what="the first poll")
    assert await end_lease_connections(hub.engine) == 1
    await _counted(hub, "woo-pull", "store")
    before = len(shop.requests)
    await wait_for(lambda: polled(before + 3), what="polls after the lease was taken again")
