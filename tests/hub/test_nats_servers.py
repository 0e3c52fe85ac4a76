"""`LEADHUB_NATS_URL` with several servers, as README shows it: the queue connects, and no server's token shows."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from leadhub.hub.config import ConfigError, config_from_dict
from leadhub.hub.config_check import describe
from leadhub.hub.embedded_nats import EmbeddedNats
from leadhub.hub.logging import redact_text
from leadhub.hub.queue import Queue


async def test_a_list_of_servers_connects_and_is_logged_without_their_tokens(external_nats: EmbeddedNats) -> None:
    """nats-py takes a list, not a comma-separated text: the README's `nats://n1:4222,nats://n2:4222` failed each
    connect with "nats: invalid connect url option" and the daemon retried forever, serving nothing."""
    url = external_nats.url
    assert url is not None
    listed = f"{url}, {url.removeprefix('nats://')}"  # the second without its scheme, as the check allows
    config_from_dict({}, env={"LEADHUB_NATS_URL": listed})
    queue = Queue(listed)
    with capture_logs() as logs:
        await asyncio.wait_for(queue.start(), 10)
    try:
        assert await queue.ping()
    finally:
        await queue.stop()
    [connected] = [entry for entry in logs if entry["event"] == "queue connected"]
    assert external_nats.token not in redact_text(connected["url"])


def test_config_check_shows_a_list_of_servers_without_their_tokens() -> None:
    listed = "nats://n1:4222, s3cr3t-token@n2:4222,user:hunter2@n3"
    lines = describe(config_from_dict({}, env={"LEADHUB_NATS_URL": listed}), {}).lines
    [queue] = [line for line in lines if line.startswith("  queue")]
    assert "s3cr3t-token" not in queue and "hunter2" not in queue, queue
    assert queue == "  queue       nats://n1:4222, nats://***@n2:4222, nats://user:***@n3"


def test_websocket_and_nats_servers_together_are_refused() -> None:
    """nats-py refuses the mix at every connect: the daemon would retry forever."""
    with pytest.raises(ConfigError) as caught:
        config_from_dict({}, env={"LEADHUB_NATS_URL": "nats://n1:4222,wss://n2:443"})
    assert caught.value.problems == [
        "environment LEADHUB_NATS_URL: nats_url: nats:// or tls:// servers cannot be listed with ws:// or wss:// "
        "ones; give one kind"
    ]
