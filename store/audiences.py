"""Contacts a `for_each` schedule rule runs for: selected in SQL so a tick reads only the candidates."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from leadhub.store.models import Contact, Inquiry, Order

contact_t: Table = Contact.__table__  # type: ignore[assignment]
inquiry_t: Table = Inquiry.__table__  # type: ignore[assignment]
order_t: Table = Order.__table__  # type: ignore[assignment]


async def every_contact(conn: AsyncConnection) -> list[str]:
    """Every contact that is one: one merged into another is the survivor now, which is selected itself."""
    query = select(contact_t.c.id).where(contact_t.c.merged_into.is_(None)).order_by(contact_t.c.id)
    return list((await conn.execute(query)).scalars())


async def last_order_before(conn: AsyncConnection, before: datetime) -> dict[str, datetime]:
    """Contacts who have ordered, and whose latest order was placed before `before`, with that time."""
    placed = func.max(func.coalesce(order_t.c.placed_at, order_t.c.created_at))
    query = (
        select(order_t.c.contact_id, placed)
        .where(order_t.c.contact_id.is_not(None))
        .group_by(order_t.c.contact_id)
        .having(placed < before)
    )
    return {row[0]: row[1] for row in await conn.execute(query)}


async def field_values(conn: AsyncConnection, field: str) -> dict[str, str]:
    """Per contact, the latest value of a form field kept on their inquiries (e.g. `birthday`)."""
    value = inquiry_t.c.fields[field].as_string()
    query = (
        select(inquiry_t.c.contact_id, value)
        .where(inquiry_t.c.contact_id.is_not(None), value.is_not(None), value != "")
        .order_by(inquiry_t.c.received_at, inquiry_t.c.id)
    )
    return {row[0]: row[1] for row in await conn.execute(query)}
