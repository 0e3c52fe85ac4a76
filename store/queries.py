"""Read queries for the API: filtered lists with keyset cursors, and single rows by id."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, DateTime, Select, String, Table, and_, cast, not_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from leadhub.storable_text import unstorable
from leadhub.store.models import Contact, ContactIdentifier, ContactMerge, Inquiry, Lead, Order

contact_t: Table = Contact.__table__  # type: ignore[assignment]
identifier_t: Table = ContactIdentifier.__table__  # type: ignore[assignment]
lead_t: Table = Lead.__table__  # type: ignore[assignment]
inquiry_t: Table = Inquiry.__table__  # type: ignore[assignment]
order_t: Table = Order.__table__  # type: ignore[assignment]
merge_t: Table = ContactMerge.__table__  # type: ignore[assignment]

INQUIRY_COLUMNS = [c for c in inquiry_t.c if c.name != "payload"]


class BadCursor(ValueError):
    """A `cursor` parameter this API did not issue."""


@dataclass(slots=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


def _scope_tag(scope: Sequence[Any]) -> str:
    """A short digest of the list and its filters: a cursor is good for the list and filters that issued it only."""
    return hashlib.sha256(json.dumps(list(scope), default=str).encode()).hexdigest()[:12]


def _encode_cursor(scope: Sequence[Any], values: list[Any]) -> str:
    raw = json.dumps([_scope_tag(scope), *(v.isoformat() if isinstance(v, datetime) else v for v in values)])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None, columns: Sequence[Any], scope: Sequence[Any]) -> list[Any] | None:
    if not cursor:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(values, list) or len(values) != len(columns) + 1:
            raise ValueError("wrong shape")
        tag, *values = values
        if any(isinstance(v, str) and unstorable(v) for v in values):
            raise ValueError("a value no id holds")
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise BadCursor("cursor is not one this API issued") from exc
    if tag != _scope_tag(scope):
        raise BadCursor("cursor belongs to another list or to other filters; repeat the filters it was issued with")
    try:
        return [
            datetime.fromisoformat(v).replace(tzinfo=None) if isinstance(c.type, DateTime) else str(v)
            for c, v in zip(columns, values, strict=True)
        ]
    except (ValueError, TypeError) as exc:
        raise BadCursor("cursor is not one this API issued") from exc


async def _page(
    conn: AsyncConnection,
    query: Select[Any],
    order: Sequence[Any],
    cursor: str | None,
    limit: int,
    *,
    scope: Sequence[Any],
) -> Page:
    """Newest first by `order` columns (ids are time-ordered ULIDs), `limit` per page, keyset cursor.

    `scope` names the list and its filters; a cursor carries its digest, so one issued for another list or
    other filters is refused (BadCursor) instead of paging silently through the wrong rows.
    """
    after = _decode_cursor(cursor, order, scope)
    if after is not None:
        if conn.dialect.name == "postgresql":  # stored aware on PostgreSQL, naive UTC on SQLite
            after = [v.replace(tzinfo=UTC) if isinstance(v, datetime) else v for v in after]
        query = query.where(tuple_(*order) < tuple_(*after))
    rows = (await conn.execute(query.order_by(*(c.desc() for c in order)).limit(limit + 1))).mappings().all()
    items = [dict(r) for r in rows[:limit]]
    next_cursor = _encode_cursor(scope, [items[-1][c.name] for c in order]) if len(rows) > limit else None
    return Page(items, next_cursor)


async def list_leads(
    conn: AsyncConnection,
    *,
    contact_id: str | None,
    channel: str | None,
    status: str | None,
    cursor: str | None,
    limit: int,
    merged: bool = False,
) -> Page:
    """Leads folded into another one by a contact merge are left out unless `merged` asks for them."""
    query = select(lead_t)
    for column, value in ((lead_t.c.contact_id, contact_id), (lead_t.c.channel, channel), (lead_t.c.status, status)):
        if value:
            query = query.where(column == value)
    if not merged:
        query = query.where(lead_t.c.merged_into.is_(None))
    scope = ("leads", contact_id or None, channel or None, status or None, merged)
    return await _page(conn, query, [lead_t.c.id], cursor, limit, scope=scope)


TOUCH_COLUMNS = [inquiry_t.c[n] for n in ("id", "channel", "connector", "received_at", "name", "email", "phone")]
MAX_TOUCHES = 200


async def get_lead(conn: AsyncConnection, lead_id: str) -> dict[str, Any] | None:
    """The lead with its touches (the inquiries that reached in about it, oldest first, at most 200)."""
    row = (await conn.execute(select(lead_t).where(lead_t.c.id == lead_id))).mappings().first()
    if row is None:
        return None
    touches = await conn.execute(
        select(*TOUCH_COLUMNS)
        .where(inquiry_t.c.lead_id == lead_id)
        .order_by(inquiry_t.c.received_at, inquiry_t.c.id)
        .limit(MAX_TOUCHES)
    )
    return dict(row) | {"touches": [dict(t) for t in touches.mappings()]}


def flagged_for_review() -> ColumnElement[bool]:
    """Contacts a person must look at. One never flagged (or cleared) holds JSON null (the text `null`: the JSON
    column stores None so), not SQL NULL."""
    return and_(contact_t.c.review.is_not(None), cast(contact_t.c.review, String) != "null")


async def list_contacts(
    conn: AsyncConnection,
    *,
    email: str | None,
    phone: str | None,
    cursor: str | None,
    limit: int,
    review: bool | None = None,
    merged: bool = False,
    email_alias: str | None = None,
    phone_kind: str = "phone",
) -> Page:
    """Contacts merged into another are left out unless `merged` asks; `review` lists those flagged for a person.

    `email_alias`: the address as written when `email` is its folded key; identifiers stored while folding was off
    hold that spelling (the intake looks both up too). `phone_kind`: `phone_digits` when `phone` is the digits of a
    number that is no valid one."""
    query = select(contact_t)
    emails = [e for e in (email, email_alias) if e]
    for kind, values in (("email", emails), (phone_kind, [phone] if phone else [])):
        if values:
            owners = select(identifier_t.c.contact_id).where(
                identifier_t.c.kind == kind, identifier_t.c.value.in_(values)
            )
            query = query.where(contact_t.c.id.in_(owners))
    if not merged:
        query = query.where(contact_t.c.merged_into.is_(None))
    flagged = flagged_for_review()
    if review is True:
        query = query.where(flagged)
    elif review is False:
        query = query.where(not_(flagged))
    scope = ("contacts", email or None, phone or None, review, merged)
    return await _page(conn, query, [contact_t.c.id], cursor, limit, scope=scope)


async def get_contact(conn: AsyncConnection, contact_id: str) -> dict[str, Any] | None:
    """The contact with its identifiers and merge history (merges into it and, if merged, where it went)."""
    row = (await conn.execute(select(contact_t).where(contact_t.c.id == contact_id))).mappings().first()
    if row is None:
        return None
    merges = await conn.execute(
        select(merge_t.c.id, merge_t.c.survivor_id, merge_t.c.merged_id, merge_t.c.inquiry_id)
        .add_columns(merge_t.c.created_at, merge_t.c.undone_at)
        .where((merge_t.c.survivor_id == contact_id) | (merge_t.c.merged_id == contact_id))
        .order_by(merge_t.c.created_at, merge_t.c.id)
    )
    identifiers = await contact_identifiers(conn, [contact_id])
    return dict(row) | {
        "identifiers": identifiers.get(contact_id, []),
        "merges": [dict(m) for m in merges.mappings()],
    }


async def contact_identifiers(conn: AsyncConnection, contact_ids: Sequence[str]) -> dict[str, list[dict[str, str]]]:
    if not contact_ids:
        return {}
    rows = await conn.execute(
        select(identifier_t.c.contact_id, identifier_t.c.kind, identifier_t.c.value)
        .where(identifier_t.c.contact_id.in_(contact_ids))
        .order_by(identifier_t.c.kind, identifier_t.c.value)
    )
    found: dict[str, list[dict[str, str]]] = {}
    for contact_id, kind, value in rows:
        found.setdefault(contact_id, []).append({"kind": kind, "value": value})
    return found


async def list_inquiries(
    conn: AsyncConnection,
    *,
    contact_id: str | None,
    lead_id: str | None,
    channel: str | None,
    dropped: bool | None,
    cursor: str | None,
    limit: int,
) -> Page:
    query = select(*INQUIRY_COLUMNS)
    for column, value in (
        (inquiry_t.c.contact_id, contact_id),
        (inquiry_t.c.lead_id, lead_id),
        (inquiry_t.c.channel, channel),
    ):
        if value:
            query = query.where(column == value)
    if dropped is True:
        query = query.where(inquiry_t.c.dropped.is_not(None))
    elif dropped is False:
        query = query.where(inquiry_t.c.dropped.is_(None))
    scope = ("inquiries", contact_id or None, lead_id or None, channel or None, dropped)
    return await _page(conn, query, [inquiry_t.c.received_at, inquiry_t.c.id], cursor, limit, scope=scope)


async def get_inquiry(conn: AsyncConnection, inquiry_id: str) -> dict[str, Any] | None:
    row = (await conn.execute(select(*INQUIRY_COLUMNS).where(inquiry_t.c.id == inquiry_id))).mappings().first()
    return dict(row) if row else None


async def list_orders(
    conn: AsyncConnection,
    *,
    contact_id: str | None,
    status: str | None,
    connector: str | None,
    cursor: str | None,
    limit: int,
) -> Page:
    query = select(order_t)
    for column, value in (
        (order_t.c.contact_id, contact_id),
        (order_t.c.status, status),
        (order_t.c.connector, connector),
    ):
        if value:
            query = query.where(column == value)
    scope = ("orders", contact_id or None, status or None, connector or None)
    return await _page(conn, query, [order_t.c.id], cursor, limit, scope=scope)


async def get_order(conn: AsyncConnection, order_id: str) -> dict[str, Any] | None:
    row = (await conn.execute(select(order_t).where(order_t.c.id == order_id))).mappings().first()
    return dict(row) if row else None
