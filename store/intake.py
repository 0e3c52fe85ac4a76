"""The intake write path: a whole batch of inquiries in one transaction, with Core bulk inserts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from leadhub.ids import new_id
from leadhub.store import email_threads, orders
from leadhub.store.models import Contact, ContactIdentifier, Inquiry, Lead, OutboxEvent

contact_t = Contact.__table__
identifier_t = ContactIdentifier.__table__
lead_t = Lead.__table__
inquiry_t = Inquiry.__table__
outbox_t = OutboxEvent.__table__


@dataclass(slots=True)
class InquiryRow:
    """Everything the store needs to record one inquiry; built by the pipeline."""

    id: str
    key: str
    channel: str
    connector: str
    received_at: datetime
    content_type: str
    payload: bytes
    meta: dict[str, Any]
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    phone_raw: str | None = None
    company: str | None = None
    message: str | None = None
    title: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    attribution: dict[str, str] = field(default_factory=dict)
    dropped: str | None = None
    tags: list[str] = field(default_factory=list)
    opens_lead: bool = True
    message_id: str | None = None
    thread_refs: list[str] = field(default_factory=list)
    order: Any = None

    def identifiers(self) -> list[tuple[str, str]]:
        return [(kind, value) for kind, value in (("email", self.email), ("phone", self.phone)) if value]


@dataclass(slots=True)
class BatchResult:
    stored: int = 0
    duplicates: int = 0
    events: int = 0


def _clean(text: str | None, limit: int | None = None) -> str | None:
    """PostgreSQL refuses NUL in text; column limits are enforced here rather than failing a batch."""
    if text is None:
        return None
    text = text.replace("\x00", "")
    return text[:limit] if limit else text


@dataclass(slots=True)
class Batch:
    """The rows one transaction will insert, collected first so each table gets one bulk insert."""

    now: datetime
    known: dict[tuple[str, str], str]
    contacts: list[dict[str, Any]] = field(default_factory=list)
    identifiers: list[dict[str, Any]] = field(default_factory=list)
    leads: list[dict[str, Any]] = field(default_factory=list)
    inquiries: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def event(self, kind: str, subject_id: str, **data: Any) -> None:
        self.events.append(
            {
                "id": new_id(),
                "type": kind,
                "subject_id": subject_id,
                "data": data,
                "created_at": self.now,
                "published_at": None,
            }
        )

    async def flush(self, conn: AsyncConnection) -> None:
        for table, values in (
            (contact_t, self.contacts),
            (identifier_t, self.identifiers),
            (lead_t, self.leads),
            (inquiry_t, self.inquiries),
            (outbox_t, self.events),
        ):
            if values:
                await conn.execute(table.insert(), values)


async def _existing_keys(conn: AsyncConnection, keys: list[str]) -> set[str]:
    result = await conn.execute(select(inquiry_t.c.key).where(inquiry_t.c.key.in_(keys)))
    return set(result.scalars())


async def _known_identifiers(conn: AsyncConnection, idents: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    if not idents:
        return {}
    by_kind: dict[str, list[str]] = {}
    for kind, value in idents:
        by_kind.setdefault(kind, []).append(value)
    clauses = [and_(identifier_t.c.kind == kind, identifier_t.c.value.in_(values)) for kind, values in by_kind.items()]
    result = await conn.execute(
        select(identifier_t.c.kind, identifier_t.c.value, identifier_t.c.contact_id).where(or_(*clauses))
    )
    return {(kind, value): contact_id for kind, value, contact_id in result}


async def write_batch(conn: AsyncConnection, rows: Sequence[InquiryRow], now: datetime) -> BatchResult:
    """Store new inquiries, resolve or create their contacts, open leads, and queue events.

    Rows whose key is already stored change nothing (redelivery). A concurrent writer that
    inserts the same key or identifier first makes this transaction fail on a unique
    constraint; the caller retries and then finds the other writer's rows.
    """
    existing = await _existing_keys(conn, [r.key for r in rows])
    fresh: list[InquiryRow] = []
    for row in rows:
        if row.key not in existing:
            existing.add(row.key)
            fresh.append(row)
    result = BatchResult(duplicates=len(rows) - len(fresh))
    if not fresh:
        return result

    batch = Batch(now, await _known_identifiers(conn, {i for r in fresh if not r.dropped for i in r.identifiers()}))
    # Extension point (email threading, lead coalescing): map a row's key to an existing lead id.
    attach_to = await email_threads.thread_links(conn, fresh, batch)  # a reply joins its thread's lead
    order_book = await orders.load_orders(conn, fresh, batch.known)  # an update of a known order joins its lead
    attach_to.update(order_book.attach_to)
    for row in fresh:
        contact_id = lead_id = None
        if not row.dropped:
            contact_id = _resolve_contact(row, batch)
            lead_id = attach_to.get(row.key) or (_open_lead(row, contact_id, batch) if row.opens_lead else None)
            batch.event(
                "inquiry.received",
                row.id,
                inquiry_id=row.id,
                contact_id=contact_id,
                lead_id=lead_id,
                channel=row.channel,
                connector=row.connector,
            )
        batch.inquiries.append(_inquiry_values(row, contact_id, lead_id, now))
    # Extension point (shop orders): upsert orders of `fresh` rows into `batch` here.
    await orders.write_orders(conn, order_book, batch)
    await email_threads.record(conn, fresh, batch)  # Message-IDs for later replies; bounced addresses
    await batch.flush(conn)
    result.stored = len(batch.inquiries)
    result.events = len(batch.events)
    return result


def _inquiry_values(row: InquiryRow, contact_id: str | None, lead_id: str | None, now: datetime) -> dict[str, Any]:
    return {
        "id": row.id,
        "key": row.key,
        "channel": row.channel,
        "connector": row.connector,
        "received_at": row.received_at,
        "contact_id": contact_id,
        "lead_id": lead_id,
        "name": _clean(row.name, 200),
        "email": _clean(row.email, 320),
        "phone": _clean(row.phone or row.phone_raw, 64),
        "message": _clean(row.message),
        "fields": row.fields,
        "dropped": _clean(row.dropped, 200),
        "content_type": row.content_type[:200],
        "meta": row.meta,
        "payload": row.payload,
        "created_at": now,
    }


def _open_lead(row: InquiryRow, contact_id: str, batch: Batch) -> str:
    lead_id = new_id()
    batch.leads.append(
        {
            "id": lead_id,
            "contact_id": contact_id,
            "status": "new",
            "owner": None,
            "tags": row.tags,
            "channel": row.channel,
            "connector": row.connector,
            "title": _clean(row.title, 300),
            "message": _clean(row.message),
            "attribution": row.attribution,
            "created_at": batch.now,
            "updated_at": batch.now,
        }
    )
    batch.event(
        "lead.created",
        lead_id,
        lead_id=lead_id,
        contact_id=contact_id,
        inquiry_id=row.id,
        channel=row.channel,
        connector=row.connector,
        status="new",
        tags=row.tags,
    )
    return lead_id


def _resolve_contact(row: InquiryRow, batch: Batch) -> str:
    """The contact one of the row's identifiers already names, else a new one; new identifiers join it."""
    idents = row.identifiers()
    contact_id = next((batch.known[i] for i in idents if i in batch.known), None)
    if contact_id is None:
        contact_id = new_id()
        batch.contacts.append(
            {
                "id": contact_id,
                "name": _clean(row.name, 200),
                "email": row.email,
                "phone": row.phone,
                "company": _clean(row.company, 200),
                "created_at": batch.now,
                "updated_at": batch.now,
            }
        )
        batch.event("contact.created", contact_id, contact_id=contact_id)
    for ident in idents:
        if ident not in batch.known:
            batch.known[ident] = contact_id
            batch.identifiers.append(
                {"kind": ident[0], "value": ident[1], "contact_id": contact_id, "created_at": batch.now}
            )
    return contact_id
