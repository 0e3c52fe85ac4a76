"""Orders inside the intake transaction: find known orders before leads open, then insert or update them with events.

Two calls from `write_batch`: `load_orders` before the batch opens leads (a status update of a
known order attaches to the order's lead instead of opening one), and `write_orders` after the
batch has resolved contacts and leads (insert new orders, move known ones forward, queue events).
An update older than the stored one (by the provider's `updated_at`) changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from leadhub.ids import new_id
from leadhub.store import leads
from leadhub.store.models import ContactIdentifier, Inquiry, Order
from leadhub.store.one_of import one_of

if TYPE_CHECKING:
    from leadhub.store.intake import Batch

order_t = Order.__table__
identifier_t = ContactIdentifier.__table__
inquiry_t = Inquiry.__table__

ORDER_STATUSES = ("new", "paid", "fulfilled", "completed", "cancelled", "refunded")
# How far along an order is; without a newer provider timestamp the status never moves back.
RANK = {"new": 0, "paid": 1, "fulfilled": 2, "completed": 3, "cancelled": 4, "refunded": 4}
DETAIL_FIELDS = ("number", "total", "currency", "items", "customer", "placed_at")
STALE = "ignored: older than the stored order"
TEXT_LIMITS = {"number": 100, "currency": 8, "total": 40}
# In `inquiry.meta` of a row about an order that had no contact yet: the order's id, to find the row when it gets one.
AWAITS_CONTACT = "awaits_order_contact"


class OrderValues(Protocol):
    """What the store reads from an order draft (the pipeline's `OrderDraft`); status None: not one we can map."""

    external_id: str
    status: str | None
    provider_status: str | None
    number: str | None
    total: str | None
    currency: str | None
    items: list[dict[str, Any]]
    customer: dict[str, Any]
    placed_at: datetime | None
    updated_at: datetime | None
    partial: bool
    source: str | None


def order_key(row: Any) -> tuple[str, str]:
    """(connector, external id) of the order `row` is about: a poller beside the shop's webhook stores the webhook
    connector's orders (`source`), so an order both deliver is one."""
    return (row.order.source or row.connector, row.order.external_id)


@dataclass(slots=True)
class OrderBook:
    """The batch's rows that carry orders, and every order they touch as a dict of its current values."""

    rows: list[Any] = field(default_factory=list)
    known: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    attach_to: dict[str, str] = field(default_factory=dict)  # inquiry key -> the known order's lead
    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    found_contacts: dict[str, str] = field(default_factory=dict)  # order that had no contact -> the one it got
    # inquiry key -> its known order's contact when no identifier names that contact (the order named nobody then)
    unnamed: dict[str, str] = field(default_factory=dict)

    def contact_of(self, row: Any) -> str | None:
        """The contact of the stored order `row` is about; None when it is new or has none yet."""
        stored = self.known.get(order_key(row))
        return stored["contact_id"] if stored is not None else None


def _text(value: str | None, limit: int) -> str | None:
    """Column limits enforced here, and no NUL (PostgreSQL refuses it in text), rather than failing a batch."""
    return (value.replace("\x00", "")[:limit] or None) if value else None


def _aware(value: datetime | None) -> datetime | None:
    """SQLite gives naive UTC, PostgreSQL aware: compare them as aware."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


async def load_orders(
    conn: AsyncConnection, rows: Sequence[Any], known_identifiers: dict[tuple[str, str], str]
) -> OrderBook:
    """Find the stored orders of `rows`; a row about an order that has a lead opens none and joins that lead.

    Only one row per order opens a lead: the first that wants one (a refund does not), in this batch or
    before; `write_orders` links the order and the other rows to it. A row without any identity (a refund)
    takes the email and phone of the order's contact, or of another row of the order in this batch, so
    it resolves to that contact; without them it goes to the order's contact, or to none while the
    order has none (`intake._sender`).
    """
    book = OrderBook(rows=[r for r in rows if r.order is not None and not r.dropped])
    wanted = {order_key(r) for r in book.rows}
    if not wanted:
        return book
    query = select(order_t).where(
        or_(*(and_(order_t.c.connector == c, order_t.c.external_id == e) for c, e in sorted(wanted)))
    )
    if conn.dialect.name == "postgresql":  # two replicas updating one order take turns
        query = query.with_for_update()
    for found in (await conn.execute(query)).mappings():
        book.known[(found["connector"], found["external_id"])] = dict(found)
    await _borrow_identity(conn, book, known_identifiers)
    # A row without identity (a refund) takes it from a row of the same order in this batch that has one.
    identified: dict[tuple[str, str], Any] = {}
    for row in book.rows:
        if row.identifiers():
            identified.setdefault(order_key(row), row)
    has_lead = {key for key, stored in book.known.items() if stored["lead_id"]}
    for row in book.rows:
        key = order_key(row)
        if not row.identifiers() and (donor := identified.get(key)) is not None:
            row.email, row.phone = donor.email, donor.phone
        if key in has_lead:
            row.opens_lead = False
            if (stored := book.known.get(key)) is not None and stored["lead_id"]:
                book.attach_to[row.key] = stored["lead_id"]
        elif row.opens_lead:
            has_lead.add(key)  # this row opens the order's lead; `write_orders` links the order to it
    return book


async def _borrow_identity(conn: AsyncConnection, book: OrderBook, known: dict[tuple[str, str], str]) -> None:
    """Rows without identity take the email and phone of their order's contact; rows with one learn whether their
    order's contact is one no identifier names (`book.unnamed`): made for an order that named nobody (a lead needs a
    contact), it is the buyer this row names, and `intake._resolve_contact` unites the two."""
    about_known = [r for r in book.rows if _other_contact(book, r, known)]
    contact_ids = {book.known[order_key(r)]["contact_id"] for r in about_known}
    if not contact_ids:
        return
    result = await conn.execute(
        select(identifier_t.c.contact_id, identifier_t.c.kind, identifier_t.c.value)
        .where(one_of(conn, identifier_t.c.contact_id, contact_ids))
        .order_by(identifier_t.c.created_at)
    )
    by_contact: dict[str, dict[str, str]] = {}
    for contact_id, kind, value in result:
        by_contact.setdefault(contact_id, {}).setdefault(kind, value)
        known[(kind, value)] = contact_id
    for row in about_known:
        contact_id = book.known[order_key(row)]["contact_id"]
        if row.identifiers():
            if contact_id not in by_contact:
                book.unnamed[row.key] = contact_id
            continue
        idents = by_contact.get(contact_id, {})
        row.email = row.email or idents.get("email")
        row.phone = row.phone or idents.get("phone")


def _other_contact(book: OrderBook, row: Any, known: dict[tuple[str, str], str]) -> bool:
    """Whether `row` is about a known order with a contact that none of the row's identifiers names (the usual
    update names its order's own buyer, and needs no query)."""
    stored = book.known.get(order_key(row))
    contact_id = stored["contact_id"] if stored is not None else None
    return contact_id is not None and all(known.get(i) != contact_id for i in row.lookups())


async def write_orders(conn: AsyncConnection, book: OrderBook, batch: Batch) -> None:
    """Insert new orders and apply updates in batch order, queueing order events through `batch.event`."""
    if not book.rows:
        return
    inquiries = {values["key"]: values for values in batch.inquiries}
    for row in book.rows:
        inquiry = inquiries.get(row.key)
        if inquiry is None:
            continue
        key = order_key(row)
        current = book.known.get(key)
        if current is None:
            book.known[key] = _insert(row, inquiry, book, batch)
            continue
        if inquiry["lead_id"] is None and current["lead_id"]:
            inquiry["lead_id"] = current["lead_id"]
            leads.touch_by_id(current["lead_id"], row, batch)  # an update of the order is a touch of its lead
        elif inquiry["lead_id"] and current["lead_id"] is None:  # the order's first row opened no lead; this one did
            current["lead_id"] = inquiry["lead_id"]
            if not any(values is current for values in book.inserts):
                book.updates.setdefault(current["id"], {})["lead_id"] = inquiry["lead_id"]
        if not _apply(current, row.order, inquiry, book, batch):
            inquiry["meta"] = {**inquiry["meta"], "order_update": STALE}
    _contactless_rows(book, inquiries)
    if book.inserts:
        await conn.execute(order_t.insert(), book.inserts)
    for order_id, values in book.updates.items():
        await conn.execute(update(order_t).where(order_t.c.id == order_id).values(**values))


def _contactless_rows(book: OrderBook, inquiries: dict[str, dict[str, Any]]) -> None:
    """A row of this batch whose order got its contact later in the batch takes it; the others wait, marked."""
    for row in book.rows:
        inquiry = inquiries.get(row.key)
        if inquiry is None or inquiry["contact_id"] is not None:
            continue
        order_id = book.known[order_key(row)]["id"]
        if order_id in book.found_contacts:
            inquiry["contact_id"] = book.found_contacts[order_id]
        else:
            inquiry["meta"] = {**inquiry["meta"], AWAITS_CONTACT: order_id}


async def move_waiting_inquiries(conn: AsyncConnection, book: OrderBook) -> None:
    """Rows about an order that had no contact (a refund delivered before its order) go to the contact it got.

    Run once the batch's rows are inserted: the contact may be one this batch creates.
    """
    for order_id, contact_id in book.found_contacts.items():
        await conn.execute(
            update(inquiry_t)
            .where(inquiry_t.c.contact_id.is_(None), inquiry_t.c.meta[AWAITS_CONTACT].as_string() == order_id)
            .values(contact_id=contact_id)
        )


def _event_data(values: dict[str, Any], inquiry_id: str) -> dict[str, Any]:
    return {
        "order_id": values["id"],
        "contact_id": values["contact_id"],
        "lead_id": values["lead_id"],
        "inquiry_id": inquiry_id,
        "connector": values["connector"],
        "external_id": values["external_id"],
        "number": values["number"],
        "status": values["status"],
        "total": values["total"],
        "currency": values["currency"],
    }


def _insert(row: Any, inquiry: dict[str, Any], book: OrderBook, batch: Batch) -> dict[str, Any]:
    order: OrderValues = row.order
    values: dict[str, Any] = {
        "id": new_id(),
        "connector": order_key(row)[0],
        "external_id": _text(order.external_id, 200),
        "number": _text(order.number, 100),
        "status": "new",
        "provider_status": _text(order.provider_status, 64),
        "total": order.total,
        "currency": _text(order.currency, 8),
        "items": list(order.items),
        "customer": dict(order.customer),
        "contact_id": inquiry["contact_id"],
        "lead_id": inquiry["lead_id"],
        "placed_at": order.placed_at,
        "provider_updated_at": order.updated_at,
        "status_changed_at": order.updated_at or batch.now,
        "paid_at": None,
        "fulfilled_at": None,
        "completed_at": None,
        "cancelled_at": None,
        "refunded_at": None,
        "created_at": batch.now,
        "updated_at": batch.now,
    }
    book.inserts.append(values)
    batch.event("order.created", values["id"], **_event_data(values, inquiry["id"]) | {"status": order.status or "new"})
    if order.status not in (None, "new"):
        _move(values, order.status, order.updated_at or batch.now, inquiry["id"], batch, announce_change=False)
    return values


def _apply(current: dict[str, Any], order: OrderValues, inquiry: dict[str, Any], book: OrderBook, batch: Batch) -> bool:
    """Bring `current` up to `order`; False when `order` is older than what is stored.

    An older delivery only fills details the order still lacks (it was first seen through a refund).
    """
    stored_at, given_at = _aware(current["provider_updated_at"]), order.updated_at
    stale = bool(stored_at and given_at and given_at < stored_at)
    newer = bool(given_at and (stored_at is None or given_at > stored_at))
    changes = {} if order.partial else _detail_changes(current, order, only_missing=stale)
    if inquiry["contact_id"] and current["contact_id"] is None:  # first seen through a refund: now we know who
        changes["contact_id"] = book.found_contacts[current["id"]] = inquiry["contact_id"]
    elif inquiry["contact_id"] and "customer" in changes and not current["customer"]:  # older data: an empty contact
        changes["contact_id"] = inquiry["contact_id"]
    if not stale:
        # A status the provider's mapping does not know (None) never moves the order.
        status_may_move = order.status is not None and (newer or RANK[order.status] >= RANK[current["status"]])
        provider_status = _text(order.provider_status, 64)
        # An unmapped status (None) keeps leadhub's status, but `provider_status` still shows what the shop says.
        shows_status = status_may_move or (order.status is None and not order.partial)
        if shows_status and provider_status and provider_status != current["provider_status"]:
            changes["provider_status"] = provider_status
        if newer:
            changes["provider_updated_at"] = given_at
        if status_may_move and order.status != current["status"]:
            before = dict(current)
            _move(current, order.status, given_at or batch.now, inquiry["id"], batch, announce_change=True)
            changes |= {k: v for k, v in current.items() if v != before[k]}
    if changes:
        changes["updated_at"] = batch.now
        current.update(changes)
        if not any(values is current for values in book.inserts):
            book.updates.setdefault(current["id"], {}).update(changes)
    return not stale


def _detail_changes(current: dict[str, Any], order: OrderValues, *, only_missing: bool) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for name in DETAIL_FIELDS:
        value = getattr(order, name)
        value = _text(value, TEXT_LIMITS[name]) if name in TEXT_LIMITS else value
        stored = _aware(current[name]) if isinstance(current[name], datetime) else current[name]
        if value in (None, "", [], {}) or value == stored or (only_missing and stored not in (None, "", [], {})):
            continue
        changes[name] = value
    return changes


def _move(
    values: dict[str, Any], status: str, at: datetime, inquiry_id: str, batch: Batch, *, announce_change: bool
) -> None:
    """Set the new status; `order.status_changed` for a change, `order.<status>` the first time it is reached."""
    previous = values["status"]
    values["status"] = status
    values["status_changed_at"] = at
    data = _event_data(values, inquiry_id)
    if announce_change:
        batch.event("order.status_changed", values["id"], **data, **{"from": previous, "to": status})
    column = f"{status}_at"
    if column in values and values[column] is None:
        values[column] = at
        batch.event(f"order.{status}", values["id"], **data)
