"""A real nats-server whose JetStream bounds each stream's ingest queue, as an admin may set it (nats-server 2.11+).

`max_buffered_msgs` caps the messages a stream holds received but not yet stored; a publish beyond it is answered
`429 too many requests` ("IPQ len limit reached"), which the queue raises as QueueBusy. Publishers that send many
messages at once must get through such a server in parts, and must not count a refused message as acknowledged.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from leadhub.hub.embedded_nats import EmbeddedNats
from tests.helpers import free_port


class BoundedIngestNats(EmbeddedNats):
    """The embedded server's config with `max_buffered_msgs: bound` (and room in bytes) under `jetstream {}`."""

    def __init__(self, data_dir: Path, bound: int, port: int | None = None) -> None:
        super().__init__(data_dir, port=port)
        self.bound = bound

    def _config_text(self) -> str:
        limits = f"jetstream {{\n  max_buffered_msgs: {self.bound}\n  max_buffered_size: 64MB\n"
        return super()._config_text().replace("jetstream {\n", limits)


@contextlib.asynccontextmanager
async def bounded_nats(data_dir: Path, bound: int) -> AsyncIterator[BoundedIngestNats]:
    """A running BoundedIngestNats on a free loopback port; stopped on exit."""
    server = BoundedIngestNats(data_dir, bound, port=free_port())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
