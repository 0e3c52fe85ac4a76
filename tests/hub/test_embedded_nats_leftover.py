"""A start stops the server a killed daemon left behind on its data dir, and only that: the pid file can outlive the
child, and its pid be reused by the host's NATS or another leadhub's server."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from leadhub.hub import embedded_nats
from leadhub.hub.embedded_nats import EmbeddedNats, find_binary
from tests.helpers import free_port, wait_for


@pytest.fixture
def launched() -> Iterator[list[subprocess.Popen[bytes]]]:
    """nats-servers a test starts itself; killed at its end if still running."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


def _launch(launched: list[subprocess.Popen[bytes]], *args: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([find_binary(), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    launched.append(process)
    return process


async def _exited(process: subprocess.Popen[bytes]) -> bool:
    return process.poll() is not None


async def _listening(port: int) -> bool:
    """The server runs (its command line is readable only once its start is under way)."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


async def test_an_unrelated_nats_server_with_the_pid_in_the_pid_file_is_left_alone(
    tmp_path: Path, launched: list[subprocess.Popen[bytes]]
) -> None:
    """The host's NATS (no config of ours) and another leadhub's embedded server, each holding the pid a killed
    daemon's child had: both ran a nats-server, and the start stopped them with SIGTERM."""
    port = free_port()
    host = _launch(launched, "-a", "127.0.0.1", "-p", str(port))
    await wait_for(lambda: _listening(port), timeout=10, what="the host's nats-server to listen")
    other = EmbeddedNats(tmp_path / "other")
    await other.start()
    try:
        assert other.process is not None
        for unrelated in (host.pid, other.process.pid):
            server = EmbeddedNats(tmp_path / "mine")
            server.root.mkdir(parents=True, exist_ok=True)
            server.pid_file.write_text(str(unrelated))
            await server.start()
            try:
                assert server.process is not None
                assert int(server.pid_file.read_text()) == server.process.pid
            finally:
                await server.stop()
            assert not server.pid_file.exists()
        assert host.poll() is None, "the host's nats-server was stopped as a leftover"
        assert other.process.returncode is None, "another leadhub's nats-server was stopped as a leftover"
    finally:
        await other.stop()


async def test_a_server_left_over_on_this_data_dir_is_stopped(
    tmp_path: Path, launched: list[subprocess.Popen[bytes]]
) -> None:
    """A nats-server given this data dir's config that no daemon owns (its daemon killed before the child could be
    tied to it): stopped, so the new one can take its store."""
    server = EmbeddedNats(tmp_path)
    server.ports_dir.mkdir(parents=True)
    server.config_file.write_text(server._config_text())
    leftover = _launch(launched, "-c", str(server.config_file))

    async def serving() -> bool:
        return any(server.ports_dir.glob("*.ports"))

    await wait_for(serving, timeout=10, what="the leftover server to report its port")
    server.pid_file.write_text(str(leftover.pid))
    await server.start()
    try:
        await wait_for(lambda: _exited(leftover), timeout=10, what="the leftover server to stop")
        assert server.process is not None and server.process.returncode is None
    finally:
        await server.stop()


async def test_the_pid_file_goes_once_the_server_is_dead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that died under the daemon leaves no pid behind for a later start to take for its own."""
    monkeypatch.setattr(embedded_nats, "RESTART_DELAY", 60.0)  # the dead server is not started again in the test
    server = EmbeddedNats(tmp_path)
    await server.start()
    try:
        assert server.process is not None and server.pid_file.exists()
        server.process.kill()

        async def forgotten() -> bool:
            return not server.pid_file.exists()

        await wait_for(forgotten, timeout=10, what="the pid file of the dead server removed")
    finally:
        await server.stop()
