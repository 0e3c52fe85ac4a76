"""`leadhub_connector_failures_total{connector, reason}`: a pull connector's failed attempts on /metrics, by why they
failed, so an admin can tell a refused password (a person must act) from a server away or leadhub's own queue."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.exc import OperationalError

from leadhub.connectors.failure_reason import FAILURE_REASONS, failure_reason
from leadhub.connectors.imap_session import AuthFailed
from leadhub.connectors.woocommerce_api import PollError
from leadhub.hub.embedded_nats import EmbeddedNats
from leadhub.queue_errors import QueueBusy, QueueUnavailable
from tests.conftest import HubFactory, RunningHub
from tests.connectors.woo_shop import FakeShop, poller, shop_fixture  # noqa: F401 - the `shop` fixture
from tests.helpers import free_port, wait_for
from tests.imap_server import Dovecot, make_mail, running_dovecot


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with running_dovecot() as server:
        yield server


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (AuthFailed("the server refused the password"), "auth"),
        (PollError("HTTP 401", status=401), "auth"),
        (PollError("HTTP 403", status=403), "auth"),
        (PollError("HTTP 503", status=503), "source"),
        (PollError("the answer is not JSON"), "source"),
        (QueueBusy("429"), "queue_busy"),
        (QueueUnavailable("no responders"), "queue_unavailable"),
        (OperationalError("SELECT 1", {}, Exception("database is locked")), "store"),
        (ConnectionRefusedError(111, "refused"), "source"),
        (TimeoutError(), "source"),
    ],
)
def test_each_failure_has_its_reason(error: Exception, reason: str) -> None:
    assert failure_reason(error) == reason
    assert reason in FAILURE_REASONS


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
