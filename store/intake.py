"""The intake write path: a whole batch of inquiries in one transaction, with Core bulk inserts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from leadhub.ids import new_id
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


def _event(events: list[dict[str, Any]], kind: str, subject_id: str, now: datetime, **data: Any) -> None:
    events.append(
        {"id": new_id(), "type": kind, "subject_id": subject_id, "data": data, "created_at": now, "published_at": None}
    )


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

    known = await _known_identifiers(conn, {i for r in fresh if not r.dropped for i in r.identifiers()})
    contacts: list[dict[str, Any]] = []
    identifiers: list[dict[str, Any]] = []
    leads: list[dict[str, Any]] = []
    inquiries: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for row in fresh:
        contact_id = lead_id = None
        if not row.dropped:
            contact_id = _resolve_contact(row, known, contacts, identifiers, now, events)
            lead_id = new_id()
            leads.append(
                {
                    "id": lead_id,
                    "contact_id": contact_id,
                    "status": "new",
                    "channel": row.channel,
                    "connector": row.connector,
                    "title": _clean(row.title, 300),
                    "message": _clean(row.message),
                    "attribution": row.attribution,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            _event(
                events,
                "inquiry.received",
                row.id,
                now,
                inquiry_id=row.id,
                contact_id=contact_id,
                lead_id=lead_id,
                channel=row.channel,
                connector=row.connector,
            )
            _event(
                events,
                "lead.created",
                lead_id,
                now,
                lead_id=lead_id,
                contact_id=contact_id,
                inquiry_id=row.id,
                channel=row.channel,
                connector=row.connector,
                status="new",
            )
        inquiries.append(
            {
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
        )

    for table, values in (
        (contact_t, contacts),
        (identifier_t, identifiers),
        (lead_t, leads),
        (inquiry_t, inquiries),
        (outbox_t, events),
    ):
        if values:
            await conn.execute(table.insert(), values)
    result.stored = len(inquiries)
    result.events = len(events)
    return result


def _resolve_contact(  # noqa: PLR0917
    row: InquiryRow,
    known: dict[tuple[str, str], str],
    contacts: list[dict[str, Any]],
    identifiers: list[dict[str, Any]],
    now: datetime,
    events: list[dict[str, Any]],
) -> str:
    """The contact one of the row's identifiers already names, else a new one; new identifiers join it."""
    idents = row.identifiers()
    contact_id = next((known[i] for i in idents if i in known), None)
    if contact_id is None:
        contact_id = new_id()
        contacts.append(
            {
                "id": contact_id,
                "name": _clean(row.name, 200),
                "email": row.email,
                "phone": row.phone,
                "company": _clean(row.company, 200),
                "created_at": now,
                "updated_at": now,
            }
        )
        _event(events, "contact.created", contact_id, now, contact_id=contact_id)
    for ident in idents:
        if ident not in known:
            known[ident] = contact_id
            identifiers.append({"kind": ident[0], "value": ident[1], "contact_id": contact_id, "created_at": now})
    return contact_id
