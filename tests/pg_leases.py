"""End the PostgreSQL sessions that hold a hub's leases: a database restart or a network cut, as the lease sees it."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


async def end_lease_connections(engine: AsyncEngine) -> int:
    """Terminate every backend holding an advisory lock in `engine`'s database, never another database's.

    pg_locks lists the whole server: tests running side by side (pytest-xdist) hold leases in their own databases,
    and ending theirs would break them and miscount ours.
    """
    async with engine.connect() as conn:
        ended = await conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory'"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " AND pid <> pg_backend_pid()"
            )
        )
        return int(ended.scalar() or 0)
