"""The outbox: domain events waiting to be published, claimed safely when several replicas relay."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Text, cast, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from leadhub.ids import new_id
from leadhub.store.models import OutboxEvent
from leadhub.store.one_of import one_of

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


# Shares of the outbox by the last character of the event's subject id (ids are 26 characters of these).
SHARE_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
MAX_SHARES = len(SHARE_ALPHABET)


def _in_share(share: int, shares: int) -> ColumnElement[bool]:
    """Rows of one share. Every event of a subject falls in one share, so a subject's events keep their order;
    share 0 takes whatever is in no other (no subject, an id of another shape), so every row is in exactly one."""

    def chars(k: int) -> list[str]:
        return [c for i, c in enumerate(SHARE_ALPHABET) if i % shares == k]

    last = func.substr(outbox_t.c.subject_id, 26, 1)
    if share == 0:
        others = [c for k in range(1, shares) for c in chars(k)]
        return or_(outbox_t.c.subject_id.is_(None), last.not_in(others))
    return last.in_(chars(share))


async def claim_unpublished(conn: AsyncConnection, limit: int, share: tuple[int, int] = (0, 1)) -> Sequence[Any]:
    """Oldest unpublished events of `share` (index, count); on PostgreSQL rows another replica holds are skipped.

    Worker processes each relay their own share (`share=(worker, workers)`), so no two publish the same
    event even on SQLite, which has no SKIP LOCKED.
    """
    # `data` as its stored JSON text: the relay passes it on without decoding and re-encoding it.
    # A SQL CAST, not type_coerce: asyncpg would otherwise hand back the column already decoded.
    data_text = cast(outbox_t.c.data, Text).label("data_json")
    query = (
        select(outbox_t.c.id, outbox_t.c.type, outbox_t.c.subject_id, data_text, outbox_t.c.created_at)
        .where(outbox_t.c.published_at.is_(None))
        .order_by(outbox_t.c.id)
        .limit(limit)
    )
    index, count = share
    if count > 1:
        query = query.where(_in_share(index, count))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return (await conn.execute(query)).all()


async def mark_published(conn: AsyncConnection, ids: Sequence[str], now: datetime) -> None:
    await conn.execute(update(outbox_t).where(one_of(conn, outbox_t.c.id, ids)).values(published_at=now))


DEAD_LETTER_SOURCE = "outbox"  # dead letters of events too large to publish; a replay hands them back (unpublish)


async def unpublish(conn: AsyncConnection, event_id: str) -> bool:
    """Hand an event back to the relay (a replay of its dead letter); False when there is no such event."""
    result = await conn.execute(update(outbox_t).where(outbox_t.c.id == event_id).values(published_at=None))
    return result.rowcount == 1


async def count_unpublished(conn: AsyncConnection) -> int:
    from sqlalchemy import func

    query = select(func.count()).select_from(outbox_t).where(outbox_t.c.published_at.is_(None))
    return int((await conn.execute(query)).scalar_one())
