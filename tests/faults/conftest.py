"""Fault fixtures: the database made unreachable while the daemon keeps running."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy.engine import make_url

from tests.tcp_proxy import TcpProxy

# Another process takes SQLite's write lock and keeps it until its stdin closes.
SQLITE_LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


@dataclass
class Outage:
    """Cuts and restores the daemon's database; `hub_url` is the URL the daemon must use."""

    hub_url: str
    proxy: TcpProxy | None = None
    locker: subprocess.Popen[bytes] | None = None

    async def cut(self) -> None:
        if self.proxy is not None:
            await self.proxy.cut()
            return
        database = make_url(self.hub_url).database or ""
        self.locker = subprocess.Popen(
            [sys.executable, "-c", SQLITE_LOCKER, database], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self.locker.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.locker.stdout.readline), 35)
        assert line.strip() == b"locked", line

    def restore(self) -> None:
        if self.proxy is not None:
            self.proxy.restore()
        elif self.locker is not None and self.locker.poll() is None:
            assert self.locker.stdin is not None
            self.locker.stdin.close()
            assert self.locker.wait(10) == 0


@pytest.fixture
async def outage(database_url: str) -> AsyncIterator[Outage]:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        handle = Outage(database_url)
        yield handle
        if handle.locker is not None and handle.locker.poll() is None:
            handle.locker.kill()
            handle.locker.wait(10)
        return
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    yield Outage(url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False), proxy=proxy)
    await proxy.stop()
