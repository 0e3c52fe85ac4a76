"""The embedded NATS admits only clients with the daemon's token: another local user on a shared host could otherwise
publish forged inquiries past every webhook's signature check, or read the raw payloads off the streams."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest

from leadhub.hub.embedded_nats import EmbeddedNats
from tests.helpers import free_port


async def _refused(url: str) -> bool:
    """Whether the server turns a client with these credentials away (nats-py: an authorization error, no retry)."""
    try:
        client = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2)
    except nats.errors.Error as exc:
        return "authorization violation" in str(exc).lower()
    await client.close()
    return False


async def test_a_client_without_the_token_is_refused_and_the_url_with_it_connects(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path, port=free_port())
    url = await server.start()
    try:
        assert url == f"nats://{server.token}@127.0.0.1:{server.port}"
        assert (tmp_path / "nats" / "client.url").read_text().strip() == url  # for the operator's `nats` CLI
        assert await _refused(f"nats://127.0.0.1:{server.port}")
        assert await _refused(f"nats://not-{server.token}@127.0.0.1:{server.port}")
        client = await nats.connect(url, allow_reconnect=False)
        try:
            await client.publish("anything", b"x")
            await client.flush(timeout=2)
        finally:
            await client.close()
    finally:
        await server.stop()
    assert not (tmp_path / "nats" / "client.url").exists()


async def test_each_server_gets_its_own_token_and_a_restart_on_its_port_keeps_it(tmp_path: Path) -> None:
    first, second = EmbeddedNats(tmp_path / "a"), EmbeddedNats(tmp_path / "b")
    assert first.token != second.token and len(first.token) >= 40
    url = await first.start()
    try:
        await first.stop()
        assert await first.start() == url  # the watcher's relaunch and a test's outage: clients keep their URL
    finally:
        await first.stop()


@pytest.mark.slow
@pytest.mark.store_independent  # the NATS token, not the store
async def test_the_daemon_logs_its_nats_url_without_the_token(make_daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data_dir = tmp_path / "data"
    daemon = make_daemon({"connectors": []}, env={"LEADHUB_DATA_DIR": str(data_dir)})
    await daemon.start()
    url = (data_dir / "nats" / "client.url").read_text().strip()
    token = url.split("//", 1)[1].split("@", 1)[0]
    assert await daemon.terminate() == 0, daemon.log()
    log = daemon.log_path.read_text(errors="replace")
    assert "embedded NATS started" in log and "127.0.0.1" in log
    assert token not in log
