"""Reused SMTP connections: a handshake per message cost more than the message (about 5x on loopback)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiosmtplib

SIZE = 8  # connections per server at once; more actions wait for one
TIMEOUT = 15.0


class SmtpPool:
    """At most `size` connections per server, kept open between messages; one that failed is dropped, not reused."""

    def __init__(self, size: int = SIZE) -> None:
        self.size = size
        self._idle: dict[tuple[Any, ...], list[aiosmtplib.SMTP]] = {}
        self._slots: dict[tuple[Any, ...], asyncio.Semaphore] = {}
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def connection(self, target: Any) -> AsyncIterator[aiosmtplib.SMTP]:
        key = (target.host, target.port, target.username, target.use_tls, target.start_tls)
        slots = self._slots.setdefault(key, asyncio.Semaphore(self.size))
        async with slots, self._checkout(key, target) as client:
            yield client

    @contextlib.asynccontextmanager
    async def _checkout(self, key: tuple[Any, ...], target: Any) -> AsyncIterator[aiosmtplib.SMTP]:
        async with self._lock:
            idle = self._idle.setdefault(key, [])
            client = idle.pop() if idle else None
        if client is None or not client.is_connected:
            import aiosmtplib  # here, not at module level: a daemon whose rules send no e-mail never loads it

            client = aiosmtplib.SMTP(
                hostname=target.host,
                port=target.port,
                username=target.username,
                password=target.password,
                use_tls=target.use_tls,
                start_tls=target.start_tls,
                timeout=TIMEOUT,
            )
            await client.connect()
        try:
            yield client
        except BaseException:
            with contextlib.suppress(Exception):
                client.close()
            raise
        async with self._lock:
            if len(self._idle[key]) < self.size and client.is_connected:
                self._idle[key].append(client)
                return
        with contextlib.suppress(Exception):
            await client.quit()

    async def close(self) -> None:
        async with self._lock:
            clients = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for client in clients:
            with contextlib.suppress(Exception):
                await client.quit()
