"""Orders in the intake transaction, against the real database: upsert by (connector, external id), one event per
transition, no regression from an older update, one lead per new order and none for its status updates."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.envelope import Envelope
from leadhub.hub.logging import redact_text
from leadhub.pipelines.errors import PermanentError
from leadhub.pipelines.intake import IntakePipeline
from leadhub.pipelines.model import Identity, InquiryDraft, SourceSpec
from leadhub.pipelines.orders import OrderDraft, money
from leadhub.pipelines.parsers import PARSERS
from leadhub.store.models import Contact, Inquiry, Lead, Order, OutboxEvent
from tests.store.envelopes import SOURCES, live_contacts, live_leads, shopify_order, shopify_refund, table

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _parser(envelope: Envelope, options: dict[str, Any]) -> InquiryDraft:
    """A stand-in shop parser: the test puts the order on the envelope's meta-keyed table below."""
    status, minutes, email, partial = DRAFTS[envelope.key]
    order = OrderDraft(
        external_id="1001",
        status=status,
        provider_status=f"p-{status}",
        number="1001",
        total="10.00" if not partial else None,
        currency="USD",
        items=[{"name": "Mug", "quantity": 1}],
        customer={"email": email} if email else {},
        updated_at=T0 + timedelta(minutes=minutes),
        partial=partial,
    )
    draft = InquiryDraft(envelope=envelope, identity=Identity(email=email), order=order)
    draft.opens_lead = not partial
    return draft


DRAFTS: dict[str, tuple[str, int, str | None, bool]] = {}


@pytest.fixture
def pipeline(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> IntakePipeline:
    monkeypatch.setitem(PARSERS, "test-shop", _parser)
    DRAFTS.clear()
    return IntakePipeline(engine, {"shop": SourceSpec("test-shop")}, clock=lambda: T0 + timedelta(hours=1))


def _envelope(key: str, status: str, minutes: int, email: str | None = "buyer@example.com", partial: bool = False):
    DRAFTS[key] = (status, minutes, email, partial)
    return Envelope(key=key, channel="shop", connector="shop", payload=b"{}", content_type="application/json")


async def _store(pipeline: IntakePipeline, *envelopes: Envelope) -> None:
    await pipeline.store([pipeline.prepare(e) for e in envelopes])


async def _orders(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return (await conn.execute(select(Order.__table__))).mappings().all()


async def _events(engine: AsyncEngine) -> list[tuple[str, dict[str, Any]]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(OutboxEvent.type, OutboxEvent.data).order_by(OutboxEvent.id))
        return [(t, d) for t, d in rows if t.startswith("order.")]


async def _count(engine: AsyncEngine, model: Any) -> int:
    async with engine.connect() as conn:
        return len((await conn.execute(select(model.__table__.c.id))).all())


@pytest.mark.parametrize("one_batch", [False, True], ids=["separate-batches", "one-batch"])
async def test_create_paid_fulfilled_is_one_order_with_one_event_per_transition(
    pipeline: IntakePipeline, engine: AsyncEngine, one_batch: bool
) -> None:
    envelopes = [_envelope("a", "new", 0), _envelope("b", "paid", 1), _envelope("c", "fulfilled", 2)]
    if one_batch:
        await _store(pipeline, *envelopes)
    else:
        for envelope in envelopes:
            await _store(pipeline, envelope)
    [order] = await _orders(engine)
    assert order["status"] == "fulfilled" and order["provider_status"] == "p-fulfilled"
    assert order["paid_at"] is not None and order["fulfilled_at"] is not None and order["completed_at"] is None
    events = await _events(engine)
    assert [t for t, _ in events] == [
        "order.created",
        "order.status_changed",
        "order.paid",
        "order.status_changed",
        "order.fulfilled",
    ]
    changes = [(d["from"], d["to"]) for t, d in events if t == "order.status_changed"]
    assert changes == [("new", "paid"), ("paid", "fulfilled")]
    assert {d["order_id"] for _, d in events} == {order["id"]}
    # One lead for the new order; the status updates are inquiries on that lead.
    assert await _count(engine, Lead) == 1
    async with engine.connect() as conn:
        lead_ids = {r for (r,) in await conn.execute(select(Inquiry.lead_id))}
    assert lead_ids == {order["lead_id"]} and order["lead_id"] is not None


async def test_an_older_update_never_regresses_the_status(pipeline: IntakePipeline, engine: AsyncEngine) -> None:
    await _store(pipeline, _envelope("a", "new", 0), _envelope("c", "completed", 10))
    await _store(pipeline, _envelope("b", "paid", 5))  # arrives late, describes an older state
    [order] = await _orders(engine)
    assert order["status"] == "completed" and order["paid_at"] is None
    assert [t for t, _ in await _events(engine)].count("order.status_changed") == 1
    async with engine.connect() as conn:
        meta = (await conn.execute(select(Inquiry.meta).where(Inquiry.key == "b"))).scalar_one()
    assert meta["order_update"].startswith("ignored")


async def test_same_time_never_moves_back_but_a_newer_cancel_does(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    await _store(pipeline, _envelope("a", "paid", 0))
    await _store(pipeline, _envelope("b", "new", 0))
    assert (await _orders(engine))[0]["status"] == "paid"
    await _store(pipeline, _envelope("c", "cancelled", 1))
    [order] = await _orders(engine)
    assert order["status"] == "cancelled" and order["cancelled_at"] is not None
    assert [t for t, _ in await _events(engine)] == [
        "order.created",
        "order.paid",
        "order.status_changed",
        "order.cancelled",
    ]


async def test_redelivery_changes_nothing(pipeline: IntakePipeline, engine: AsyncEngine) -> None:
    await _store(pipeline, _envelope("a", "new", 0))
    await _store(pipeline, _envelope("a", "new", 0), _envelope("a", "new", 0))
    assert len(await _orders(engine)) == 1 and len(await _events(engine)) == 1


@pytest.mark.parametrize("arrival", ["separate-batches", "one-batch", "refund-first-in-one-batch"])
async def test_a_refund_without_identity_joins_the_orders_contact(
    pipeline: IntakePipeline, engine: AsyncEngine, arrival: str
) -> None:
    envelopes = [_envelope("a", "paid", 0), _envelope("r", "refunded", 3, email=None, partial=True)]
    if arrival == "separate-batches":
        for envelope in envelopes:
            await _store(pipeline, envelope)
    else:
        await _store(pipeline, *(envelopes if arrival == "one-batch" else envelopes[::-1]))
    [order] = await _orders(engine)
    assert order["status"] == "refunded" and order["total"] == "10.00"  # a partial update keeps the totals
    async with engine.connect() as conn:
        contacts = {r for (r,) in await conn.execute(select(Inquiry.contact_id))}
    assert contacts == {order["contact_id"]}
    assert await _count(engine, Lead) == 1


def test_money_is_exact_text_and_rejects_garbage() -> None:
    assert money("403", "total") == "403.00"
    assert money(19.9, "total") == "19.90"
    assert money("1,5", "total") == "1.50"
    assert money("0.125", "total") == "0.125"
    for bad in ("abc", [1], True, "NaN", "1e30"):
        with pytest.raises(PermanentError, match="total"):
            money(bad, "total")


@pytest.mark.parametrize(
    ("value", "shown"), [("100000000000000000000", "'1e+20'"), (-12345678901234567, "'-1.23457e+16'")]
)
def test_an_amount_out_of_range_is_told_in_a_form_the_log_does_not_take_for_a_phone(value: object, shown: str) -> None:
    """Quoted as written, a long amount was masked in the log as a phone number: `payment.amount is out of range:
    '***00'`, so the dead letter's reason said nothing. Its magnitude is not a digit run the log masks."""
    with pytest.raises(PermanentError) as caught:
        money(value, "payment.amount")
    reason = str(caught.value)
    assert reason == f"payment.amount is out of range: {shown}; an amount must be below 1e15"
    assert redact_text(reason) == reason


def test_a_status_outside_the_set_is_refused() -> None:
    with pytest.raises(PermanentError, match="not one of new, paid"):
        OrderDraft(external_id="1", status="shipped")


async def test_an_order_first_seen_through_a_refund_gets_its_contact_and_lead_later(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    await _store(pipeline, _envelope("r", "refunded", 3, email=None, partial=True))
    [order] = await _orders(engine)
    assert (order["status"], order["lead_id"], order["customer"]) == ("refunded", None, {})
    await _store(pipeline, _envelope("a", "paid", 0))  # the order itself, older than the refund
    [order] = await _orders(engine)
    assert order["status"] == "refunded" and order["total"] == "10.00"  # details filled, status kept
    async with engine.connect() as conn:
        contact_id, lead_id = (
            await conn.execute(select(Inquiry.contact_id, Inquiry.lead_id).where(Inquiry.key == "a"))
        ).one()
    assert (order["contact_id"], order["lead_id"]) == (contact_id, lead_id) and lead_id is not None
    assert await _count(engine, Lead) == 1


@pytest.mark.parametrize("one_batch", [False, True], ids=["separate-batches", "one-batch"])
async def test_a_refund_before_its_order_makes_no_contact_and_joins_the_orders_contact_later(
    engine: AsyncEngine, one_batch: bool
) -> None:
    """Shopify does not keep webhook order. A refund first got a new empty contact, which kept the refund and
    `order.refunded` forever while the order moved to the buyer."""
    shop = IntakePipeline(engine, SOURCES, default_region="RU", clock=lambda: T0 + timedelta(hours=3))
    await _store(shop, shopify_refund("r1", T0 + timedelta(hours=2), 9001))
    assert await _count(engine, Contact) == 0
    (refund,) = await table(engine, Inquiry)
    assert refund["contact_id"] is None and refund["lead_id"] is None
    assert {t: d["contact_id"] for t, d in await _events(engine)} == {"order.created": None, "order.refunded": None}
    later = [shopify_refund("r2", T0 + timedelta(hours=2, minutes=30), 9001)]  # one more before the order
    if not one_batch:
        await _store(shop, *later)
        later = []
    await _store(shop, *later, shopify_order("o1", T0, 9001, email="ivan@mail.example", status="paid"))
    (contact,) = await table(engine, Contact)
    assert contact["email"] == "ivan@mail.example"
    (order,) = await _orders(engine)
    assert (order["contact_id"], order["status"]) == (contact["id"], "refunded")
    assert {i["key"]: i["contact_id"] for i in await table(engine, Inquiry)} == dict.fromkeys(
        ["shopify:r1", "shopify:r2", "shopify:o1"], contact["id"]
    )


@pytest.mark.parametrize("one_batch", [False, True], ids=["order-then-refund", "refund-first-in-one-batch"])
async def test_a_refund_goes_to_the_orders_contact_however_the_shop_named_the_buyer(
    engine: AsyncEngine, one_batch: bool
) -> None:
    """The order's contact was found by the shop's customer id only: the refund borrowed no email or phone from
    it and got a new empty contact."""
    shop = IntakePipeline(engine, SOURCES, default_region="RU", clock=lambda: T0 + timedelta(hours=3))
    order, refund = shopify_order("o1", T0, 9001, customer_id=77, status="paid"), shopify_refund("r1", T0, 9001)
    if one_batch:
        await _store(shop, refund, order)
    else:
        await _store(shop, order)
        await _store(shop, refund)
        assert {d["contact_id"] for _, d in await _events(engine)} == {(await table(engine, Contact))[0]["id"]}
    (contact,) = await table(engine, Contact)
    assert {i["key"]: i["contact_id"] for i in await table(engine, Inquiry)} == {
        "shopify:o1": contact["id"],
        "shopify:r1": contact["id"],
    }


def _shopify_update(key: str, at: datetime, email: str | None, *, fulfilled: bool = False) -> Envelope:
    """An order entered without an email (Shopify POS, a draft order), updated as staff add the buyer's."""
    body = {
        "id": 5005, "name": "#5005", "email": email, "created_at": T0.isoformat(), "updated_at": at.isoformat(),
        "total_price": "10.00", "currency": "EUR", "financial_status": "paid",
        "fulfillment_status": "fulfilled" if fulfilled else None, "closed_at": at.isoformat() if fulfilled else None,
        "shipping_address": {"first_name": "Ivan", "last_name": "Petrov", "city": "Riga"},
    }  # fmt: skip
    return Envelope(
        key=f"shopify:{key}", channel="shop", connector="shop", payload=json.dumps(body).encode(),
        content_type="application/json", meta={"topic": "orders/updated", "shop": "t.myshopify.com"},
    )  # fmt: skip


@pytest.mark.parametrize("buyer", ["new", "known"])
async def test_an_order_placed_without_an_email_goes_to_the_buyer_once_it_names_them(
    engine: AsyncEngine, buyer: str
) -> None:
    """Found by an audit: an order whose first delivery named nobody got an empty contact (its lead needs one), and
    an update adding the buyer's email only made the buyer a contact beside it: the order, its lead and its
    `order.completed` stayed with the empty contact, so the survey (`if: contact.email`) never went out."""
    shop = IntakePipeline(engine, SOURCES, default_region="RU", clock=lambda: T0 + timedelta(hours=3))
    if buyer == "known":
        await _store(shop, shopify_order("earlier", T0 - timedelta(days=30), 4004, email="ivan@mail.example"))
    await _store(shop, _shopify_update("u1", T0, None))
    await _store(shop, _shopify_update("u2", T0 + timedelta(minutes=5), "ivan@mail.example"))
    await _store(shop, _shopify_update("u3", T0 + timedelta(minutes=9), "ivan@mail.example", fulfilled=True))
    (contact,) = await live_contacts(engine)
    assert contact["email"] == "ivan@mail.example"
    order = next(o for o in await _orders(engine) if o["external_id"] == "5005")
    assert (order["status"], order["contact_id"]) == ("completed", contact["id"])
    assert {lead["contact_id"] for lead in await live_leads(engine)} == {contact["id"]}
    assert {i["contact_id"] for i in await table(engine, Inquiry)} == {contact["id"]}
    (completed,) = [d for t, d in await _events(engine) if t == "order.completed"]
    assert completed["contact_id"] == contact["id"]
