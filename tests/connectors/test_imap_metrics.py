"""A mailbox's liveness reaches /metrics: ok, last sync time, messages not yet published."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.conftest import HubFactory
from tests.helpers import wait_for
from tests.imap_server import Dovecot, make_mail, running_dovecot


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with running_dovecot() as server:
        yield server


async def test_mailbox_liveness_is_exported_as_metrics(make_hub: HubFactory, dovecot: Dovecot) -> None:
    dovecot.append([make_mail(1), make_mail(2)])
    hub = await make_hub([dovecot.connector()])
    await hub.wait_items("/api/leads", 2)

    async def exported() -> str | None:
        async with hub.session.get(hub.url("/metrics")) as response:
            text = await response.text()
        return text if 'leadhub_connector_ok{connector="inbox"} 1.0' in text else None

    text = await wait_for(exported, what="the mailbox's metrics")
    last_sync = re.search(r'^leadhub_connector_last_sync_timestamp_seconds\{connector="inbox"\} (\S+)$', text, re.M)
    assert last_sync and float(last_sync.group(1)) > 1.7e9
    assert 'leadhub_connector_uid_lag{connector="inbox"} 0.0' in text
