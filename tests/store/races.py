"""Make concurrent intake transactions really overlap: each worker's first try waits for the others at a barrier."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from leadhub.store import identity, intake


def meet_on_first_try(monkeypatch: pytest.MonkeyPatch, dialect: str, parties: int) -> None:
    """Hold every worker's first transaction until all have begun, and on PostgreSQL until all have read which
    identifiers are known: each then believes the person is new, so they really race to insert them.

    SQLite's write lock is taken before those reads, so there the workers meet just before taking it.
    """
    started, read = asyncio.Barrier(parties), asyncio.Barrier(parties)
    lock_for_writing, known_identifiers = intake.lock_for_writing, identity.known_identifiers
    passed: set[int] = set()

    async def meet_then_lock(conn: AsyncConnection) -> None:
        if id(asyncio.current_task()) not in passed:
            await started.wait()
        await lock_for_writing(conn)

    async def read_then_meet(conn: AsyncConnection, idents: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
        found = await known_identifiers(conn, idents)
        if id(asyncio.current_task()) not in passed:
            passed.add(id(asyncio.current_task()))
            if dialect == "postgresql":
                await read.wait()
        return found

    monkeypatch.setattr(intake, "lock_for_writing", meet_then_lock)
    monkeypatch.setattr(identity, "known_identifiers", read_then_meet)
