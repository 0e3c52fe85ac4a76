"""Leases so that one replica at a time does a singleton job (e.g. polls one IMAP mailbox).

PostgreSQL: a session advisory lock held on a dedicated connection; it is released when that connection ends, so
a replica that dies frees the lease at once. SQLite is one process by construction, so the lease always succeeds.
"""

from __future__ import annotations

import asyncio
import hashlib

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = structlog.get_logger("leadhub.store.leases")
CHECK_TIMEOUT = 5.0


def lock_id(name: str) -> int:
    """A stable signed 64-bit id for `name` (advisory locks are keyed by bigint)."""
    return int.from_bytes(hashlib.sha256(f"leadhub:lease:{name}".encode()).digest()[:8], "big", signed=True)


class Lease:
    """A held lease; `alive()` says whether it is still held, `release()` gives it up."""

    def __init__(self, name: str, connection: AsyncConnection | None) -> None:
        self.name = name
        self._connection = connection

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
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id(self.name)})
        except Exception as exc:  # closing the connection below releases the lock as well
            log.debug("advisory unlock failed; closing the connection releases it", lease=self.name, error=repr(exc))
        finally:
            await connection.close()


async def try_lease(engine: AsyncEngine, name: str) -> Lease | None:
    """Take the lease `name` if no other process holds it; None if one does."""
    if engine.dialect.name != "postgresql":
        return Lease(name, None)
    connection = await engine.connect()
    try:
        connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        got = (await connection.execute(text("SELECT pg_try_advisory_lock(:id)"), {"id": lock_id(name)})).scalar()
    except BaseException:
        await connection.close()
        raise
    if not got:
        await connection.close()
        return None
    return Lease(name, connection)
