"""Items larger than the queue's server takes in one message (its `max_payload`, headers included).

nats-server counts a message's headers and payload against `max_payload` and closes the connection of a client
that sends more; nats-py then closes for good. A webhook body just under the limit, pushed over it by the
envelope's headers, cost the whole process its queue (every later webhook 503) until a restart, and a body over
it was answered 503, which a provider retries for days. Both are refused 413 now, and the queue keeps working.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from leadhub.hub.embedded_nats import EmbeddedNats
from tests.conftest import HubFactory
from tests.helpers import free_port

SMALL_PAYLOAD = 64 * 1024


class SmallPayloadNats(EmbeddedNats):
    """The embedded server's config with an external server's smaller `max_payload`."""

    def _config_text(self) -> str:
        return "\n".join(
            f"max_payload: {SMALL_PAYLOAD}" if line.startswith("max_payload:") else line
            for line in super()._config_text().splitlines()
        )


@pytest.fixture
async def small_nats(tmp_path: Path) -> AsyncIterator[SmallPayloadNats]:
    server = SmallPayloadNats(tmp_path / "small-nats", port=free_port())
    await server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            await server.stop()


def _form_body(size: int) -> bytes:
    """A urlencoded form of exactly `size` bytes."""
    head = b"name=Big&email=big%40client.example&message="
    return head + b"a" * (size - len(head))


@pytest.mark.parametrize("size", [SMALL_PAYLOAD - 100, SMALL_PAYLOAD + 100], ids=["over-with-headers", "over"])
async def test_an_item_over_max_payload_is_413_and_the_queue_keeps_working(
    make_hub: HubFactory, small_nats: SmallPayloadNats, size: int
) -> None:
    form = {"name": "site-form", "type": "form", "rate_limit": None, "max_body": "1MiB"}
    hub = await make_hub([form], nats_url=small_nats.url, roles="http")
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    async with await hub.post("/hooks/site-form", data=_form_body(size), headers=form_type) as response:
        answer = await response.json()
        assert response.status == 413, answer
        assert answer["error"] == "too_large" and str(SMALL_PAYLOAD) in answer["detail"]
    assert hub.hub.queue.connected, "the queue's connection is not closed by the server"
    async with await hub.post("/hooks/site-form", data=_form_body(1000), headers=form_type) as response:
        assert response.status == 202, await response.text()
