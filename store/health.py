"""What /readyz asks the store beyond "does it answer": is the schema still this release's, can a writer get in.

Each answer is one line for operators, or None when all is well. The daemon calls these rarely (hub/store_health.py
caches them): the schema check reads the tables' columns, the lock check waits up to a second for SQLite's write lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.store.db import KNOWN_REVISIONS, MIGRATION_HEADS, newer_schema_message, recorded_revisions
from leadhub.store.models import Base


async def answers(engine: AsyncEngine) -> None:
    """One round trip; raises what the driver raised when the store is away."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def schema_problem(engine: AsyncEngine) -> str | None:
    """A newer release's revision, a revision short of this release's, or a table or column of this release missing."""
    async with engine.connect() as connection:
        applied, tables = await connection.run_sync(_revisions_and_columns)
    heads = ", ".join(sorted(MIGRATION_HEADS))
    if newer := applied - KNOWN_REVISIONS:
        return newer_schema_message(newer)
    if applied != MIGRATION_HEADS:
        shown = ", ".join(sorted(applied)) or "none"
        return f"database schema {shown} is not this release's ({heads}): run `leadhub db upgrade`, then restart"
    missing = sorted(Base.metadata.tables.keys() - tables.keys())
    if missing:
        names = ", ".join(missing)
        return f"table {names} is missing from the database" if len(missing) == 1 else f"tables {names} are missing"
    missing = sorted(
        f"{name}.{column}"
        for name, table in Base.metadata.tables.items()
        for column in {c.name for c in table.columns} - tables[name]
    )
    if missing:
        names = ", ".join(missing)
        return f"column {names} is missing from the database" if len(missing) == 1 else f"columns {names} are missing"
    return None


def _revisions_and_columns(connection: Connection) -> tuple[frozenset[str], dict[str, set[str]]]:
    """The recorded revisions, and each table's column names (one catalog query per kind on PostgreSQL)."""
    columns = inspect(connection).get_multi_columns()
    return recorded_revisions(connection), {table: {c["name"] for c in found} for (_, table), found in columns.items()}


async def sqlite_write_lock_problem(engine: AsyncEngine, wait: float) -> str | None:
    """On SQLite, whether a writer gets the database's write lock within `wait` seconds; None elsewhere.

    Readers never wait in WAL mode, so `SELECT 1` answers while another process (a `sqlite3` shell after
    `BEGIN EXCLUSIVE`, a backup tool) holds the write lock and every write here times out. The probe uses its own
    connection, outside the pool: a pooled one may be busy waiting for that same lock.
    """
    if engine.dialect.name != "sqlite" or not engine.url.database or engine.url.database == ":memory:":
        return None
    path = Path(engine.url.database)
    return await asyncio.to_thread(_try_write_lock, path, wait)


def _try_write_lock(path: Path, wait: float) -> str | None:
    try:
        connection = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=wait, isolation_level=None)
    except sqlite3.Error as exc:
        return f"the SQLite database {path} cannot be opened: {exc}"
    try:
        connection.execute("BEGIN IMMEDIATE")  # takes the write lock, or waits `wait` s for it
        connection.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):
            return f"the SQLite database {path} refused a write transaction: {exc}"
        return (
            f"the SQLite database {path} is write-locked by another connection (not granted within {wait:g} s): "
            "a process holds a write transaction open, e.g. a sqlite3 shell after BEGIN"
        )
    finally:
        connection.close()
    return None
