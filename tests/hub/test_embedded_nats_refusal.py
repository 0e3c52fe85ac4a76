"""An embedded NATS that cannot start says why: the server's own reason, not only where its log is."""

from __future__ import annotations

from pathlib import Path

import pytest

from leadhub.hub.embedded_nats import EmbeddedNats, EmbeddedNatsError


async def test_a_store_dir_the_server_cannot_use_is_named_with_its_reason(tmp_path: Path) -> None:
    (tmp_path / "nats").mkdir()
    (tmp_path / "nats" / "nats-server.log").write_text("[1] 2026/01/01 [FTL] an older run's failure\n")
    (tmp_path / "nats" / "jetstream").write_text("")  # where the stream store must be a directory
    server = EmbeddedNats(tmp_path)
    with pytest.raises(EmbeddedNatsError) as refused:
        await server.start()
    message = str(refused.value)
    assert "storage directory is not a directory" in message
    assert "older run" not in message, "only this start's reason"
    assert str(tmp_path / "nats" / "nats-server.log") in message
