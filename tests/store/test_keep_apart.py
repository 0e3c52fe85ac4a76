"""A person's keep-apart decision holds for every two of the people it named: a later inquiry naming any of them, in
any combination, is neither flagged again nor merged, whatever merges and unmerges happened before or since."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.envelope import Envelope
from leadhub.pipelines.intake import IntakePipeline
from leadhub.store import contact_review, identity
from leadhub.store.models import Contact, ContactMerge, OutboxEvent
from leadhub.store.policy import IdentityPolicy
from tests.store.envelopes import SOURCES, form, live_contacts, shopify_order, table, telegram

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
EMAIL, PHONE, CUSTOMER = "anna@x.example", "+79160001122", 77


@pytest.fixture
def pipeline(engine: AsyncEngine) -> IntakePipeline:
    return IntakePipeline(
        engine, SOURCES, default_region="RU", policy=IdentityPolicy(), clock=lambda: T0 + 30 * 24 * HOUR
    )


async def store(pipeline: IntakePipeline, *envelopes: Envelope) -> None:
    await pipeline.store([pipeline.prepare(e) for e in envelopes])


async def events(engine: AsyncEngine, kind: str) -> list[dict[str, Any]]:
    """The events of `kind` in the order they were written (their ids count up): a table's rows come in any order."""
    rows = await table(engine, OutboxEvent, OutboxEvent.__table__.c.type == kind)
    return [e["data"] for e in sorted(rows, key=lambda e: e["id"])]


async def reviews(engine: AsyncEngine) -> dict[str, list[str] | None]:
    """Each contact (merged ones too) and whom its review names, None when it is not flagged."""
    return {c["id"]: sorted(c["review"]["with"]) if c["review"] else None for c in await table(engine, Contact)}


async def flagged(engine: AsyncEngine) -> dict[str, list[str]]:
    return {c: others for c, others in (await reviews(engine)).items() if others is not None}


async def people(pipeline: IntakePipeline, engine: AsyncEngine) -> dict[str, str]:
    """Anna (opted out, by email), the phone's contact (consent given) and shop customer 77 (no word on consent)."""
    await store(pipeline, form("a", T0, email=EMAIL, consent="no"))
    await store(pipeline, form("b", T0 + HOUR, phone=PHONE, consent="yes"))
    await store(pipeline, shopify_order("c", T0 + HOUR, 601, customer_id=CUSTOMER))
    contacts = await live_contacts(engine)
    by = {c["email"] or c["phone"] or "customer": c["id"] for c in contacts}
    return {"anna": by[EMAIL], "phone": by[PHONE], "customer": by["customer"]}


def naming(key: str, at: datetime, *who: str) -> Envelope:
    """An inquiry naming these of the three by their identifiers (a shop order can carry all three)."""
    email = EMAIL if "anna" in who else None
    phone = PHONE if "phone" in who else None
    if "customer" not in who:
        return form(key, at, email=email, phone=phone, message=key)
    return shopify_order(key, at, abs(hash(key)) % 10_000, email=email, phone=phone, customer_id=CUSTOMER)


async def flag_all_three(pipeline: IntakePipeline, engine: AsyncEngine) -> dict[str, str]:
    ids = await people(pipeline, engine)
    await store(pipeline, naming("all", T0 + 2 * HOUR, "anna", "phone", "customer"))
    assert await reviews(engine) == {c: sorted(set(ids.values()) - {c}) for c in ids.values()}
    return ids


@pytest.mark.parametrize(
    "later", [("anna", "phone"), ("phone", "customer"), ("anna", "customer"), ("anna", "phone", "customer")]
)
async def test_three_contacts_kept_apart_stay_apart_two_by_two_and_all_together(
    pipeline: IntakePipeline, engine: AsyncEngine, later: tuple[str, ...]
) -> None:
    """One review naming three contacts, one keep-apart: every two of them are remembered, so an inquiry naming any
    two (consent conflicting, as Anna's and the phone's, or agreeing, as the customer's with either) or all three
    is neither flagged nor merged. (This held before the decision was read through merges: a guard.)"""
    ids = await flag_all_three(pipeline, engine)
    async with engine.begin() as conn:
        cleared = await contact_review.keep_apart(conn, ids["anna"], T0 + 3 * HOUR)
    assert cleared == sorted(ids.values())
    assert len(await events(engine, "contact.review_cleared")) == 3
    await store(pipeline, naming("later", T0 + 4 * HOUR, *later))
    assert await flagged(engine) == {}
    assert not await table(engine, ContactMerge)
    assert len(await events(engine, "contact.review_needed")) == 3  # the first review's only


async def test_an_inquiry_naming_one_more_contact_flags_only_what_nobody_decided(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """Anna and the phone's contact kept apart, then a shop order names both and customer 77: the review named Anna
    and the phone's contact with each other again, as if the decision had not been made."""
    ids = await people(pipeline, engine)
    await store(pipeline, naming("two", T0 + 2 * HOUR, "anna", "phone"))
    async with engine.begin() as conn:
        await contact_review.keep_apart(conn, ids["anna"], T0 + 3 * HOUR)
    await store(pipeline, naming("three", T0 + 4 * HOUR, "anna", "phone", "customer"))
    assert await reviews(engine) == {
        ids["anna"]: [ids["customer"]],
        ids["phone"]: [ids["customer"]],
        ids["customer"]: sorted([ids["anna"], ids["phone"]]),
    }
    needed = {e["contact_id"]: sorted(e["other_ids"]) for e in (await events(engine, "contact.review_needed"))[2:]}
    assert needed == await reviews(engine)
    async with engine.begin() as conn:  # the customer's keep-apart settles the rest
        assert await contact_review.keep_apart(conn, ids["customer"], T0 + 5 * HOUR) == sorted(ids.values())
    assert await flagged(engine) == {}


async def user_five_takes_the_phone(pipeline: IntakePipeline, engine: AsyncEngine, at: datetime) -> dict[str, Any]:
    """Telegram user 5 (an older contact) shares the phone's number: the phone's contact is merged into theirs."""
    await store(pipeline, telegram("tg-share", at, 5, phone=PHONE))
    (merge,) = await table(engine, ContactMerge)
    return merge


@pytest.mark.parametrize("consent", ["conflicting", "agreeing"])
async def test_contacts_kept_apart_stay_apart_after_one_is_merged_into_a_third_and_back(
    pipeline: IntakePipeline, engine: AsyncEngine, consent: str
) -> None:
    """Anna and the phone's contact kept apart; then the phone's contact merged into Telegram user 5. The decision
    named contact ids only: the next inquiry naming Anna and the phone (now user 5's) flagged them again, or, once
    Anna had granted consent too, merged Anna into user 5 without a word. After the unmerge it holds again."""
    await store(pipeline, telegram("tg", T0 - HOUR, 5))
    ids = await people(pipeline, engine)
    await store(pipeline, naming("two", T0 + 2 * HOUR, "anna", "phone"))
    async with engine.begin() as conn:
        await contact_review.keep_apart(conn, ids["anna"], T0 + 3 * HOUR)
    merge = await user_five_takes_the_phone(pipeline, engine, T0 + 4 * HOUR)
    assert merge["merged_id"] == ids["phone"]
    if consent == "agreeing":
        await store(pipeline, form("a2", T0 + 5 * HOUR, email=EMAIL, consent="yes"))
    await store(pipeline, naming("again", T0 + 6 * HOUR, "anna", "phone"))
    assert await flagged(engine) == {}
    assert len(await table(engine, ContactMerge)) == 1
    async with engine.begin() as conn:
        await identity.unmerge(conn, ids["phone"], T0 + 7 * HOUR)
    await store(pipeline, naming("after", T0 + 8 * HOUR, "anna", "phone"))
    assert await flagged(engine) == {}
    assert len(await table(engine, ContactMerge)) == 1


async def test_a_keep_apart_decided_while_one_was_merged_holds_for_it_after_the_unmerge(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """Anna's review named the phone's contact, merged since into user 5; keep-apart remembered Anna and user 5 only.
    Once the merge was taken back, the phone was the phone's contact's again and the next inquiry naming Anna and
    the phone flagged them again."""
    await store(pipeline, telegram("tg", T0 - HOUR, 5))
    ids = await people(pipeline, engine)
    await store(pipeline, naming("two", T0 + 2 * HOUR, "anna", "phone"))
    await user_five_takes_the_phone(pipeline, engine, T0 + 3 * HOUR)
    async with engine.begin() as conn:
        await contact_review.keep_apart(conn, ids["anna"], T0 + 4 * HOUR)
    async with engine.begin() as conn:
        await identity.unmerge(conn, ids["phone"], T0 + 5 * HOUR)
    await store(pipeline, naming("again", T0 + 6 * HOUR, "anna", "phone"))
    assert await flagged(engine) == {}
    assert len(await table(engine, ContactMerge)) == 1


async def test_two_of_three_merged_by_hand_then_unmerged_after_keep_apart(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """Three flagged; a person merged the customer into the phone's contact, then kept Anna apart, which remembered
    Anna and the phone's contact only. The unmerge brought back reviews naming Anna, and the next inquiry naming Anna
    and the customer (no conflict: the customer has no word on consent) merged them without a word. The two a person
    never told apart (the merge by hand was taken back) are flagged for each other only."""
    ids = await flag_all_three(pipeline, engine)
    async with engine.begin() as conn:
        merged = await contact_review.merge_by_hand(
            conn, ids["customer"], ids["phone"], T0 + 3 * HOUR, IdentityPolicy()
        )
    async with engine.begin() as conn:
        assert await contact_review.keep_apart(conn, ids["anna"], T0 + 4 * HOUR) == [ids["anna"]]
    async with engine.begin() as conn:
        await identity.unmerge(conn, merged["merge_id"], T0 + 5 * HOUR)
    await store(pipeline, naming("later", T0 + 6 * HOUR, "anna", "customer"))
    assert len(await table(engine, ContactMerge)) == 1  # the merge by hand, taken back
    assert await flagged(engine) == {ids["phone"]: [ids["customer"]], ids["customer"]: [ids["phone"]]}
    needed = {e["contact_id"]: sorted(e["other_ids"]) for e in (await events(engine, "contact.review_needed"))[3:]}
    assert needed == {ids["phone"]: [ids["customer"]], ids["customer"]: [ids["phone"]]}


async def test_keep_apart_leaves_a_flag_about_someone_else_in_place(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """The phone's contact was flagged with Anna, then by a later inquiry with Dora (its review now names Dora). Keeping
    Anna apart cleared the phone's contact's flag too, though nobody had decided about it and Dora: Dora stayed
    listed for review with a contact that was not."""
    ids = await people(pipeline, engine)
    await store(pipeline, form("d", T0 + HOUR, email="dora@x.example", consent="no"))
    await store(pipeline, naming("two", T0 + 2 * HOUR, "anna", "phone"))
    await store(pipeline, form("dora-phone", T0 + 3 * HOUR, email="dora@x.example", phone=PHONE))
    dora = next(c["id"] for c in await live_contacts(engine) if c["email"] == "dora@x.example")
    assert (await reviews(engine))[ids["phone"]] == [dora]
    async with engine.begin() as conn:
        assert await contact_review.keep_apart(conn, ids["anna"], T0 + 4 * HOUR) == [ids["anna"]]
    assert await reviews(engine) == {
        ids["anna"]: None,
        ids["phone"]: [dora],
        ids["customer"]: None,
        dora: [ids["phone"]],
    }
    assert [e["contact_id"] for e in await events(engine, "contact.review_cleared")] == [ids["anna"]]


async def test_keeping_three_apart_after_two_of_them_were_merged_clears_every_flag(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """Three flagged; Anna then granted consent and an inquiry merged the phone's contact into her (that merge settles
    nobody's review: each names the customer too). Keeping Anna apart from the customer leaves no review naming a
    contact of her own person, which nobody could decide about any more (a merge by hand answers "merged already").
    (This held when keep-apart remembered the contacts as they stood; a guard for reading decisions through merges.)"""
    ids = await flag_all_three(pipeline, engine)
    await store(pipeline, form("a2", T0 + 3 * HOUR, email=EMAIL, consent="yes"))
    await store(pipeline, naming("two", T0 + 4 * HOUR, "anna", "phone"))
    (merge,) = await table(engine, ContactMerge)
    assert (merge["survivor_id"], merge["merged_id"]) == (ids["anna"], ids["phone"])
    async with engine.begin() as conn:
        assert await contact_review.keep_apart(conn, ids["anna"], T0 + 5 * HOUR) == sorted(ids.values())
    assert await flagged(engine) == {}
    await store(pipeline, naming("later", T0 + 6 * HOUR, "phone", "customer"))
    assert await flagged(engine) == {}
    assert len(await table(engine, ContactMerge)) == 1
