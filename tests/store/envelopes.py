"""Envelopes as the real connectors build them (form JSON, Telegram update, Shopify order), for identity tests."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.envelope import Envelope
from leadhub.pipelines.intake import IntakePipeline
from leadhub.pipelines.model import SourceSpec
from leadhub.store.models import Contact, ContactIdentifier, Inquiry, Lead, Order

SOURCES = {
    "site-form": SourceSpec("form", {}),
    "bot": SourceSpec("telegram", {}),
    "shop": SourceSpec("shopify", {}),
}


def form(key: str, at: datetime, **fields: Any) -> Envelope:
    body = json.dumps({k: v for k, v in fields.items() if v is not None}).encode()
    return Envelope(
        key=f"form:{key}", channel="form", connector="site-form", payload=body,
        content_type="application/json", received_at=at,
    )  # fmt: skip


def telegram(key: str, at: datetime, user_id: int, *, phone: str | None = None, text: str = "Hi") -> Envelope:
    """A message from a Telegram user; with `phone`, the user shared their contact card."""
    message: dict[str, Any] = {
        "message_id": abs(hash(key)) % 10_000,
        "from": {"id": user_id, "is_bot": False, "first_name": "Ivan"},
        "chat": {"id": user_id, "type": "private"},
        "date": int(at.timestamp()),
    }
    if phone:
        message["contact"] = {"phone_number": phone, "first_name": "Ivan", "user_id": user_id}
    else:
        message["text"] = text
    update = {"update_id": abs(hash(key)) % 1_000_000, "message": message}
    return Envelope(
        key=f"telegram:{key}", channel="chat", connector="bot", payload=json.dumps(update).encode(),
        content_type="application/json", received_at=at,
    )  # fmt: skip


def shopify_order(
    key: str,
    at: datetime,
    order_id: int,
    *,
    email: str | None = None,
    phone: str | None = None,
    customer_id: int | None = None,
    status: str = "pending",
    updated_at: datetime | None = None,
) -> Envelope:
    order = {
        "id": order_id,
        "name": f"#{order_id}",
        "email": email,
        "phone": phone,
        "created_at": at.isoformat(),
        "updated_at": (updated_at or at).isoformat(),
        "total_price": "10.00",
        "currency": "EUR",
        "financial_status": status,
        "line_items": [{"name": "Mug", "quantity": 1, "price": "10.00"}],
        "customer": {"id": customer_id, "first_name": "Ivan", "last_name": "Petrov"} if customer_id else None,
    }
    return Envelope(
        key=f"shopify:{key}", channel="shop", connector="shop", payload=json.dumps(order).encode(),
        content_type="application/json", received_at=at, meta={"topic": "orders/create", "shop": "t.myshopify.com"},
    )  # fmt: skip


def shopify_refund(key: str, at: datetime, order_id: int) -> Envelope:
    """A Shopify refund: it names its order only, never the customer."""
    refund = {"id": abs(hash(key)) % 1_000_000, "order_id": order_id, "created_at": at.isoformat()}
    return Envelope(
        key=f"shopify:{key}", channel="shop", connector="shop", payload=json.dumps(refund).encode(),
        content_type="application/json", received_at=at, meta={"topic": "refunds/create", "shop": "t.myshopify.com"},
    )  # fmt: skip


async def store_retrying(worker: IntakePipeline, batch: list[Envelope], tries: int = 30) -> None:
    """Store as the consumer does: a transaction that lost a race to another worker is tried again.

    No pause between tries: the loser learns of the conflict only once the winner has committed
    (PostgreSQL waits on the uncommitted unique entry; SQLite on its busy timeout), so the next try
    finds the winner's rows.
    """
    rows = [worker.prepare(e) for e in batch]
    for attempt in range(tries):
        try:
            await worker.store(rows)
            return
        except Exception:  # a unique conflict or a lock timeout
            if attempt == tries - 1:
                raise


async def table(engine: AsyncEngine, model: Any, *where: Any) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        query = select(model.__table__).where(*where) if where else select(model.__table__)
        return [dict(r) for r in (await conn.execute(query)).mappings()]


async def live_contacts(engine: AsyncEngine) -> list[dict[str, Any]]:
    return await table(engine, Contact, Contact.__table__.c.merged_into.is_(None))


async def live_leads(engine: AsyncEngine) -> list[dict[str, Any]]:
    return await table(engine, Lead, Lead.__table__.c.merged_into.is_(None))


async def canonical_state(engine: AsyncEngine) -> dict[str, Any]:
    """What must not depend on processing order: contacts and leads as groups of inquiry keys, orders by key.

    Ids are random, so each contact is named by its identifiers and inquiries, each lead by its inquiries.
    """
    inquiries = await table(engine, Inquiry)
    key_of = {i["id"]: i["key"] for i in inquiries}
    contacts: dict[str, set[str]] = {c["id"]: set() for c in await live_contacts(engine)}
    leads: dict[str, set[str]] = {lead["id"]: set() for lead in await live_leads(engine)}
    for inquiry in inquiries:
        if inquiry["contact_id"] is not None:
            contacts[inquiry["contact_id"]].add(inquiry["key"])
        if inquiry["lead_id"] is not None:
            leads[inquiry["lead_id"]].add(inquiry["key"])
    identifiers: dict[str, set[tuple[str, str]]] = {}
    for ident in await table(engine, ContactIdentifier):
        identifiers.setdefault(ident["contact_id"], set()).add((ident["kind"], ident["value"]))
    lead_rows = {lead["id"]: lead for lead in await live_leads(engine)}
    return {
        "contacts": sorted(
            (tuple(sorted(keys)), tuple(sorted(identifiers.get(cid, ())))) for cid, keys in contacts.items()
        ),
        "leads": sorted(
            (tuple(sorted(keys)), lead_rows[lid]["channel"], lead_rows[lid]["status"]) for lid, keys in leads.items()
        ),
        "orders": sorted(
            (o["external_id"], o["status"], tuple(sorted(contacts.get(o["contact_id"], ()))))
            for o in await table(engine, Order)
        ),
        "inquiries": sorted(key_of.values()),
    }
