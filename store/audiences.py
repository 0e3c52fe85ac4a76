"""Contacts a `for_each` schedule rule runs for: read a page of contacts at a time, each filter in SQL for the page.

A tick reads the live contacts in id order, `PAGE` at a time, so a store of a million contacts is never held in
memory at once (all of them and their events took ~0.8 KB each: 800 MB for a million).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from leadhub.store.models import Contact, Inquiry, Order
from leadhub.store.one_of import one_of

contact_t: Table = Contact.__table__  # type: ignore[assignment]
inquiry_t: Table = Inquiry.__table__  # type: ignore[assignment]
order_t: Table = Order.__table__  # type: ignore[assignment]

PAGE = 1000  # contacts per read: well under every driver's limit of bound parameters


async def contacts_after(conn: AsyncConnection, after: str | None, limit: int) -> list[str]:
    """The next `limit` contacts by id after `after`; one merged into another is the survivor now, selected itself.

    Keyset paging: a contact created or merged while a tick runs neither shifts nor repeats the pages after it.
    """
    query = select(contact_t.c.id).where(contact_t.c.merged_into.is_(None))
    if after is not None:
        query = query.where(contact_t.c.id > after)
    return list((await conn.execute(query.order_by(contact_t.c.id).limit(limit))).scalars())


async def last_order_before(conn: AsyncConnection, before: datetime, contact_ids: Sequence[str]) -> dict[str, datetime]:
    """Of `contact_ids`, those who have ordered and whose latest order was placed before `before`, with that time."""
    placed = func.max(func.coalesce(order_t.c.placed_at, order_t.c.created_at))
    query = (
        select(order_t.c.contact_id, placed)
        .where(one_of(conn, order_t.c.contact_id, contact_ids))
        .group_by(order_t.c.contact_id)
        .having(placed < before)
    )
    return {row[0]: row[1] for row in await conn.execute(query)}


async def field_values(conn: AsyncConnection, field: str, contact_ids: Sequence[str]) -> dict[str, str]:
    """Per contact of `contact_ids`, the latest value of a form field kept on their inquiries (e.g. `birthday`)."""
    value = inquiry_t.c.fields[field].as_string()
    query = (
        select(inquiry_t.c.contact_id, value)
        .where(one_of(conn, inquiry_t.c.contact_id, contact_ids), value.is_not(None), value != "")
        .order_by(inquiry_t.c.received_at, inquiry_t.c.id)
    )
    return {row[0]: row[1] for row in await conn.execute(query)}
