"""The outbox: domain events waiting to be published, claimed safely when several replicas relay."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Text, cast, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from leadhub.ids import new_id
from leadhub.store.models import OutboxEvent

outbox_t = OutboxEvent.__table__


def outbox_event(kind: str, subject_id: str, now: datetime, **data: Any) -> dict[str, Any]:
    """An outbox row for `insert()`: the event is written in the same transaction as the change it reports."""
    return {
        "id": new_id(),
        "type": kind,
        "subject_id": subject_id,
        "data": data,
        "created_at": now,
        "published_at": None,
    }


async def claim_unpublished(conn: AsyncConnection, limit: int) -> Sequence[Any]:
    """Oldest unpublished events; on PostgreSQL rows another replica holds are skipped."""
    # `data` as its stored JSON text: the relay passes it on without decoding and re-encoding it.
    # A SQL CAST, not type_coerce: asyncpg would otherwise hand back the column already decoded.
    data_text = cast(outbox_t.c.data, Text).label("data_json")
    query = (
        select(outbox_t.c.id, outbox_t.c.type, outbox_t.c.subject_id, data_text, outbox_t.c.created_at)
        .where(outbox_t.c.published_at.is_(None))
        .order_by(outbox_t.c.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return (await conn.execute(query)).all()


async def mark_published(conn: AsyncConnection, ids: Sequence[str], now: datetime) -> None:
    await conn.execute(update(outbox_t).where(outbox_t.c.id.in_(ids)).values(published_at=now))


async def count_unpublished(conn: AsyncConnection) -> int:
    from sqlalchemy import func

    query = select(func.count()).select_from(outbox_t).where(outbox_t.c.published_at.is_(None))
    return int((await conn.execute(query)).scalar_one())
