"""Leases so that one replica at a time does a singleton job (e.g. polls one IMAP mailbox).

PostgreSQL: a session advisory lock held on a dedicated connection; it is released when that connection ends, so
a replica that dies frees the lease at once. SQLite is one process by construction, so the lease always succeeds.
Each lease connection is opened outside the engine's pool: a held lease must not take one of the few pooled
connections every store call shares. TCP keepalives on the lease session let the server notice a client gone
without a word (a network cut, a host that died) within about 30 s and free the lock, instead of after the
server's default two hours.
"""

from __future__ import annotations

import asyncio
import hashlib

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

log = structlog.get_logger("leadhub.store.leases")
CHECK_TIMEOUT = 5.0
# Server-side, per session (PostgreSQL >= 12, settable by any user): idle 10 s, then 3 probes 5 s apart; unacknowledged
# data gives up after 20 s. A silent client is dropped, and its advisory lock freed, within about 30 s.
KEEPALIVE_SETTINGS = {
    "tcp_keepalives_idle": 10,
    "tcp_keepalives_interval": 5,
    "tcp_keepalives_count": 3,
    "tcp_user_timeout": 20000,
}


def lock_id(name: str) -> int:
    """A stable signed 64-bit id for `name` (advisory locks are keyed by bigint)."""
    return int.from_bytes(hashlib.sha256(f"leadhub:lease:{name}".encode()).digest()[:8], "big", signed=True)


class Lease:
    """A held lease; `alive()` says whether it is still held, `release()` gives it up."""

    def __init__(self, name: str, connection: AsyncConnection | None, engine: AsyncEngine | None = None) -> None:
        self.name = name
        self._connection = connection
        self._engine = engine  # the lease's own poolless engine

    async def alive(self) -> bool:
        if self._connection is None:
            return True
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                held = await self._connection.execute(
                    text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
                )
                return bool(held.scalar())
        except Exception:  # the connection is gone, and with it the lock
            return False

    async def release(self) -> None:
        connection = self._connection
        if connection is None:
            return
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id(self.name)})
        except Exception as exc:  # dropping the connection releases the lock as well
            log.debug("advisory unlock failed; dropping the connection releases it", lease=self.name, error=repr(exc))
            await connection.invalidate()  # its state is unknown: closed hard, never reused
        finally:
            await self.close()

    async def close(self) -> None:
        """End the lease's session (which frees the lock), with no unlock first."""
        connection, self._connection = self._connection, None
        try:
            if connection is not None:
                await connection.close()
        finally:
            if self._engine is not None:
                await self._engine.dispose()


async def try_lease(engine: AsyncEngine, name: str) -> Lease | None:
    """Take the lease `name` if no other process holds it; None if one does."""
    if engine.dialect.name != "postgresql":
        return Lease(name, None)
    lease_engine = create_async_engine(engine.url, poolclass=NullPool, hide_parameters=True)
    try:
        connection = await lease_engine.connect()
    except BaseException:
        await lease_engine.dispose()
        raise
    lease = Lease(name, connection, lease_engine)
    try:
        connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        for setting, value in KEEPALIVE_SETTINGS.items():
            await connection.execute(text(f"SET {setting} = {value}"))
        got = (await connection.execute(text("SELECT pg_try_advisory_lock(:id)"), {"id": lock_id(name)})).scalar()
    except BaseException:
        await lease.close()
        raise
    if not got:
        await lease.close()
        return None
    return lease
