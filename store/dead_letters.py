"""Dead letters: items that could not be processed, kept whole with their reason until replayed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from leadhub.ids import new_id
from leadhub.store.models import DeadLetter
from leadhub.store.queries import Page, _page

dead_t = DeadLetter.__table__


async def add(
    conn: AsyncConnection,
    *,
    source: str,
    subject: str,
    key: str | None,
    reason: str,
    error: str | None,
    deliveries: int,
    headers: dict[str, Any],
    payload: bytes,
    now: datetime,
    queue_message: str | None = None,
) -> str:
    dead_id = new_id()
    await conn.execute(
        dead_t.insert().values(
            id=dead_id,
            source=_fitted("source", source),
            subject=_fitted("subject", subject),
            key=_fitted("key", key),
            reason=reason.replace("\x00", ""),
            error=_fitted("error", error),
            deliveries=deliveries,
            headers=headers,
            payload=payload,
            created_at=now,
            replays=0,
            queue_message=queue_message,
        )
    )
    return dead_id


async def recorded_from(
    conn: AsyncConnection, queue_message: str, headers: dict[str, Any], payload: bytes
) -> str | None:
    """The dead letter already recorded from this queue message, if any. Its headers and payload must match too: a
    stream created anew (its queue data lost, the database kept) numbers its messages from 1 again."""
    query = select(dead_t.c.id, dead_t.c.headers, dead_t.c.payload).where(dead_t.c.queue_message == queue_message)
    for row in (await conn.execute(query)).all():
        if row.headers == headers and row.payload == payload:
            return str(row.id)
    return None


def _fitted(column: str, value: str | None) -> str | None:
    """Cut to the column's length, without NUL (PostgreSQL refuses it in text): the item's own values never keep its
    dead letter from being written (the full ones are in `headers`)."""
    return value.replace("\x00", "")[: dead_t.c[column].type.length] if value else value


async def list_open(
    conn: AsyncConnection, limit: int = 100, include_resolved: bool = False, *, payloads: bool = False
) -> Sequence[Any]:
    """The oldest dead letters first; without `payloads`, their raw bytes stay in the database (a listing of a
    hundred need not read a hundred e-mails of up to the queue's largest message each)."""
    columns = dead_t.c if payloads else [c for c in dead_t.c if c.name not in ("payload", "headers")]
    query = select(*columns).order_by(dead_t.c.id).limit(limit)
    if not include_resolved:
        query = query.where(dead_t.c.resolved_at.is_(None))
    return (await conn.execute(query)).all()


async def list_page(conn: AsyncConnection, *, resolved: bool | None, cursor: str | None, limit: int) -> Page:
    """Newest first, without payloads and headers (`get` reads one whole); `resolved` None lists both kinds."""
    query = select(*(c for c in dead_t.c if c.name not in ("payload", "headers")))
    if resolved is not None:
        query = query.where(dead_t.c.resolved_at.is_not(None) if resolved else dead_t.c.resolved_at.is_(None))
    return await _page(conn, query, [dead_t.c.id], cursor, limit, scope=("dead_letters", resolved))


async def open_ids(conn: AsyncConnection, after: str | None, limit: int) -> list[str]:
    """The next `limit` unresolved ids after `after` (in id order): a replay walks them page by page, so it never
    holds every payload at once and passes each one once, even those that fail again."""
    query = select(dead_t.c.id).where(dead_t.c.resolved_at.is_(None)).order_by(dead_t.c.id).limit(limit)
    if after is not None:
        query = query.where(dead_t.c.id > after)
    return list((await conn.execute(query)).scalars())


async def get(conn: AsyncConnection, dead_id: str) -> Any | None:
    return (await conn.execute(select(dead_t).where(dead_t.c.id == dead_id))).first()


async def count_open(conn: AsyncConnection) -> int:
    return int(
        (
            await conn.execute(select(func.count()).select_from(dead_t).where(dead_t.c.resolved_at.is_(None)))
        ).scalar_one()
    )


async def reopen(conn: AsyncConnection, dead_id: str, reason: str) -> None:
    """Open a resolved dead letter again: its replay put the item back, and the item failed the same way."""
    values = {"resolved_at": None, "reason": reason.replace("\x00", ""), "deliveries": dead_t.c.deliveries + 1}
    await conn.execute(update(dead_t).where(dead_t.c.id == dead_id).values(**values))


async def record_replay(
    conn: AsyncConnection, dead_id: str, now: datetime, *, resolved: bool, reason: str | None
) -> None:
    values: dict[str, Any] = {"replays": dead_t.c.replays + 1, "replayed_at": now}
    if resolved:
        values["resolved_at"] = now
    elif reason:
        values["reason"] = reason
    await conn.execute(update(dead_t).where(dead_t.c.id == dead_id).values(**values))
