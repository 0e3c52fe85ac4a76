"""Fixtures the connector tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from leadhub.hub import embedded_nats
from leadhub.hub.embedded_nats import EmbeddedNats
from tests.helpers import free_port


@pytest.fixture
async def stock_nats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[EmbeddedNats]:
    """An external NATS with nats-server's default max_payload of 1 MB (docker-compose.yml runs it so)."""
    monkeypatch.setattr(embedded_nats, "MAX_PAYLOAD", 1024 * 1024)
    server = EmbeddedNats(tmp_path / "stock-nats", port=free_port())
    await server.start()
    yield server
    await server.stop()
