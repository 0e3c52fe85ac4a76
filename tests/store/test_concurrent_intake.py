"""Concurrent transactions about one person, against the real database: workers that store items about the same
new phone or email, order or lead window at the same moment end in one contact, one order and one lead, and a
worker that loses the race stores its item on the consumer's immediate one-by-one retry (no redelivery needed).
Merges and unmerges racing an intake of the same person leave every inquiry with the contact its identifiers
name. On PostgreSQL the transactions are held open at chosen points so they really overlap; on SQLite the
database's write lock serializes them, which the same assertions check."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from leadhub.envelope import Envelope
from leadhub.pipelines.intake import IntakePipeline
from leadhub.store import bulk, identity
from leadhub.store.intake import write_batch
from leadhub.store.models import Contact, ContactIdentifier, ContactMerge, Inquiry, Lead, Order, OutboxEvent
from leadhub.store.policy import IdentityPolicy
from tests.helpers import wait_for
from tests.store.envelopes import SOURCES, form, live_contacts, live_leads, shopify_order, table
from tests.store.races import meet_on_first_try

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = 24 * HOUR
NOW = T0 + 60 * DAY


def make_pipeline(engine: AsyncEngine, now: datetime = NOW) -> IntakePipeline:
    return IntakePipeline(engine, SOURCES, default_region="RU", policy=IdentityPolicy(), clock=lambda: now)


async def store(pipeline: IntakePipeline, *envelopes: Envelope) -> None:
    await pipeline.store([pipeline.prepare(e) for e in envelopes])


async def tries_as_the_consumer(pipeline: IntakePipeline, envelopes: list[Envelope]) -> int:
    """Store like `InboundConsumer`: the batch, then (once it failed) each envelope alone, at once.

    Returns the number of tries; a third would be a redelivery, one of the few before a dead letter.
    """
    rows = [pipeline.prepare(e) for e in envelopes]
    try:
        await pipeline.store(rows)
        return 1
    except Exception:  # the consumer's broad catch: a lost race is an IntegrityError
        pass
    for row in rows:
        await pipeline.store([row])
    return 2


async def race(
    monkeypatch: pytest.MonkeyPatch, engine: AsyncEngine, batches: list[list[Envelope]], *, overlap: bool = True
) -> list[int]:
    if overlap:
        meet_on_first_try(monkeypatch, engine.dialect.name, len(batches))
    workers = [make_pipeline(engine) for _ in batches]
    return list(
        await asyncio.wait_for(
            asyncio.gather(*(tries_as_the_consumer(w, b) for w, b in zip(workers, batches, strict=True))), 20
        )
    )


async def test_workers_storing_one_new_person_at_once_make_one_contact_and_one_lead(
    monkeypatch: pytest.MonkeyPatch, engine: AsyncEngine
) -> None:
    spellings = ["8 (916) 555-00-11", "+7 916 555 00 11", "89165550011", "+7-916-555-00-11"]
    batches = [
        [form(f"new-{n}", T0 + n * HOUR, email="Same.Person@X.example" if n % 2 else "same.person@x.example", phone=p)]
        for n, p in enumerate(spellings)
    ]
    tries = await race(monkeypatch, engine, batches)
    assert max(tries) <= 2, tries
    contacts = await live_contacts(engine)
    assert len(contacts) == 1 and len(await table(engine, Contact)) == 1
    assert contacts[0]["phone"] == "+79165550011"
    assert len(await table(engine, Inquiry)) == 4
    (lead,) = await live_leads(engine)
    assert {i["lead_id"] for i in await table(engine, Inquiry)} == {lead["id"]}
    assert lead["first_touch_at"].replace(tzinfo=UTC) == T0
    assert len(await table(engine, OutboxEvent, OutboxEvent.__table__.c.type == "contact.created")) == 1


async def test_two_workers_with_the_same_new_people_in_batches_big_enough_for_copy(
    monkeypatch: pytest.MonkeyPatch, engine: AsyncEngine
) -> None:
    """On PostgreSQL such batches go in by COPY, whose unique violation comes from asyncpg unwrapped: the loser's
    transaction must still roll back cleanly and each of its envelopes be stored on the one-by-one retry."""
    people = range(bulk.COPY_FROM + 4)
    batches = [
        [form(f"{worker}-{n}", T0 + n * HOUR, email=f"person{n}@x.example", phone=f"+7916{n:07d}") for n in people]
        for worker in ("w1", "w2")
    ]
    tries = await race(monkeypatch, engine, batches)
    assert max(tries) <= 2, tries
    assert len(await table(engine, Contact)) == len(people)
    assert len(await table(engine, Inquiry)) == 2 * len(people)
    assert len(await live_leads(engine)) == len(people)


async def test_one_new_order_from_two_deliveries_at_once_is_one_order_with_one_lead(
    monkeypatch: pytest.MonkeyPatch, engine: AsyncEngine
) -> None:
    created = shopify_order("o-create", T0, 4242, email="buyer@x.example")
    paid = shopify_order("o-paid", T0 + HOUR, 4242, email="buyer@x.example", status="paid", updated_at=T0 + HOUR)
    tries = await race(monkeypatch, engine, [[created], [paid]])
    assert max(tries) <= 2, tries
    (order,) = await table(engine, Order)
    assert order["status"] == "paid"
    (lead,) = await live_leads(engine)
    assert order["lead_id"] == lead["id"]
    assert {(i["contact_id"], i["lead_id"]) for i in await table(engine, Inquiry)} == {
        (order["contact_id"], lead["id"])
    }
    assert len(await table(engine, OutboxEvent, OutboxEvent.__table__.c.type == "order.created")) == 1


async def test_a_known_person_reaching_in_on_several_workers_at_once_opens_one_lead(
    monkeypatch: pytest.MonkeyPatch, engine: AsyncEngine
) -> None:
    """The contact exists, so no unique key is at stake: its row lock (PostgreSQL) or the write lock (SQLite)
    must keep the workers from each opening a lead in the same window."""
    pipeline = make_pipeline(engine)
    await store(pipeline, form("first", T0, email="known@x.example", phone="+79160001100"))
    later = T0 + 10 * DAY  # outside the first lead's window: the next touch opens a new lead
    batches = [
        [form(f"again-{n}", later + n * HOUR, email="known@x.example" if n % 2 else None, phone="89160001100")]
        for n in range(4)
    ]
    tries = await race(monkeypatch, engine, batches, overlap=False)
    assert tries == [1, 1, 1, 1]
    leads = sorted(await live_leads(engine), key=lambda lead: lead["first_touch_at"])
    assert len(leads) == 2
    assert leads[1]["first_touch_at"].replace(tzinfo=UTC) == later
    assert leads[1]["last_touch_at"].replace(tzinfo=UTC) == later + 3 * HOUR


async def _lock_waiters(engine: AsyncEngine) -> int:
    """Transactions of this test's database waiting for a lock another one holds (PostgreSQL)."""
    async with engine.connect() as conn:
        query = text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return int((await conn.execute(query)).scalar_one())


async def _until_waiting(engine: AsyncEngine, waiters: int, *tasks: asyncio.Task[Any]) -> None:
    """Until `waiters` transactions wait for a lock (PostgreSQL), or at once on SQLite, where they wait on the
    database's write lock, which nothing outside shows. A task that ended meanwhile fails the test with its error."""

    async def probe() -> bool:
        for task in tasks:
            if task.done():
                task.result()
                return True
        return engine.dialect.name != "postgresql" or await _lock_waiters(engine) >= waiters

    await wait_for(probe, timeout=10, what=f"{waiters} transactions waiting for a lock")


async def _contact_of(engine: AsyncEngine, key: str) -> str:
    (inquiry,) = await table(engine, Inquiry, Inquiry.__table__.c.key == f"form:{key}")
    return str(inquiry["contact_id"])


async def _merged(engine: AsyncEngine) -> str:
    """The contact merged into another (the survivor is the older one, or the lower id at the same age)."""
    (contact,) = await table(engine, Contact, Contact.__table__.c.merged_into.is_not(None))
    return str(contact["id"])


async def _phone_owner(conn: AsyncConnection, phone: str) -> str:
    query = select(ContactIdentifier.__table__.c.contact_id).where(ContactIdentifier.__table__.c.value == phone)
    return str((await conn.execute(query)).scalar_one())


async def _begun(engine: AsyncEngine) -> AsyncConnection:
    conn = await engine.connect()
    await conn.begin()
    return conn


async def test_an_intake_waiting_on_an_unmerge_goes_to_the_contact_the_unmerge_gave_its_phone_back(
    engine: AsyncEngine,
) -> None:
    """The unmerge moves the phone back to B while the intake waits for the contacts' locks; the intake must then
    read where the phone is now, not where it was when it first looked."""
    pipeline = make_pipeline(engine)
    await store(make_pipeline(engine, NOW - DAY), form("a", T0, email="a@x.example"))  # older: A survives
    await store(pipeline, form("b", T0 + HOUR, phone="+79160002200"))
    b = await _contact_of(engine, "b")
    await store(pipeline, form("ab", T0 + 2 * HOUR, email="a@x.example", phone="+79160002200"))
    assert await _merged(engine) == b

    unmerging = await _begun(engine)
    try:
        await identity.unmerge(unmerging, b, NOW)
        assert await _phone_owner(unmerging, "+79160002200") == b
        intake_task = asyncio.create_task(store(pipeline, form("p", T0 + 3 * HOUR, phone="8 916 000 22 00")))
        await _until_waiting(engine, 1, intake_task)
        await unmerging.commit()
    finally:
        await unmerging.close()
    await asyncio.wait_for(intake_task, 20)
    assert await _contact_of(engine, "p") == b
    (inquiry,) = await table(engine, Inquiry, Inquiry.__table__.c.key == "form:p")
    (lead,) = await table(engine, Lead, Lead.__table__.c.id == inquiry["lead_id"])
    assert lead["contact_id"] == b


async def test_two_unmerges_of_one_merge_at_once_take_it_back_once(engine: AsyncEngine) -> None:
    """A double click or two admins: the second finds the merge undone already and changes nothing."""
    pipeline = make_pipeline(engine)
    await store(make_pipeline(engine, NOW - DAY), form("a", T0, email="a@x.example"))  # older: A survives
    await store(pipeline, form("b", T0 + HOUR, phone="+79160003300"))
    await store(pipeline, form("ab", T0 + 2 * HOUR, email="a@x.example", phone="+79160003300"))
    merged = await _merged(engine)

    async def unmerge_in_own_transaction() -> None:
        async with engine.begin() as conn:
            await identity.unmerge(conn, merged, NOW)

    first = await _begun(engine)
    try:
        await identity.unmerge(first, merged, NOW)
        second = asyncio.create_task(unmerge_in_own_transaction())
        await _until_waiting(engine, 1, second)
        await first.commit()
    finally:
        await first.close()
    with pytest.raises(identity.UnmergeError, match="already undone"):
        await asyncio.wait_for(second, 20)
    assert len(await table(engine, OutboxEvent, OutboxEvent.__table__.c.type == "contact.unmerged")) == 1
    (merge,) = await table(engine, ContactMerge)
    assert merge["undone_at"] is not None


async def test_an_intake_resolved_through_a_merge_waits_for_the_survivor_and_joins_its_lead(
    engine: AsyncEngine,
) -> None:
    """B is merged into A while one intake (B's phone) waits for B and another (A's email) for A. The first then
    learns B became A: it must lock A too, or it reads A's open leads while the other is opening one, and the
    person gets two leads for one request."""
    pipeline = make_pipeline(engine)
    await store(make_pipeline(engine, NOW - DAY), form("a", T0, email="a@x.example"))  # older: A survives
    await store(pipeline, form("b", T0 + HOUR, phone="+79160004400"))
    later = T0 + 10 * DAY  # outside the merge's lead window: both later inquiries are one new request

    merging = await _begun(engine)
    by_email = await _begun(engine)
    try:
        rows = [pipeline.prepare(form("ab", T0 + 2 * HOUR, email="a@x.example", phone="+79160004400"))]
        await write_batch(merging, rows, NOW, pipeline.policy)
        email_task = asyncio.create_task(
            write_batch(by_email, [pipeline.prepare(form("e", later, email="a@x.example"))], NOW, pipeline.policy)
        )
        await _until_waiting(engine, 1, email_task)
        phone_task = asyncio.create_task(store(pipeline, form("p", later + HOUR, phone="89160004400")))
        await _until_waiting(engine, 2, email_task, phone_task)
        await merging.commit()
        await asyncio.wait_for(email_task, 20)  # written, not committed: it holds A
        await _until_waiting(engine, 1, phone_task)
        await by_email.commit()
    finally:
        await merging.close()
        await by_email.close()
    await asyncio.wait_for(phone_task, 20)
    (survivor,) = await live_contacts(engine)
    leads = [lead for lead in await live_leads(engine) if lead["first_touch_at"].replace(tzinfo=UTC) >= later]
    assert len(leads) == 1, leads
    assert leads[0]["contact_id"] == survivor["id"]
    assert {await _contact_of(engine, k) for k in ("e", "p")} == {survivor["id"]}
