"""Identity resolution against the real database: one person is one contact and one lead however they reach in,
in whatever order; a wrong merge is taken back exactly; conflicting consent is never merged automatically."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.envelope import Envelope
from leadhub.pipelines.intake import IntakePipeline
from leadhub.store import contact_review, identity, kept_apart, queries, trigger_data
from leadhub.store.models import (
    Contact,
    ContactIdentifier,
    ContactMerge,
    EmailSuppression,
    Inquiry,
    Lead,
    Order,
    OutboxEvent,
)
from leadhub.store.policy import IdentityPolicy
from tests.store.envelopes import (
    SOURCES,
    canonical_state,
    form,
    live_contacts,
    live_leads,
    shopify_order,
    store_retrying,
    table,
)
from tests.store.envelopes import telegram as telegram_message

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def make_pipeline(engine: AsyncEngine, **policy: Any) -> IntakePipeline:
    return IntakePipeline(
        engine, SOURCES, default_region="RU", policy=IdentityPolicy(**policy), clock=lambda: T0 + 30 * 24 * HOUR
    )


@pytest.fixture
def pipeline(engine: AsyncEngine) -> IntakePipeline:
    return make_pipeline(engine)


async def store(pipeline: IntakePipeline, *envelopes: Envelope) -> None:
    await pipeline.store([pipeline.prepare(e) for e in envelopes])


async def events(engine: AsyncEngine, kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in await table(engine, OutboxEvent, OutboxEvent.__table__.c.type == kind)]


async def test_the_same_phone_spelled_five_ways_is_one_contact_and_one_lead(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    spellings = ["8 (916) 123-45-67", "+7 916 123 45 67", "+7-916-123-45-67", "89161234567", "7 (916) 1234567 доб. 12"]
    for n, phone in enumerate(spellings):
        await store(pipeline, form(f"p{n}", T0 + n * HOUR, name="IVAN PETROV", phone=phone))
    contacts = await live_contacts(engine)
    assert len(contacts) == 1
    assert contacts[0]["phone"] == "+79161234567"
    assert contacts[0]["name"] == "Ivan Petrov"
    assert [i["value"] for i in await table(engine, ContactIdentifier)] == ["+79161234567"]
    leads = await live_leads(engine)
    assert len(leads) == 1
    assert leads[0]["first_touch_at"].replace(tzinfo=UTC) == T0
    assert leads[0]["last_touch_at"].replace(tzinfo=UTC) == T0 + 4 * HOUR
    assert {i["lead_id"] for i in await table(engine, Inquiry)} == {leads[0]["id"]}


def one_person_three_channels() -> list[Envelope]:
    """Form with email and phone, Telegram with the shared contact card, a Shopify order by email."""
    return [
        form("f1", T0, name="Ivan", email="Ivan.Petrov@Mail.example", phone="8 916 123-45-67", utm_source="ads"),
        telegram_message("t1", T0 + HOUR, 5550001, phone="+79161234567"),
        shopify_order("s1", T0 + 2 * HOUR, 9001, email="ivan.petrov@mail.example", customer_id=77),
    ]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))), ids=lambda o: "-".join(map(str, o)))
async def test_one_person_by_form_telegram_and_shop_is_one_contact_and_one_lead_in_any_order(
    pipeline: IntakePipeline, engine: AsyncEngine, order: tuple[int, ...]
) -> None:
    envelopes = one_person_three_channels()
    for index in order:
        await store(pipeline, envelopes[index])
    contacts = await live_contacts(engine)
    assert len(contacts) == 1, contacts
    kinds = {(i["kind"], i["value"]) for i in await table(engine, ContactIdentifier)}
    assert kinds == {
        ("email", "ivan.petrov@mail.example"),
        ("phone", "+79161234567"),
        ("messenger", "telegram:5550001"),
        ("customer", "shop:77"),
    }
    leads = await live_leads(engine)
    assert len(leads) == 1, leads
    # First touch (the form) is the lead's source, whatever arrived first.
    assert (leads[0]["channel"], leads[0]["attribution"].get("utm_source")) == ("form", "ads")
    inquiries = await table(engine, Inquiry)
    assert {(i["contact_id"], i["lead_id"]) for i in inquiries} == {(contacts[0]["id"], leads[0]["id"])}
    (order_row,) = await table(engine, Order)
    assert (order_row["contact_id"], order_row["lead_id"]) == (contacts[0]["id"], leads[0]["id"])


async def test_telegram_user_id_alone_finds_the_contact_again(pipeline: IntakePipeline, engine: AsyncEngine) -> None:
    await store(pipeline, telegram_message("t1", T0, 42, phone="+79161234567"))
    await store(pipeline, telegram_message("t2", T0 + 5 * 24 * HOUR, 42, text="any news?"))
    assert len(await live_contacts(engine)) == 1
    assert len(await live_leads(engine)) == 2  # five days apart: two requests


@pytest.mark.parametrize("one_batch", [False, True], ids=["separate-batches", "one-batch"])
async def test_a_contact_first_seen_without_an_email_takes_it_from_a_later_inquiry(
    pipeline: IntakePipeline, engine: AsyncEngine, one_batch: bool
) -> None:
    """Someone who wrote on Telegram, then ordered with an email, stayed `email=None`: rules on `contact.email`
    (the post-sale survey) never fired for them. Empty columns are filled; what the contact has is kept."""
    from leadhub.store import trigger_data

    envelopes = [
        telegram_message("t1", T0, 5550001, phone="79161234567"),
        shopify_order("s1", T0 + 24 * HOUR, 9001, email="Iv.An+shop@gmail.com", phone="+79161234567", status="paid"),
        form(
            "f1", T0 + 48 * HOUR, name="Someone Else", email="other@mail.example", phone="+79161234567", company="ACME"
        ),
    ]
    if one_batch:
        await store(pipeline, *envelopes)
    else:
        for envelope in envelopes:
            await store(pipeline, envelope)
    (contact,) = await live_contacts(engine)
    async with engine.connect() as conn:
        (seen,) = await trigger_data.load_objects_many(conn, [{"contact_id": contact["id"]}], [("contact",)])
    assert seen["contact"]["email"] == "iv.an+shop@gmail.com"  # as written, not the folded identifier
    assert (contact["name"], contact["phone"], contact["company"]) == ("Ivan", "+79161234567", "ACME")


async def test_gmail_dots_and_plus_tags_fold_to_one_contact_unless_switched_off(engine: AsyncEngine) -> None:
    await store(
        make_pipeline(engine),
        form("g1", T0, email="J.Doe+promo@GMAIL.com"),
        form("g2", T0, email="jdoe@googlemail.com"),
    )
    (contact,) = await live_contacts(engine)
    assert contact["email"] == "j.doe+promo@gmail.com"  # the contact keeps the address as written
    assert [i["value"] for i in await table(engine, ContactIdentifier)] == ["jdoe@gmail.com"]

    plain = make_pipeline(engine, fold_email=False)
    await store(plain, form("g3", T0, email="other.person@gmail.com"), form("g4", T0, email="otherperson@gmail.com"))
    assert len(await live_contacts(engine)) == 3


async def test_switching_email_folding_on_still_finds_contacts_stored_while_it_was_off(engine: AsyncEngine) -> None:
    """Identifiers stored while LEADHUB_EMAIL_FOLDING was off hold the address as written; once it was on, the
    same person writing from the same address was looked up by the folded key only and became a second contact."""
    await store(make_pipeline(engine, fold_email=False), form("g1", T0, email="Ann.Lee+shop@gmail.com"))
    folding = make_pipeline(engine)
    await store(folding, form("g2", T0 + HOUR, email="ann.lee+shop@gmail.com"))
    (contact,) = await live_contacts(engine)
    values = sorted(i["value"] for i in await table(engine, ContactIdentifier))
    assert values == ["ann.lee+shop@gmail.com", "annlee@gmail.com"]  # the folded key joined the contact
    await store(folding, form("g3", T0 + 2 * HOUR, email="annlee@googlemail.com"))
    assert [c["id"] for c in await live_contacts(engine)] == [contact["id"]]


async def test_coalescing_window_status_and_channel_pairs(engine: AsyncEngine) -> None:
    pipeline = make_pipeline(engine, lead_windows={("shop", "shop"): timedelta(0)})
    await store(pipeline, form("a", T0, email="a@x.example"), form("b", T0 + 71 * HOUR, email="a@x.example"))
    assert len(await live_leads(engine)) == 1
    await store(pipeline, form("c", T0 + 73 * HOUR, email="a@x.example"))
    assert len(await live_leads(engine)) == 2  # 73 h after the first touch of the open lead: a new one

    # A lead the sales team closed is not joined.
    async with engine.begin() as conn:
        await conn.execute(Lead.__table__.update().values(status="won"))
    await store(pipeline, form("d", T0 + 74 * HOUR, email="a@x.example"))
    assert len([lead for lead in await live_leads(engine) if lead["status"] == "new"]) == 1

    # shop:shop is 0: every order of one person is its own lead.
    await store(
        pipeline,
        shopify_order("o1", T0, 1, email="b@x.example"),
        shopify_order("o2", T0 + HOUR, 2, email="b@x.example"),
    )
    orders = await table(engine, Order)
    assert len({o["lead_id"] for o in orders}) == 2


async def test_an_earlier_touch_processed_later_becomes_the_first_touch(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    await store(pipeline, telegram_message("late", T0 + 2 * HOUR, 7, phone="+79161234567"))
    await store(pipeline, form("early", T0, phone="+7 916 123 45 67", utm_campaign="spring"))
    (lead,) = await live_leads(engine)
    assert lead["channel"] == "form"
    assert lead["attribution"] == {"utm_campaign": "spring"}
    assert lead["first_touch_at"].replace(tzinfo=UTC) == T0
    assert lead["last_touch_at"].replace(tzinfo=UTC) == T0 + 2 * HOUR


TABLES = (Contact, ContactIdentifier, Lead, Inquiry, Order)


async def snapshot(
    engine: AsyncEngine, contact_ids: set[str], *, skip_inquiries: set[str] = frozenset()
) -> dict[str, Any]:
    """Every row that belongs to `contact_ids`, in full, per table."""
    found: dict[str, Any] = {}
    for model in TABLES:
        t = model.__table__
        column = t.c.id if model is Contact else t.c.contact_id
        async with engine.connect() as conn:
            rows = [dict(r) for r in (await conn.execute(select(t).where(column.in_(contact_ids)))).mappings()]
        if model is Inquiry:
            rows = [r for r in rows if r["id"] not in skip_inquiries]
        key = ("kind", "value") if model is ContactIdentifier else ("id",)
        found[t.name] = sorted(rows, key=lambda r: tuple(r[k] for k in key))
    return found


async def test_unmerge_restores_the_exact_previous_state(pipeline: IntakePipeline, engine: AsyncEngine) -> None:
    # Two strangers, each with a lead; one has an order.
    await store(pipeline, form("a1", T0, name="Anna", email="anna@x.example", utm_source="mail"))
    await store(pipeline, shopify_order("b1", T0 + HOUR, 501, phone="+7 916 000-11-22"))
    await store(pipeline, telegram_message("b2", T0 + 2 * HOUR, 99, phone="+79160001122"))
    before_ids = {c["id"] for c in await live_contacts(engine)}
    assert len(before_ids) == 2
    before = await snapshot(engine, before_ids)

    # A form naming both: they are one person now (and their leads, within three days, are one lead).
    linking = pipeline.prepare(form("link", T0 + 10 * 24 * HOUR, email="anna@x.example", phone="89160001122"))
    await pipeline.store([linking])
    (survivor,) = await live_contacts(engine)
    assert (
        len(
            {
                lead["id"]
                for lead in await live_leads(engine)
                if lead["first_touch_at"].replace(tzinfo=UTC) < T0 + 24 * HOUR
            }
        )
        == 1
    )
    (merge,) = await table(engine, ContactMerge)
    assert merge["inquiry_id"] == linking.id
    assert (await events(engine, "contact.merged"))[0]["merged_id"] == merge["merged_id"]

    async with engine.begin() as conn:
        await identity.unmerge(conn, merge["merged_id"], T0 + 11 * 24 * HOUR)
    after = await snapshot(engine, before_ids, skip_inquiries={linking.id})
    for name in before:
        rows_after = after[name]
        if name == "lead":  # the linking inquiry opened a lead of its own (ten days later); it stays
            rows_after = [r for r in rows_after if r["first_touch_at"].replace(tzinfo=UTC) < T0 + 24 * HOUR]
        assert rows_after == before[name], name
    assert len(await live_contacts(engine)) == 2
    with pytest.raises(identity.UnmergeError, match="already undone"):
        async with engine.begin() as conn:
            await identity.unmerge(conn, merge["id"], T0 + 12 * 24 * HOUR)
    with pytest.raises(identity.UnmergeError, match="the one that stayed"):
        await _unmerge_fresh(engine, pipeline, survivor["id"])
    assert await events(engine, "contact.unmerged")


async def test_a_folded_lead_keeps_its_managers_work_and_an_unmerge_takes_it_back(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """A manager took the stranger's lead (owner, tags, in progress); the merge folded it into the earlier new,
    unowned lead and that work was gone from the lead that stays."""
    from leadhub.store import leads as lead_store

    await store(pipeline, form("a1", T0, name="Anna", email="anna@x.example"))
    await store(pipeline, telegram_message("b1", T0 + HOUR, 99, phone="+79160001122"))
    first, second = sorted(await live_leads(engine), key=lambda lead: lead["first_touch_at"])
    worked = {"status": "in_progress", "owner": "olga", "tags": ["vip", "spring"]}
    async with engine.begin() as conn:
        await lead_store.change_lead(conn, first["id"], {"tags": ["spring"]}, T0 + 2 * HOUR)
        await lead_store.change_lead(conn, second["id"], worked, T0 + 2 * HOUR)
    before = await snapshot(engine, {first["contact_id"], second["contact_id"]})

    linking = pipeline.prepare(form("link", T0 + 10 * 24 * HOUR, email="anna@x.example", phone="89160001122"))
    await pipeline.store([linking])
    (head,) = [lead for lead in await live_leads(engine) if lead["id"] == first["id"]]
    assert (head["status"], head["owner"], head["tags"]) == ("in_progress", "olga", ["spring", "vip"])
    updated = [e for e in await events(engine, "lead.updated") if e["source"] == "merge"]
    assert [(e["lead_id"], e["changes"]) for e in updated] == [(first["id"], ["owner", "status", "tags"])]
    assert (await events(engine, "lead.owner_changed"))[-1] == {
        "lead_id": first["id"],
        "contact_id": first["contact_id"],
        "from": None,
        "to": "olga",
    }

    (merge,) = await table(engine, ContactMerge)
    async with engine.begin() as conn:
        await identity.unmerge(conn, merge["merged_id"], T0 + 11 * 24 * HOUR)
    after = await snapshot(engine, {first["contact_id"], second["contact_id"]}, skip_inquiries={linking.id})
    early = [r for r in after["lead"] if r["first_touch_at"].replace(tzinfo=UTC) < T0 + 24 * HOUR]
    assert early == before["lead"]


async def test_after_an_unmerge_every_inquiry_is_with_its_leads_contact(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """The linking form joins the nearest open lead of the two it unites (the phone's); the unmerge must not leave it
    on that lead while it names the email's contact, nor leave that lead's last touch at an inquiry it lost."""
    await store(pipeline, form("a", T0, email="anna@x.example"))
    await store(pipeline, form("b", T0 + 2 * HOUR, phone="+79160001122"))
    await store(pipeline, form("link", T0 + 3 * HOUR, email="anna@x.example", phone="89160001122"))
    (merge,) = await table(engine, ContactMerge)
    async with engine.begin() as conn:
        await identity.unmerge(conn, merge["merged_id"], T0 + 4 * HOUR)
    leads = {lead["id"]: lead for lead in await table(engine, Lead)}
    inquiries = await table(engine, Inquiry)
    assert len(await live_contacts(engine)) == 2 and len(await live_leads(engine)) == 2
    for inquiry in inquiries:
        assert inquiry["contact_id"] == leads[inquiry["lead_id"]]["contact_id"], inquiry["key"]
    for lead_id, lead in leads.items():
        touches = [i["received_at"] for i in inquiries if i["lead_id"] == lead_id]
        assert lead["last_touch_at"] == max(touches), lead_id


async def _unmerge_fresh(engine: AsyncEngine, pipeline: IntakePipeline, survivor_id: str) -> None:
    await store(pipeline, form("relink", T0 + 20 * 24 * HOUR, email="anna@x.example", phone="89160001122"))
    async with engine.begin() as conn:
        await identity.unmerge(conn, survivor_id, T0 + 21 * 24 * HOUR)


async def test_conflicting_consent_is_flagged_for_review_and_never_merged(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    await store(pipeline, form("a", T0, email="anna@x.example"))
    await store(pipeline, form("b", T0 + HOUR, phone="+79160001122", consent="yes"))
    async with engine.begin() as conn:  # Anna used the one-click unsubscribe link
        await conn.execute(
            EmailSuppression.__table__.insert().values(
                address="anna@x.example", reason="unsubscribe", detail="link", created_at=T0
            )
        )
    linking = pipeline.prepare(form("link", T0 + 2 * HOUR, email="anna@x.example", phone="89160001122"))
    await pipeline.store([linking])
    contacts = await live_contacts(engine)
    assert len(contacts) == 2
    assert all(c["review"] and c["review"]["reason"] == "consent_conflict" for c in contacts)
    assert not await table(engine, ContactMerge)
    by_email = next(c for c in contacts if c["email"] == "anna@x.example")
    (stored,) = await table(engine, Inquiry, Inquiry.__table__.c.id == linking.id)
    assert stored["contact_id"] == by_email["id"]  # the strongest identifier's contact; nothing moved
    assert len(await table(engine, ContactIdentifier)) == 2
    assert len(await events(engine, "contact.review_needed")) == 2


async def test_contacts_a_person_kept_apart_stay_apart_when_their_consent_agrees(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """Keep-apart was checked only on a consent conflict: two people a manager had told apart were merged by the
    next inquiry naming both, once neither had consent on record (or both granted)."""
    await store(pipeline, form("a", T0, email="anna@x.example"))
    await store(pipeline, form("b", T0 + HOUR, phone="+79160001122"))
    ids = [c["id"] for c in await live_contacts(engine)]
    async with engine.begin() as conn:
        await kept_apart.keep_apart(conn, ids, T0 + 2 * HOUR)
    linking = pipeline.prepare(form("link", T0 + 3 * HOUR, email="anna@x.example", phone="89160001122"))
    await pipeline.store([linking])
    assert len(await live_contacts(engine)) == 2
    assert not await table(engine, ContactMerge)
    (stored,) = await table(engine, Inquiry, Inquiry.__table__.c.id == linking.id)
    assert stored["contact_id"] in ids
    assert len(await table(engine, ContactIdentifier)) == 2  # the phone did not join Anna


@pytest.mark.parametrize("case", ["united-earlier-in-the-batch", "consent-given-earlier-in-the-batch"])
async def test_consent_given_earlier_in_the_same_batch_counts_against_a_merge(
    pipeline: IntakePipeline, engine: AsyncEngine, case: str
) -> None:
    """The consent check read each named contact's stored consent only: a contact this batch had already united
    with one who granted consent, or whose consent this batch had just withdrawn, merged with the other side."""
    await store(pipeline, form("a", T0, email="anna@x.example", consent="no" if case.startswith("united") else None))
    await store(pipeline, form("b", T0 + HOUR, email="bob@x.example"))
    await store(
        pipeline, form("c", T0 + HOUR, phone="+79160001122", consent="yes" if case.startswith("united") else None)
    )
    if case.startswith("united"):  # Bob's email and Carl's phone: one person (both have no objection); then Anna
        batch = [
            form("bc", T0 + 2 * HOUR, email="bob@x.example", phone="89160001122"),
            form("link", T0 + 3 * HOUR, email="anna@x.example", phone="89160001122"),
        ]
    else:  # Anna withdraws, Carl grants, then one form names both
        batch = [
            form("a2", T0 + 2 * HOUR, email="anna@x.example", consent="no"),
            form("c2", T0 + 2 * HOUR, phone="+79160001122", consent="yes"),
            form("link", T0 + 3 * HOUR, email="anna@x.example", phone="89160001122"),
        ]
    await store(pipeline, *batch)
    anna = next(c for c in await live_contacts(engine) if c["email"] == "anna@x.example")
    carl = next(c for c in await table(engine, Contact) if c["phone"] == "+79160001122")
    assert carl["merged_into"] != anna["id"] and anna["merged_into"] is None
    assert anna["review"] and anna["review"]["reason"] == "consent_conflict"


async def test_the_review_filter_lists_the_flagged_contacts_only(pipeline: IntakePipeline, engine: AsyncEngine) -> None:
    """`?review=true` is the contacts a refused merge flagged, `?review=false` all the others (whose review is
    stored as JSON null, not SQL NULL)."""
    await store(pipeline, form("a", T0, email="anna@x.example", consent="no"))
    await store(pipeline, form("b", T0 + HOUR, phone="+79160001122", consent="yes"))
    await store(pipeline, form("c", T0 + HOUR, email="carl@x.example"))
    await store(pipeline, form("link", T0 + 2 * HOUR, email="anna@x.example", phone="89160001122"))

    async def listed(review: bool | None) -> set[str | None]:
        async with engine.connect() as conn:
            page = await queries.list_contacts(conn, email=None, phone=None, cursor=None, limit=10, review=review)
        return {c["email"] or c["phone"] for c in page.items}

    assert await listed(True) == {"anna@x.example", "+79160001122"}
    assert await listed(False) == {"carl@x.example"}
    assert await listed(None) == {"anna@x.example", "+79160001122", "carl@x.example"}


async def test_merges_inside_one_batch_and_across_batches_end_alike(engine: AsyncEngine, database_url: str) -> None:
    stream = [
        form("x1", T0, email="x@x.example"),
        telegram_message("x2", T0 + HOUR, 31, phone="+79161112233"),
        shopify_order("x3", T0 + 2 * HOUR, 77, email="X@x.example", phone="8 916 111 22 33", customer_id=5),
        form("y1", T0 + 3 * HOUR, email="y@y.example"),
    ]
    await make_pipeline(engine).store([make_pipeline(engine).prepare(e) for e in stream])
    one_batch = await canonical_state(engine)
    async with engine.begin() as conn:
        for model in (ContactMerge, OutboxEvent, Order, Inquiry, Lead, ContactIdentifier, Contact):
            await conn.execute(model.__table__.delete())
    pipeline = make_pipeline(engine)
    for envelope in reversed(stream):
        await store(pipeline, envelope)
    assert await canonical_state(engine) == one_batch
    assert len(one_batch["contacts"]) == 2


async def test_two_workers_with_the_same_person_at_once_make_one_contact(engine: AsyncEngine) -> None:
    """Each worker retries a failed transaction, as the consumer does; the unique identifier keeps one contact."""
    workers = [make_pipeline(engine) for _ in range(4)]

    async def work(n: int, pipeline: IntakePipeline) -> None:
        same = [form(f"w{n}-{k}", T0 + k * HOUR, email="same@x.example", phone="+79165550000") for k in range(3)]
        await store_retrying(pipeline, same, tries=20)

    await asyncio.gather(*(work(n, p) for n, p in enumerate(workers)))
    assert len(await live_contacts(engine)) == 1
    assert len(await table(engine, Contact)) == 1
    assert len(await table(engine, Inquiry)) == 12
    assert len(await live_leads(engine)) == 1


async def test_chained_merges_unmerge_one_step_at_a_time(engine: AsyncEngine) -> None:
    """A into B, then B into C: A points at C (no chains); unmerging B puts B back and A under B, as it was."""

    def at_day(day: int) -> IntakePipeline:
        return IntakePipeline(engine, SOURCES, default_region="RU", clock=lambda: T0 + day * 24 * HOUR)

    await store(at_day(1), form("c", T0, phone="+79160000002"))  # oldest
    await store(at_day(2), form("b", T0 + 10 * 24 * HOUR, phone="+79160000001"))
    await store(at_day(3), form("a", T0 + 20 * 24 * HOUR, email="a@x.example"))
    ids = {i["key"]: i["contact_id"] for i in await table(engine, Inquiry)}
    a, b, c = ids["form:a"], ids["form:b"], ids["form:c"]
    await store(at_day(4), form("ab", T0 + 30 * 24 * HOUR, email="a@x.example", phone="+79160000001"))
    merged = {row["id"]: row["merged_into"] for row in await table(engine, Contact) if row["merged_into"]}
    assert merged == {a: b}
    before_bc = await snapshot(engine, {a, b, c})
    await store(at_day(5), form("bc", T0 + 40 * 24 * HOUR, phone="+79160000001", email=None, name="x"))
    await store(at_day(6), form("bc2", T0 + 50 * 24 * HOUR, email="a@x.example", phone="89160000002"))
    merged = {row["id"]: row["merged_into"] for row in await table(engine, Contact) if row["merged_into"]}
    assert merged == {a: c, b: c}  # no chains

    async with engine.begin() as conn:
        await identity.unmerge(conn, b, T0 + 60 * 24 * HOUR)
    merged = {row["id"]: row["merged_into"] for row in await table(engine, Contact) if row["merged_into"]}
    assert merged == {a: b}
    after = await snapshot(
        engine,
        {a, b, c},
        skip_inquiries={i["id"] for i in await table(engine, Inquiry) if i["key"].startswith("form:bc")},
    )
    assert after["contact_identifier"] == before_bc["contact_identifier"]
    assert [r["contact_id"] for r in after["inquiry"]] == [r["contact_id"] for r in before_bc["inquiry"]]


async def test_the_first_link_of_a_chain_comes_back_only_after_the_later_merge(engine: AsyncEngine) -> None:
    """A into B, then B into C: unmerging A first reported success and left A merged into C, hidden."""

    def at_day(day: int) -> IntakePipeline:
        return IntakePipeline(engine, SOURCES, default_region="RU", clock=lambda: T0 + day * 24 * HOUR)

    await store(at_day(1), form("c", T0, phone="+79160000002"))
    await store(at_day(2), form("b", T0 + 10 * 24 * HOUR, phone="+79160000001"))
    await store(at_day(3), form("a", T0 + 20 * 24 * HOUR, email="a@x.example"))
    ids = {i["key"]: i["contact_id"] for i in await table(engine, Inquiry)}
    a, b, c = ids["form:a"], ids["form:b"], ids["form:c"]
    await store(at_day(4), form("ab", T0 + 30 * 24 * HOUR, email="a@x.example", phone="+79160000001"))
    await store(at_day(5), form("bc", T0 + 40 * 24 * HOUR, email="a@x.example", phone="89160000002"))
    before = await snapshot(engine, {a, b, c})
    with pytest.raises(identity.UnmergeError, match=f"unmerge {b} first"):
        async with engine.begin() as conn:
            await identity.unmerge(conn, a, T0 + 60 * 24 * HOUR)
    assert await snapshot(engine, {a, b, c}) == before  # refused whole: nothing moved
    async with engine.begin() as conn:
        await identity.unmerge(conn, b, T0 + 60 * 24 * HOUR)
        await identity.unmerge(conn, a, T0 + 61 * 24 * HOUR)
    assert [row["id"] for row in await table(engine, Contact) if row["merged_into"]] == []


async def test_rules_see_the_contact_a_merged_one_became(pipeline: IntakePipeline, engine: AsyncEngine) -> None:
    from leadhub.store import trigger_data

    await store(pipeline, shopify_order("a", T0, 9001, email="a@x.example"), form("b", T0 + HOUR, phone="+79160000001"))
    ids = {i["key"]: i["contact_id"] for i in await table(engine, Inquiry)}
    await store(pipeline, form("ab", T0 + 2 * HOUR, email="a@x.example", phone="+79160000001"))
    async with engine.connect() as conn:
        one = await trigger_data.load_objects(conn, {"contact_id": ids["form:b"]}, ("contact",))
        many = await trigger_data.load_objects_many(conn, [{"contact_id": ids["form:b"]}], [("contact",)])
    assert one["contact"]["id"] == many[0]["contact"]["id"] == ids["shopify:a"]
    assert one["contact"]["phone"] == "+79160000001"  # the survivor took the phone it lacked
    # the scheduler's batch loader counts the survivor's orders, as the matcher's does
    assert one["contact"]["orders_count"] == many[0]["contact"]["orders_count"] == 1
    assert many[0]["contact"]["last_order_at"] is not None


def test_a_lead_window_per_channel_pair_falls_back_from_exact_to_any() -> None:
    """`*:*` was accepted and silently ignored (the plain lead window applied instead)."""
    windows = {("shop", "shop"): timedelta(0), ("*", "email"): timedelta(hours=24), ("*", "*"): timedelta(hours=6)}
    policy = IdentityPolicy(lead_window=timedelta(hours=72), lead_windows=windows)
    assert policy.window("shop", "shop") == timedelta(0)
    assert policy.window("form", "email") == timedelta(hours=24)
    assert policy.window("form", "phone") == timedelta(hours=6)
    assert IdentityPolicy(lead_window=timedelta(hours=72)).window("form", "phone") == timedelta(hours=72)


async def test_a_shop_customer_id_with_a_nul_is_stored_as_the_same_customer(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """PostgreSQL refuses NUL in text: a customer id carrying one (a shop's id is any string) failed the batch on
    every try and the order went to the dead letters; the id is the shop's, so it is the same customer without it."""
    await store(pipeline, shopify_order("o1", T0, 601, customer_id="77\x00"))  # type: ignore[arg-type]
    await store(pipeline, shopify_order("o2", T0 + HOUR, 602, customer_id=77))
    (contact,) = await live_contacts(engine)
    idents = await table(engine, ContactIdentifier, ContactIdentifier.contact_id == contact["id"])
    assert [(i["kind"], i["value"]) for i in idents] == [("customer", "shop:77")]


async def test_a_merge_once_their_consent_agrees_settles_the_review_of_the_two(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """Flagged for a consent conflict, then merged by a later inquiry once Anna granted consent too: the contact
    that stayed was still listed for review, naming a contact that no longer stood apart (a person's `merge` then
    answered 409, merged already). An unmerge brings the flags back with the conflict's two contacts."""
    await store(pipeline, form("a", T0, email="anna@x.example", consent="no"))
    await store(pipeline, form("b", T0 + HOUR, phone="+79160001122", consent="yes"))
    await store(pipeline, form("link", T0 + 2 * HOUR, email="anna@x.example", phone="89160001122"))
    assert all(c["review"] for c in await live_contacts(engine))
    await store(pipeline, form("a2", T0 + 3 * HOUR, email="anna@x.example", consent="yes"))
    await store(pipeline, form("link2", T0 + 4 * HOUR, email="anna@x.example", phone="89160001122"))
    (survivor,) = await live_contacts(engine)
    assert survivor["review"] is None
    (merge,) = await table(engine, ContactMerge)
    async with engine.begin() as conn:
        await identity.unmerge(conn, merge["merged_id"], T0 + 5 * HOUR)
    assert all(c["review"] for c in await live_contacts(engine))


async def test_keeping_apart_a_contact_whose_other_was_merged_since_holds_for_the_one_it_became(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """Anna's review named the phone's contact, merged since into the Telegram user it turned out to be: keep-apart
    remembered the merged-away contact, which no inquiry names any more, and the next inquiry flagged Anna again."""
    await store(pipeline, telegram_message("c", T0 - HOUR, 5))
    await store(pipeline, form("a", T0, email="anna@x.example", consent="no"))
    await store(pipeline, form("b", T0 + HOUR, phone="+79160001122", consent="yes"))
    await store(pipeline, form("link", T0 + 2 * HOUR, email="anna@x.example", phone="89160001122"))
    await store(pipeline, telegram_message("c2", T0 + 3 * HOUR, 5, phone="+79160001122"))  # the phone is user 5's
    (merge,) = await table(engine, ContactMerge)
    anna = next(c for c in await live_contacts(engine) if c["email"] == "anna@x.example")
    assert anna["review"]["with"] == [merge["merged_id"]]
    async with engine.begin() as conn:
        await contact_review.keep_apart(conn, anna["id"], T0 + 4 * HOUR)
    await store(pipeline, form("link2", T0 + 5 * HOUR, email="anna@x.example", phone="89160001122", message="again"))
    assert [c["review"] for c in await live_contacts(engine)] == [None, None]


async def _flagged_pair(pipeline: IntakePipeline, engine: AsyncEngine) -> list[str]:
    """Anna (opted out) and the phone's contact (consent given), flagged for review by an inquiry naming both."""
    await store(pipeline, form("a", T0, email="anna@x.example", consent="no"))
    await store(pipeline, form("b", T0 + HOUR, phone="+79160001122", consent="yes"))
    await store(pipeline, form("link", T0 + 2 * HOUR, email="anna@x.example", phone="89160001122"))
    contacts = await live_contacts(engine)
    assert all(c["review"] for c in contacts) and len(contacts) == 2
    return sorted(c["id"] for c in contacts)


async def test_keeping_flagged_contacts_apart_says_so_in_an_event_per_contact(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """A rule that opened a manager's task on `contact.review_needed` had nothing to close it on: deciding the review
    emitted no event."""
    ids = await _flagged_pair(pipeline, engine)
    async with engine.begin() as conn:
        await contact_review.keep_apart(conn, ids[0], T0 + 3 * HOUR)
    cleared = sorted(await events(engine, "contact.review_cleared"), key=lambda e: e["contact_id"])
    assert cleared == [
        {"contact_id": ids[0], "decision": "kept_apart", "other_ids": [ids[1]]},
        {"contact_id": ids[1], "decision": "kept_apart", "other_ids": [ids[0]]},
    ]


async def test_a_merge_that_settles_a_review_says_so_in_an_event_per_contact(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    ids = await _flagged_pair(pipeline, engine)
    async with engine.begin() as conn:
        merged = await contact_review.merge_by_hand(conn, ids[1], ids[0], T0 + 3 * HOUR, IdentityPolicy())
    cleared = sorted(await events(engine, "contact.review_cleared"), key=lambda e: e["contact_id"])
    assert cleared == [
        {"contact_id": ids[0], "decision": "merged", "other_ids": [ids[1]], "merge_id": merged["merge_id"]},
        {"contact_id": ids[1], "decision": "merged", "other_ids": [ids[0]], "merge_id": merged["merge_id"]},
    ]


async def test_an_unmerge_that_brings_the_review_flags_back_says_so_again(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """The flags came back with no event: a rule that closed its task on `contact.review_cleared` never reopened it."""
    ids = await _flagged_pair(pipeline, engine)
    async with engine.begin() as conn:
        merged = await contact_review.merge_by_hand(conn, ids[1], ids[0], T0 + 3 * HOUR, IdentityPolicy())
    async with engine.begin() as conn:
        await identity.unmerge(conn, merged["merge_id"], T0 + 4 * HOUR)
    assert all(c["review"] for c in await live_contacts(engine))
    needed = await events(engine, "contact.review_needed")
    assert len(needed) == 4, needed  # the conflict's two, and the two the unmerge brought back
    assert sorted((e["contact_id"], tuple(e["other_ids"]), e["reason"]) for e in needed[2:]) == [
        (ids[0], (ids[1],), "consent_conflict"),
        (ids[1], (ids[0],), "consent_conflict"),
    ]


async def test_a_merge_that_clears_no_review_emits_no_review_event(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    await store(pipeline, form("a", T0, email="anna@x.example"))
    await store(pipeline, form("b", T0 + HOUR, phone="+79160001122"))
    await store(pipeline, form("link", T0 + 2 * HOUR, email="anna@x.example", phone="89160001122"))
    assert len(await table(engine, ContactMerge)) == 1
    assert await events(engine, "contact.review_cleared") == []


class FindsCounted(identity.Unions):
    """Unions counting its group look-ups: an answer that walks every union of the batch shows as many."""

    finds = 0

    def find(self, contact_id: str) -> str:
        self.finds += 1
        return super().find(contact_id)


def test_the_members_of_a_batch_group_are_found_without_walking_every_union() -> None:
    """Every row asks for the contacts its batch united with its own; each answer walked every union of the batch:
    a batch of 5,000 rows (LEADHUB_PIPELINE_BATCH_SIZE allows it), each naming two contacts, took 17 s of CPU."""
    unions = FindsCounted()
    for n in range(5_000):
        unions.unite([f"a{n}", f"b{n}"], f"row{n}")
        before = unions.finds
        assert sorted(unions.members_or_self(f"b{n}")) == [f"a{n}", f"b{n}"]
        assert unions.finds - before <= 2, f"row {n}: an answer walked {unions.finds - before} contacts"
    for n in range(0, 5_000, 2):  # chains of groups, joined by either end
        unions.unite([f"b{n}", f"a{n + 1}"], f"join{n}")
    assert sorted(unions.members_or_self("b4")) == ["a4", "a5", "b4", "b5"]
    assert unions.members_or_self("lonely") == ["lonely"]
    assert sorted(map(sorted, unions.groups())) == sorted(
        sorted([f"a{n}", f"b{n}", f"a{n + 1}", f"b{n + 1}"]) for n in range(0, 5_000, 2)
    )


@pytest.mark.parametrize("recorded", ["unsubscribe-link", "complaint", "form-said-no"])
@pytest.mark.parametrize("stays", ["opted-out", "consenting"])
async def test_a_merge_by_hand_leaves_the_opt_out_on_the_contact_that_stays(
    pipeline: IntakePipeline, engine: AsyncEngine, recorded: str, stays: str
) -> None:
    """Buyer unsubscribed with the one-click link, the review said `{buyer: withdrawn, anna: granted}`, and merging
    Anna into Buyer by hand left `consent: null` on Buyer (Buyer into Anna: `granted`): the merge read only the
    merged contact's consent column, not the suppression list the review had read."""
    await store(pipeline, form("b", T0, email="buyer@x.example", consent="no" if recorded == "form-said-no" else None))
    await store(pipeline, form("a", T0 + HOUR, phone="+79160001122", consent="yes"))
    if recorded != "form-said-no":
        async with engine.begin() as conn:
            reason = "unsubscribe" if recorded == "unsubscribe-link" else "complaint"
            await trigger_data.suppress(conn, "Buyer@X.example", reason, "one-click link", T0 + 2 * HOUR)
    await store(pipeline, form("link", T0 + 3 * HOUR, email="buyer@x.example", phone="89160001122"))
    contacts = await live_contacts(engine)
    buyer = next(c for c in contacts if c["email"] == "buyer@x.example")
    anna = next(c for c in contacts if c["phone"] == "+79160001122")
    assert buyer["review"]["consent"] == {buyer["id"]: "withdrawn", anna["id"]: "granted"}
    survivor, merged = (buyer, anna) if stays == "opted-out" else (anna, buyer)
    async with engine.begin() as conn:
        await contact_review.merge_by_hand(conn, merged["id"], survivor["id"], T0 + 4 * HOUR, IdentityPolicy())
    (after,) = await live_contacts(engine)
    assert (after["id"], after["consent"]) == (survivor["id"], "withdrawn")
    async with engine.begin() as conn:  # taken back, each contact is as it was
        await identity.unmerge(conn, merged["id"], T0 + 5 * HOUR)
    consent = {c["id"]: c["consent"] for c in await live_contacts(engine)}
    assert consent == {buyer["id"]: buyer["consent"], anna["id"]: "granted"}
