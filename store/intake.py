"""The intake write path: a whole batch of inquiries in one transaction, with Core bulk inserts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from leadhub.ids import new_id
from leadhub.store import bulk, email_threads, identity, leads, orders
from leadhub.store.db import lock_for_writing
from leadhub.store.leads import OpenLead
from leadhub.store.models import Contact, ContactIdentifier, Inquiry, Lead, OutboxEvent
from leadhub.store.one_of import one_of
from leadhub.store.outbox import outbox_event
from leadhub.store.policy import IdentityPolicy

contact_t = Contact.__table__
identifier_t = ContactIdentifier.__table__
lead_t = Lead.__table__
inquiry_t = Inquiry.__table__
outbox_t = OutboxEvent.__table__

# Contact columns an inquiry fills while they are empty; the first value a contact gets is kept.
DETAILS = ("name", "email", "phone", "company")


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
    # The digits of `phone_raw` when it is no valid number: an identifier of their own kind, `phone_digits`, which
    # never equals an E.164 `phone`; the same number as written finds the same contact.
    phone_digits: str | None = None
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
    # The email as matched (Gmail dots and +tags folded when the setting asks); None: the email itself.
    email_key: str | None = None
    messenger: str | None = None  # `telegram:<user id>`
    customer: str | None = None  # `<connector>:<shop customer id>`
    consent: str | None = None  # granted | withdrawn, when the inquiry said so
    # The email as written when `email_key` folds it: identifiers stored while folding was off hold that
    # spelling. Looked up, never stored.
    email_alias: str | None = None
    # Keys a copy of the same submission may be stored under (a form body in a neighbouring dedupe bucket):
    # one received less than `repeat_window` apart makes this row a duplicate. Looked up, never stored.
    repeat_keys: tuple[str, ...] = ()
    repeat_window: timedelta = timedelta(0)

    def repeats(self, stored: dict[str, datetime]) -> bool:
        """Whether a copy under one of `repeat_keys` was received within `repeat_window` of this row."""
        return any(
            (at := stored.get(key)) is not None and abs(leads.aware(at) - self.received_at) < self.repeat_window
            for key in self.repeat_keys
        )

    def identifiers(self) -> list[tuple[str, str]]:
        """How this inquiry names its sender, strongest first: email, phone (or the digits of an invalid one),
        messenger, shop customer."""
        found = []
        if self.email:
            found.append(("email", self.email_key or self.email))
        if self.phone:
            found.append(("phone", self.phone))
        elif self.phone_digits:
            found.append(("phone_digits", self.phone_digits))
        if self.messenger:
            found.append(("messenger", self.messenger))
        if self.customer:
            found.append(("customer", self.customer))
        return found

    def lookups(self) -> list[tuple[str, str]]:
        """The identifiers, then the spellings stored identifiers may hold instead (see `email_alias`)."""
        found = self.identifiers()
        if self.email_alias:
            found.append(("email", self.email_alias))
        return found


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
    policy: IdentityPolicy = field(default_factory=IdentityPolicy)
    unions: identity.Unions = field(default_factory=identity.Unions)
    open_leads: dict[str, list[OpenLead]] = field(default_factory=dict)  # contact -> its open leads
    lead_updates: dict[str, dict[str, Any]] = field(default_factory=dict)  # stored lead -> new touch values
    remote_touches: list[tuple[str, Any]] = field(default_factory=list)  # (lead id, row) for leads not loaded
    contact_updates: dict[str, dict[str, Any]] = field(default_factory=dict)  # stored contact -> new values
    details: dict[str, dict[str, Any]] = field(default_factory=dict)  # stored contact -> its DETAILS as they stand
    created: dict[str, dict[str, Any]] = field(default_factory=dict)  # contact this batch creates -> its row
    reviews: dict[str, dict[str, Any]] = field(default_factory=dict)  # contact -> why it needs a person's look
    contacts: list[dict[str, Any]] = field(default_factory=list)
    identifiers: list[dict[str, Any]] = field(default_factory=list)
    leads: list[dict[str, Any]] = field(default_factory=list)
    inquiries: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    flushed_events: int = 0

    def event(self, kind: str, subject_id: str, **data: Any) -> None:
        self.events.append(outbox_event(kind, subject_id, self.now, **data))

    async def flush(self, conn: AsyncConnection) -> None:
        """Insert what is pending, a bulk insert per table; emptied lists let a later flush add only new rows."""
        for table, values in (
            (contact_t, self.contacts),
            (identifier_t, self.identifiers),
            (lead_t, self.leads),
            (inquiry_t, self.inquiries),
            (outbox_t, self.events),
        ):
            if values:
                await bulk.insert_rows(conn, table, values)
                if table is outbox_t:
                    self.flushed_events += len(values)
                values.clear()


async def _existing_keys(conn: AsyncConnection, rows: Sequence[InquiryRow]) -> dict[str, datetime]:
    """The stored keys among the rows' own and their `repeat_keys`, each with when its inquiry was received."""
    keys = [r.key for r in rows] + [key for r in rows for key in r.repeat_keys]
    query = select(inquiry_t.c.key, inquiry_t.c.received_at).where(one_of(conn, inquiry_t.c.key, keys))
    return {key: received_at for key, received_at in (await conn.execute(query)).all()}


async def write_batch(
    conn: AsyncConnection, rows: Sequence[InquiryRow], now: datetime, policy: IdentityPolicy | None = None
) -> BatchResult:
    """Store new inquiries, resolve (and merge) their contacts, join or open leads, and queue events.

    Rows whose key is already stored change nothing (redelivery), nor do form bodies repeating one stored in the
    neighbouring dedupe bucket within the window (a double-click across the bucket edge). A concurrent writer that
    inserts the same key or identifier first makes this transaction fail on a unique
    constraint; the caller retries and then finds the other writer's rows.
    """
    policy = policy or IdentityPolicy()
    await lock_for_writing(conn)  # PostgreSQL: identity.known_identifiers locks the named contacts
    existing = await _existing_keys(conn, rows)
    fresh: list[InquiryRow] = []
    for row in rows:
        if row.key not in existing and not row.repeats(existing):
            existing[row.key] = row.received_at
            fresh.append(row)
    result = BatchResult(duplicates=len(rows) - len(fresh))
    if not fresh:
        return result
    fresh = email_threads.in_thread_order(fresh)  # a reply after the message it answers

    known = await identity.known_identifiers(conn, {i for r in fresh if not r.dropped for i in r.lookups()})
    batch = Batch(now, known, policy)
    # Extension point (email threading): map a row's key to an existing lead id.
    attach_to = await email_threads.thread_links(conn, fresh, batch)  # a reply joins its thread's lead
    order_book = await orders.load_orders(conn, fresh, batch.known)  # an update of a known order joins its lead
    attach_to.update(order_book.attach_to)
    batch.open_leads = await leads.load_open_leads(conn, batch.known.values(), fresh, policy)
    batch.details = await _contact_details(conn, {*batch.known.values(), *order_book.unnamed.values()})
    for row in fresh:
        contact_id = lead_id = None
        if not row.dropped:
            contact_id = await _sender(conn, row, batch, order_book)
            lead_id = attach_to.get(row.key)
            if lead_id is not None:
                leads.touch_by_id(lead_id, row, batch)
            elif row.opens_lead and contact_id is not None:
                lead_id, contact_id = _join_or_open_lead(row, contact_id, batch)
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
    result.stored = len(batch.inquiries)
    await batch.flush(conn)
    await orders.move_waiting_inquiries(conn, order_book)
    await leads.write_lead_updates(conn, batch)
    for contact_id, values in batch.contact_updates.items():
        await conn.execute(contact_t.update().where(contact_t.c.id == contact_id).values(**values, updated_at=now))
    await identity.write_reviews(conn, batch)
    await identity.apply_merges(conn, batch, policy)  # after the rows exist, so the merge moves them too
    await batch.flush(conn)
    result.events = batch.flushed_events
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
        "title": _clean(row.title, 300),
        "message": _clean(row.message),
        "fields": row.fields,
        "dropped": _clean(row.dropped, 200),
        "content_type": row.content_type[:200],
        "meta": row.meta,
        "payload": row.payload,
        "created_at": now,
    }


def _join_or_open_lead(row: InquiryRow, contact_id: str, batch: Batch) -> tuple[str, str]:
    """The contact's open lead near this inquiry's time (it becomes a touch of it), else a new lead.

    Returns (lead id, contact id). The lead may be one of another contact this batch united with `contact_id`;
    the inquiry then goes with that lead's contact, so an inquiry and its lead always name the same contact:
    the merge moves both to the survivor and an unmerge puts both back together.
    """
    candidates = [lead for c in batch.unions.members_or_self(contact_id) for lead in batch.open_leads.get(c, ())]
    lead = leads.nearest_open_lead(candidates, row.channel, row.received_at, batch.policy)
    if lead is not None:
        leads.touch(lead, row, batch)
        return lead.id, lead.contact_id
    return _open_lead(row, contact_id, batch), contact_id


def _open_lead(row: InquiryRow, contact_id: str, batch: Batch) -> str:
    lead_id = new_id()
    values = {
        "id": lead_id,
        "contact_id": contact_id,
        "status": "new",
        "owner": None,
        "tags": list(row.tags),
        "channel": row.channel,
        "connector": row.connector,
        "title": _clean(row.title, 300),
        "message": _clean(row.message),
        "attribution": row.attribution,
        "first_touch_at": row.received_at,
        "last_touch_at": row.received_at,
        "merged_into": None,
        "created_at": batch.now,
        "updated_at": batch.now,
    }
    batch.leads.append(values)
    batch.open_leads.setdefault(contact_id, []).append(
        OpenLead(lead_id, contact_id, row.channel, row.received_at, row.received_at, values, tags=values["tags"])
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


async def _sender(conn: AsyncConnection, row: InquiryRow, batch: Batch, order_book: orders.OrderBook) -> str | None:
    """The row's contact; news about an order that names nobody (a refund) is the order's contact's, or nobody's yet.

    Such a row makes no contact of its own: an empty one kept the row and the order's events forever, while the
    order moved to the real contact when its own delivery arrived (now `orders.move_waiting_inquiries` moves the row).
    A row that opens a lead still gets a contact: a lead always has one.
    """
    if row.order is not None and not row.identifiers():
        contact_id = order_book.contact_of(row)
        if contact_id is not None or not row.opens_lead:
            return contact_id
    return await _resolve_contact(conn, row, batch, order_book.unnamed.get(row.key))


async def _resolve_contact(conn: AsyncConnection, row: InquiryRow, batch: Batch, unnamed: str | None = None) -> str:
    """The contact the row's identifiers name, else a new one; a row naming several unites them.

    `unnamed`: the contact of the row's order when no identifier names it (the order named nobody at first); the
    row names it too, so the order, its lead and their events go to the buyer the shop names now.

    New identifiers join the contact. When the named contacts' consent disagrees, or a person decided to keep
    two of them apart, nothing is united or linked: the row goes to the contact its strongest identifier names
    (and a consent conflict flags them for review, each with the others nobody kept apart from it).
    """
    idents = row.identifiers()
    named = list(dict.fromkeys(batch.unions.find(batch.known[i]) for i in row.lookups() if i in batch.known))
    if unnamed is not None:
        named = list(dict.fromkeys([*named, batch.unions.find(unnamed)]))
    if len(named) > 1:
        states = await identity.consent_states(conn, named, batch)
        if row.consent:
            states = {c: s or row.consent for c, s in states.items()}
        decided = await identity.decided_apart(conn, named, batch)  # a person's keep-apart stands, consent aside
        if identity.conflicting(states):
            identity.flag_for_review(batch, named, states, row.id, decided)
            return named[0]
        if decided:
            return named[0]
        contact_id = batch.unions.unite(named, row.id)
    elif named:
        contact_id = named[0]
    else:
        contact_id = new_id()
        batch.contacts.append(
            {
                "id": contact_id,
                "name": _clean(row.name, 200),
                "email": row.email,
                "phone": row.phone,
                "company": _clean(row.company, 200),
                "consent": row.consent,
                "merged_into": None,
                "review": None,
                "created_at": batch.now,
                "updated_at": batch.now,
            }
        )
        batch.created[contact_id] = batch.contacts[-1]
        batch.event("contact.created", contact_id, contact_id=contact_id)
    _fill_details(batch, contact_id, row)
    if row.consent:
        _set_consent(batch, contact_id, row.consent)
    for ident in idents:
        if ident not in batch.known:
            batch.known[ident] = contact_id
            batch.identifiers.append(
                {"kind": ident[0], "value": ident[1], "contact_id": contact_id, "created_at": batch.now}
            )
    return contact_id


async def _contact_details(conn: AsyncConnection, contact_ids: set[str]) -> dict[str, dict[str, Any]]:
    if not contact_ids:
        return {}
    query = select(contact_t.c.id, *(contact_t.c[name] for name in DETAILS)).where(
        one_of(conn, contact_t.c.id, sorted(contact_ids))
    )
    return {row.id: {name: row._mapping[name] for name in DETAILS} for row in await conn.execute(query)}


def _fill_details(batch: Batch, contact_id: str, row: InquiryRow) -> None:
    """Empty columns of the contact take the row's values: a caller who later orders with an email gets that email.

    Only empty ones: what a contact has (the first name or address it gave) is not replaced by a later spelling.
    The email is as written (`row.email`), not the folded key its identifier holds. An email or phone that is
    another contact's (a row uniting two) is left to the merge, which journals it so an unmerge takes it back.
    """
    current = batch.created.get(contact_id) or batch.details.get(contact_id)
    if current is None:
        return
    given = {"name": _clean(row.name, 200), "company": _clean(row.company, 200)}
    for name, ident in (("email", ("email", row.email_key or row.email)), ("phone", ("phone", row.phone))):
        if batch.known.get(ident, contact_id) == contact_id:
            given[name] = getattr(row, name)
    fill = {name: value for name, value in given.items() if value and not current[name]}
    if not fill:
        return
    current.update(fill)
    if contact_id not in batch.created:
        batch.contact_updates.setdefault(contact_id, {}).update(fill)


def _set_consent(batch: Batch, contact_id: str, consent: str) -> None:
    """The person's latest word on consent is the one kept."""
    pending = batch.created.get(contact_id)
    if pending is not None:
        pending["consent"] = consent
    else:
        batch.contact_updates.setdefault(contact_id, {})["consent"] = consent
