"""`leadhub run` and its children under signals and kills: one daemon per data dir, an embedded NATS that
dies is started again, a terminal's Ctrl-C stops the server last, SIGHUP stops cleanly, SIGUSR1 does nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import wait_for
from tests.hub.test_workers import _alive, _all_inquiries, _exactly_once, _post_until_accepted, _workers_serving

# Signals, ports, the data dir's lock and the NATS child: nothing here depends on the store.
pytestmark = [pytest.mark.slow, pytest.mark.store_independent]
FORM = {"name": "site-form", "type": "form", "rate_limit": None}


def _nats_pid(daemon: Any) -> int:
    return int((Path(daemon.env["LEADHUB_DATA_DIR"]) / "nats" / "nats-server.pid").read_text())


async def _post(daemon: Any, accepted: dict[int, str], numbers: range) -> None:
    url = daemon.base_url + "/hooks/site-form"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        await asyncio.gather(*(_post_until_accepted(session, url, i, accepted) for i in numbers))


async def _serving(daemon: Any, workers: int) -> bool:
    try:
        return await _workers_serving(daemon.base_url, workers)
    except aiohttp.ClientError:  # not listening yet
        return False


async def _exited(process: subprocess.Popen[bytes]) -> bool:
    return process.poll() is not None


async def test_a_second_daemon_on_the_same_data_dir_refuses_and_leaves_the_first_alone(make_daemon) -> None:  # type: ignore[no-untyped-def]
    first = make_daemon({"connectors": [FORM]})
    await first.start()
    nats_pid = _nats_pid(first)
    second = make_daemon({"connectors": [FORM]}, env={"LEADHUB_DATA_DIR": first.env["LEADHUB_DATA_DIR"]})
    await second.start(wait_ready=False)
    await wait_for(lambda: _exited(second.process), timeout=30, what="the second daemon to give up")
    assert second.process.returncode == 1, second.log()
    assert "is in use by another leadhub" in second.log(), second.log()
    assert "Traceback" not in second.log()

    assert _alive(nats_pid), "the second daemon stopped the first one's NATS as if it were a leftover"
    accepted: dict[int, str] = {}
    await _post(first, accepted, range(5))
    assert await first.terminate() == 0, first.log()


async def test_a_killed_embedded_nats_is_started_again_and_nothing_is_lost(make_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon({"connectors": [FORM], "workers": 2, "pipeline_batch_size": 20})
    await daemon.start()
    await wait_for(lambda: _workers_serving(daemon.base_url, 1), timeout=30, what="worker 1 serving")
    accepted: dict[int, str] = {}
    await _post(daemon, accepted, range(50))
    killed = _nats_pid(daemon)
    os.kill(killed, signal.SIGKILL)

    async def replaced() -> bool:
        try:
            pid = _nats_pid(daemon)
        except FileNotFoundError:  # the dead server's pid file is gone until the new one starts
            return False
        return pid != killed and _alive(pid) and await _workers_serving(daemon.base_url, 1)

    await wait_for(replaced, timeout=30, what="a new embedded NATS and every process ready again")
    await _post(daemon, accepted, range(50, 100))  # the primary and its worker reconnected to the same URL
    items = await wait_for(lambda: _all_inquiries(daemon.base_url, 100), timeout=40, what="100 inquiries stored")
    _exactly_once(items, accepted)
    assert "embedded NATS exited; starting it again" in daemon.log()
    new_pid = _nats_pid(daemon)
    assert await daemon.terminate() == 0, daemon.log()
    assert not _alive(new_pid), "the restarted NATS must stop with the daemon"


async def test_ctrl_c_stops_the_daemon_and_its_workers_before_the_embedded_nats(make_daemon) -> None:  # type: ignore[no-untyped-def]
    """A terminal's Ctrl-C sends SIGINT to the whole foreground process group, not just the daemon."""
    daemon = make_daemon({"connectors": [FORM], "workers": 2})
    log = open(daemon.log_path, "ab")  # noqa: SIM115 - handed to the child
    daemon.process = subprocess.Popen(
        [sys.executable, "-m", "leadhub.hub", "run", "--config", str(daemon.config_file)],
        env=daemon.env,
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )
    log.close()
    await wait_for(lambda: _serving(daemon, 1), timeout=30, what="worker 1 serving")
    accepted: dict[int, str] = {}
    await _post(daemon, accepted, range(20))
    nats_pid = _nats_pid(daemon)

    os.killpg(daemon.process.pid, signal.SIGINT)
    assert await asyncio.to_thread(daemon.process.wait, 15) == 0, daemon.log()
    assert "NATS connection error" not in daemon.log(), "the embedded NATS stopped before the daemon was done with it"
    await wait_for(lambda: asyncio.to_thread(lambda: not _alive(nats_pid)), timeout=10, what="the NATS child to stop")


async def test_sighup_stops_cleanly_and_sigusr1_is_ignored(make_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon({"connectors": [FORM]})
    await daemon.start()
    nats_pid = _nats_pid(daemon)
    daemon.process.send_signal(signal.SIGUSR1)
    await wait_for(lambda: asyncio.sleep(0, "signal ignored" in daemon.log()), timeout=10, what="SIGUSR1 logged")
    assert daemon.process.poll() is None, daemon.log()
    accepted: dict[int, str] = {}
    await _post(daemon, accepted, range(3))

    daemon.process.send_signal(signal.SIGHUP)  # the terminal closed, or `kill -HUP` out of habit
    assert await asyncio.to_thread(daemon.process.wait, 15) == 0, daemon.log()
    assert "stopped" in daemon.log()
    assert not _alive(nats_pid)


async def test_a_second_daemon_with_workers_on_a_taken_port_refuses(make_daemon) -> None:  # type: ignore[no-untyped-def]
    """Workers share the port by SO_REUSEPORT; another leadhub with workers must not join the first one's port."""
    first = make_daemon({"connectors": [FORM], "workers": 2})
    await first.start()
    await wait_for(lambda: _serving(first, 1), timeout=30, what="worker 1 serving")
    second = make_daemon({"connectors": [FORM], "workers": 2}, env={"LEADHUB_HTTP_PORT": str(first.port)})
    await second.start(wait_ready=False)
    await wait_for(lambda: _exited(second.process), timeout=30, what="the second daemon to give up")
    assert second.process.returncode == 1, second.log()
    assert "cannot start" in second.log() and "address already in use" in second.log().lower(), second.log()
    assert "HTTP serving" not in second.log()
    assert await first.terminate() == 0, first.log()


async def test_a_client_trickling_a_body_holds_the_stop_for_half_the_timeout_only(make_daemon) -> None:  # type: ignore[no-untyped-def]
    """HTTP waited the whole LEADHUB_SHUTDOWN_TIMEOUT for such a client and the work behind it half again:
    with the default 8 s that was past the 10 s `docker stop` gives before SIGKILL."""
    daemon = make_daemon({"connectors": [FORM]}, env={"LEADHUB_SHUTDOWN_TIMEOUT": "4"})
    await daemon.start()
    _reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
    writer.write(b"POST /hooks/site-form HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100000\r\n\r\n{")  # fmt: skip
    await writer.drain()
    daemon.process.send_signal(signal.SIGTERM)
    trickling = asyncio.create_task(_trickle(writer, daemon.process))
    assert await asyncio.to_thread(daemon.process.wait, 30) == 0, daemon.log()
    trickling.cancel()
    writer.close()
    stopped = next(line for line in daemon.log().splitlines() if "stopped" in line and "http=" in line)
    http_seconds = float(stopped.split("http=", 1)[1].split()[0])
    assert http_seconds < 3, stopped  # half of 4 s, not all of it


async def _trickle(writer: asyncio.StreamWriter, process: subprocess.Popen[bytes]) -> None:
    while process.poll() is None:
        try:
            writer.write(b" ")
            await writer.drain()
        except (ConnectionError, OSError):
            return
        await asyncio.sleep(0.5)  # noqa: sleep-ok - a slow client's pace, not a wait for a condition


async def test_an_address_it_cannot_listen_on_is_named_with_its_setting(make_daemon) -> None:  # type: ignore[no-untyped-def]
    """An address not on this machine (or a host that does not resolve) said only "cannot start: [Errno 99] Cannot
    assign requested address" (or "Name or service not known"), naming neither the address nor the setting."""
    daemon = make_daemon({"connectors": [FORM]}, env={"LEADHUB_HTTP_HOST": "192.0.2.1"})  # TEST-NET-1: nobody's
    await daemon.start(wait_ready=False)
    await wait_for(lambda: _exited(daemon.process), timeout=30, what="the daemon to give up")
    assert daemon.process.returncode == 1, daemon.log()
    assert "cannot start: cannot listen on 192.0.2.1:" in daemon.log() and "(http_host, http_port)" in daemon.log()


async def test_a_taken_port_is_refused_before_the_data_dir_is_made(make_daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A `run` whose port another program held failed with "cannot listen on" only after it had made its data dir,
    started the embedded NATS in it and opened (on SQLite, created) the database: a mistyped port left a new
    data dir behind. The port is tried first now."""
    data_dir = tmp_path / "fresh-data"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {
            "LEADHUB_HTTP_PORT": str(port),
            "LEADHUB_DATA_DIR": str(data_dir),
            "LEADHUB_DATABASE_URL": f"sqlite+aiosqlite:///{data_dir / 'leadhub.db'}",
        }
        daemon = make_daemon({"connectors": [FORM]}, env=env)
        await daemon.start(wait_ready=False)
        await wait_for(lambda: _exited(daemon.process), timeout=30, what="the daemon to give up")
    assert daemon.process.returncode == 1, daemon.log()
    assert f"cannot start: cannot listen on 127.0.0.1:{port} (http_host, http_port)" in daemon.log(), daemon.log()
    assert not data_dir.exists(), sorted(p.name for p in data_dir.iterdir())
