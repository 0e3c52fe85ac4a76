"""What rules read and write besides their schedule: event objects, tasks, feedback, sent mail, the signing key."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from leadhub.store import leads
from leadhub.store.db import lock_for_writing
from leadhub.store.models import (
    ConnectorState,
    Contact,
    ContactIdentifier,
    EmailMessage,
    EmailSuppression,
    Feedback,
    Inquiry,
    Lead,
    Order,
    OutboxEvent,
    Task,
)
from leadhub.store.one_of import one_of
from leadhub.store.outbox import outbox_event
from leadhub.store.queries import Page, _page
from leadhub.store.suppression_keys import lookup_keys, suppression_key
from leadhub.store.triggers import insert_ignore

task_t: Table = Task.__table__  # type: ignore[assignment]
feedback_t: Table = Feedback.__table__  # type: ignore[assignment]
lead_t: Table = Lead.__table__  # type: ignore[assignment]
email_t: Table = EmailMessage.__table__  # type: ignore[assignment]
suppression_t: Table = EmailSuppression.__table__  # type: ignore[assignment]
state_t: Table = ConnectorState.__table__  # type: ignore[assignment]
outbox_t: Table = OutboxEvent.__table__  # type: ignore[assignment]
order_t: Table = Order.__table__  # type: ignore[assignment]
identifier_t: Table = ContactIdentifier.__table__  # type: ignore[assignment]
OBJECT_TABLES: dict[str, tuple[Table, str]] = {
    "contact": (Contact.__table__, "contact_id"),  # type: ignore[dict-item]
    "lead": (Lead.__table__, "lead_id"),  # type: ignore[dict-item]
    "inquiry": (Inquiry.__table__, "inquiry_id"),  # type: ignore[dict-item]
    "order": (Order.__table__, "order_id"),  # type: ignore[dict-item]
    "feedback": (feedback_t, "feedback_id"),
    "task": (task_t, "task_id"),
}
TASK_STATUSES = ("open", "done")
KEY_OWNER = "leadhub"  # connector_state row holding leadhub's own secrets


async def load_objects(conn: AsyncConnection, data: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The current rows an event points at (`data.contact_id` → contact, ...); None where it names none."""
    objects: dict[str, Any] = {}
    for name in names:
        if name not in OBJECT_TABLES:
            continue
        table, id_field = OBJECT_TABLES[name]
        row_id = data.get(id_field)
        row = None
        if row_id:
            columns = [c for c in table.c if c.name != "payload"]
            row = (await conn.execute(select(*columns).where(table.c.id == row_id))).first()
            if row is not None and row._mapping.get("merged_into"):  # merged since: the one it became
                row = (await conn.execute(select(*columns).where(table.c.id == row.merged_into))).first() or row
        objects[name] = None if row is None else dict(row._mapping)
    contact = objects.get("contact")
    if contact is not None:
        contact["unsubscribed"] = bool(contact.get("email")) and await suppressed(conn, contact["email"]) is not None
        contact.update(NO_ORDERS)
        contact.update((await order_facts(conn, [contact["id"]])).get(contact["id"], {}))
        contact["phone_digits"] = (await phone_digits(conn, [contact])).get(contact["id"])
    return objects


NO_ORDERS: dict[str, Any] = {"orders_count": 0, "last_order_at": None}


async def order_facts(conn: AsyncConnection, contact_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per contact: how many orders and when the latest was placed (`contact.orders_count`, `.last_order_at`)."""
    if not contact_ids:
        return {}
    placed = func.coalesce(order_t.c.placed_at, order_t.c.created_at)
    query = (
        select(order_t.c.contact_id, func.count(), func.max(placed))
        .where(one_of(conn, order_t.c.contact_id, contact_ids))
        .group_by(order_t.c.contact_id)
    )
    return {row[0]: {"orders_count": row[1], "last_order_at": row[2]} for row in await conn.execute(query)}


async def phone_digits(conn: AsyncConnection, contacts: Iterable[dict[str, Any]]) -> dict[str, str]:
    """Per contact without a valid phone: the digits of the number it gave that is no valid one
    (`contact.phone_digits`), so that a task says whom to call back when `contact.phone` is empty. Contacts with a
    phone are not looked up: most have one, and the matcher loads a contact for every event."""
    contact_ids = sorted({c["id"] for c in contacts if not c.get("phone")})
    if not contact_ids:
        return {}
    query = (
        select(identifier_t.c.contact_id, identifier_t.c.value)
        .where(one_of(conn, identifier_t.c.contact_id, contact_ids), identifier_t.c.kind == "phone_digits")
        .order_by(identifier_t.c.created_at.desc(), identifier_t.c.value)
    )
    found: dict[str, str] = {}
    for contact_id, value in await conn.execute(query):
        found.setdefault(contact_id, value)  # the latest given
    return found


async def load_objects_many(
    conn: AsyncConnection, datas: list[dict[str, Any]], names: list[tuple[str, ...]]
) -> list[dict[str, Any]]:
    """`load_objects` for many events at once: one query per table for the whole batch."""
    rows_by_name: dict[str, dict[str, dict[str, Any]]] = {}
    for name in {n for group in names for n in group if n in OBJECT_TABLES}:
        table, id_field = OBJECT_TABLES[name]
        ids = {data.get(id_field) for data, group in zip(datas, names, strict=True) if name in group} - {None}
        columns = [c for c in table.c if c.name != "payload"]
        found = (await conn.execute(select(*columns).where(one_of(conn, table.c.id, ids)))).all() if ids else []
        rows_by_name[name] = {row.id: dict(row._mapping) for row in found}
        merged = {row["merged_into"] for row in rows_by_name[name].values() if row.get("merged_into")}
        if merged:  # contacts and leads merged since the event: rules see the one each became
            into = {r.id: dict(r._mapping) for r in await conn.execute(select(*columns).where(table.c.id.in_(merged)))}
            for row_id, row in rows_by_name[name].items():
                if row.get("merged_into") in into:
                    rows_by_name[name][row_id] = into[row["merged_into"]]
    emails = {
        key for c in rows_by_name.get("contact", {}).values() if c.get("email") for key in lookup_keys(c["email"])
    }
    query = select(suppression_t.c.address).where(one_of(conn, suppression_t.c.address, emails))
    gone = set((await conn.execute(query)).scalars()) if emails else set()
    # keyed by the contacts rules see: a contact merged since its event counts the survivor's orders
    contact_ids = list({c["id"] for c in rows_by_name.get("contact", {}).values()})
    facts = await order_facts(conn, contact_ids)
    digits = await phone_digits(conn, rows_by_name.get("contact", {}).values())
    results = []
    for data, group in zip(datas, names, strict=True):
        objects: dict[str, Any] = {}
        for name in group:
            if name in OBJECT_TABLES:
                row = rows_by_name[name].get(data.get(OBJECT_TABLES[name][1]))
                objects[name] = None if row is None else dict(row)
        contact = objects.get("contact")
        if contact is not None:
            contact["unsubscribed"] = bool(contact.get("email")) and not gone.isdisjoint(lookup_keys(contact["email"]))
            contact.update(facts.get(contact["id"], NO_ORDERS))
            contact["phone_digits"] = digits.get(contact["id"])
        results.append(objects)
    return results


async def suppressed(conn: AsyncConnection, address: str) -> str | None:
    """The reason `address` must not be mailed (bounce, complaint, unsubscribe), or None."""
    query = select(suppression_t.c.reason).where(suppression_t.c.address.in_(lookup_keys(address))).limit(1)
    return (await conn.execute(query)).scalar()


async def suppress(conn: AsyncConnection, address: str, reason: str, detail: str | None, now: datetime) -> None:
    values = {"address": suppression_key(address), "reason": reason, "detail": detail, "created_at": now}
    await insert_ignore(conn, suppression_t, values)


async def send_state(conn: AsyncConnection, address: str, message_id: str) -> tuple[str | None, bool]:
    """(why `address` is suppressed or None, whether `message_id` was already sent) in one round trip."""
    reason = select(suppression_t.c.reason).where(suppression_t.c.address.in_(lookup_keys(address))).limit(1)
    sent = select(email_t.c.message_id).where(email_t.c.message_id == message_id, email_t.c.direction == "out")
    row = (await conn.execute(select(reason.scalar_subquery(), sent.exists()))).one()
    return row[0], bool(row[1])


async def send_states(
    conn: AsyncConnection, addresses: list[str], message_ids: list[str]
) -> tuple[dict[str, str], set[str]]:
    """`send_state` for a batch: {address as given: why suppressed} and the Message-IDs already sent."""
    keys = {address: lookup_keys(address) for address in addresses}
    wanted = set().union(*keys.values())
    query = select(suppression_t.c.address, suppression_t.c.reason).where(one_of(conn, suppression_t.c.address, wanted))
    found = {row[0]: row[1] for row in await conn.execute(query)} if wanted else {}
    reasons = {}
    for address, looked_for in keys.items():
        if hits := sorted(found[key] for key in looked_for if key in found):
            reasons[address] = hits[0]
    sent_query = select(email_t.c.message_id).where(
        one_of(conn, email_t.c.message_id, message_ids), email_t.c.direction == "out"
    )
    sent = set((await conn.execute(sent_query)).scalars()) if message_ids else set()
    return reasons, sent


SENT_CHUNK = 500  # rows per INSERT: five values each, well under SQLite's limit of bound parameters


def sent_row(message_id: str, lead_id: str | None, now: datetime) -> dict[str, Any]:
    """An e-mail leadhub sent, for `record_sent`: its Message-ID joins a reply to the lead."""
    return {"message_id": message_id, "direction": "out", "inquiry_id": None, "lead_id": lead_id, "created_at": now}


async def record_sent(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Record sent e-mails (`sent_row`s), a statement per 500; a Message-ID already recorded is left as it is,
    but one kept with no lead (a dropped copy of the mail, as releases before 2026-12 recorded one) becomes the
    send's: else the answer to it found no lead, and a retried send no `out` row."""
    for start in range(0, len(rows), SENT_CHUNK):
        chunk = rows[start : start + SENT_CHUNK]
        if await insert_ignore(conn, email_t, chunk) < len(chunk):
            await _take_over_leadless(conn, chunk)


async def _take_over_leadless(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    statement = (
        update(email_t)
        .where(email_t.c.message_id == bindparam("mid"), email_t.c.lead_id.is_(None), email_t.c.direction == "in")
        .values(direction="out", inquiry_id=None, lead_id=bindparam("lid"))
    )
    await conn.execute(statement, [{"mid": row["message_id"], "lid": row["lead_id"]} for row in rows])


async def insert_task(conn: AsyncConnection, values: dict[str, Any]) -> bool:
    """Create the task once (its id derives from the action key) and emit `task.created` with it."""
    if await insert_ignore(conn, task_t, values) != 1:
        return False
    data = {"task_id": values["id"], "lead_id": values["lead_id"], "contact_id": values["contact_id"]}
    event = outbox_event("task.created", values["id"], values["created_at"], **data)
    await conn.execute(outbox_t.insert().values(event))
    return True


async def set_task_status(conn: AsyncConnection, task_id: str, status: str, now: datetime) -> dict[str, Any] | None:
    """Mark a task open or done; emits `task.status_changed` when it changed. None when there is no such task."""
    row = (await conn.execute(select(task_t).where(task_t.c.id == task_id))).first()
    if row is None:
        return None
    task = dict(row._mapping)
    if task["status"] == status:
        return task
    await conn.execute(update(task_t).where(task_t.c.id == task_id).values(status=status, updated_at=now))
    data = {"task_id": task_id, "lead_id": task["lead_id"], "contact_id": task["contact_id"]}
    event = outbox_event("task.status_changed", task_id, now, **data, **{"from": task["status"], "to": status})
    await conn.execute(outbox_t.insert().values(event))
    return {**task, "status": status, "updated_at": now}


async def list_tasks(
    conn: AsyncConnection,
    *,
    lead_id: str | None,
    contact_id: str | None,
    status: str | None,
    cursor: str | None,
    limit: int,
) -> Page:
    query = select(task_t)
    for column, value in ((task_t.c.lead_id, lead_id), (task_t.c.contact_id, contact_id), (task_t.c.status, status)):
        if value:
            query = query.where(column == value)
    scope = ("tasks", lead_id or None, contact_id or None, status or None)
    return await _page(conn, query, [task_t.c.created_at, task_t.c.id], cursor, limit, scope=scope)


async def save_feedback(conn: AsyncConnection, values: dict[str, Any]) -> bool:
    """Store a survey answer and emit `feedback.received`; False when the order was already answered."""
    if await insert_ignore(conn, feedback_t, values) != 1:
        return False
    data = {k: values[k] for k in ("order_id", "contact_id", "lead_id", "score")} | {"feedback_id": values["id"]}
    await conn.execute(
        outbox_t.insert().values(outbox_event("feedback.received", values["id"], values["created_at"], **data))
    )
    return True


async def update_lead(conn: AsyncConnection, lead_id: str, changes: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A rule's status/owner/tag changes, applied by `leads.change_lead` (the one place that emits `lead.*`)."""
    await lock_for_writing(conn)  # the tags read here are the ones written back
    query = select(lead_t.c.tags).where(lead_t.c.id == lead_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        raise LookupError(f"lead {lead_id} does not exist")
    tags = [t for t in row.tags or [] if t not in changes.get("remove_tags", [])]
    tags += [t for t in changes.get("add_tags", []) if t not in tags]
    values: dict[str, Any] = {"tags": tags}
    for name in ("status", "owner"):
        if changes.get(name):
            values[name] = changes[name]
    try:
        _, diff = await leads.change_lead(conn, lead_id, values, now, source="rule")
    except leads.LeadChangeError as exc:
        raise LookupError(exc.detail) from None
    return {name: after for name, (_, after) in diff.items()}


async def signing_key(conn: AsyncConnection, now: datetime) -> bytes:
    """leadhub's own secret for survey and unsubscribe links: made once, shared by every replica via the store."""
    query = select(state_t.c.value).where(state_t.c.connector == KEY_OWNER, state_t.c.key == "signing_key")
    value = (await conn.execute(query)).scalar_one_or_none()
    if value is None:
        fresh = {
            "connector": KEY_OWNER,
            "key": "signing_key",
            "value": {"hex": secrets.token_hex(32)},
            "updated_at": now,
        }
        await insert_ignore(conn, state_t, fresh)
        value = (await conn.execute(query)).scalar_one()
    return bytes.fromhex(value["hex"])


async def events_since(
    conn: AsyncConnection, since: datetime, types: list[str], limit: int, *, after: str | None = None
) -> list[dict[str, Any]]:
    """Stored domain events (the outbox keeps them after relaying) of `types`, oldest first; `limit` of them
    after the event `after` (ids are time-ordered), so a caller pages through any number."""
    query = select(outbox_t).where(outbox_t.c.created_at >= since, outbox_t.c.type.in_(types))
    if after is not None:
        query = query.where(outbox_t.c.id > after)
    query = query.order_by(outbox_t.c.id).limit(limit)
    return [dict(row._mapping) for row in await conn.execute(query)]
