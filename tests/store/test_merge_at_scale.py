"""A merge and its unmerge of a contact with more rows than a statement can name: a shared phone (an office line, a
shop's own number in the billing field) gathers tens of thousands of inquiries on one contact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.ids import new_id
from leadhub.pipelines.intake import IntakePipeline
from leadhub.store import identity
from leadhub.store.models import ContactIdentifier, ContactMerge, Inquiry, Lead
from leadhub.store.policy import IdentityPolicy
from tests.store.envelopes import SOURCES, form, table

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
MANY = 40_000  # inquiries and email identifiers: over SQLite's 32,766 parameters of a statement, asyncpg's 32,767
inquiry_t = Inquiry.__table__
identifier_t = ContactIdentifier.__table__
lead_t = Lead.__table__
LEADS = 20_000  # open leads of one contact, each an episode of its own


class ComparisonsCounted(IdentityPolicy):
    """The default policy, counting the lead windows asked for (a lead compared with an episode's head): past
    `limit` the fold is quadratic, and it stops at once instead of running for minutes."""

    asked = [0]
    limit = 10 * LEADS

    def window(self, lead_channel: str, channel: str) -> timedelta:
        self.asked[0] += 1
        assert self.asked[0] <= self.limit, "each lead is compared with every earlier episode"
        return super().window(lead_channel, channel)


async def test_a_contact_with_more_rows_than_a_statement_can_name_merges_and_comes_back(
    engine: AsyncEngine,
) -> None:
    pipeline = IntakePipeline(engine, SOURCES, default_region="RU", policy=IdentityPolicy(), clock=lambda: T0)
    await pipeline.store([pipeline.prepare(form("anna", T0, email="anna@x.example"))])
    office = pipeline.prepare(form("office", T0 + timedelta(minutes=1), phone="+7 495 123-45-67"))
    await pipeline.store([office])
    async with engine.begin() as conn:
        (first,) = (await conn.execute(select(inquiry_t).where(inquiry_t.c.key == office.key))).mappings()
        copies = [dict(first) | {"id": new_id(), "key": f"form:office-{n}"} for n in range(MANY)]
        emails = [
            {"kind": "email", "value": f"clerk{n}@x.example", "contact_id": first["contact_id"], "created_at": T0}
            for n in range(MANY)
        ]
        for start in range(0, MANY, 2_000):
            await conn.execute(inquiry_t.insert(), copies[start : start + 2_000])
            await conn.execute(identifier_t.insert(), emails[start : start + 2_000])
    office_id = first["contact_id"]

    linking = form("link", T0 + timedelta(days=10), email="anna@x.example", phone="84951234567")
    await pipeline.store([pipeline.prepare(linking)])
    (merge,) = await table(engine, ContactMerge)
    assert merge["merged_id"] == office_id
    assert await _inquiries_of(engine, office_id) == 0

    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        async with engine.begin() as conn:
            await identity.unmerge(conn, office_id, T0 + timedelta(days=11))
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert len(statements) < 100  # each identifier went back by a statement of its own: 25 s for these
    assert await _inquiries_of(engine, office_id) == MANY + 1
    assert len(await table(engine, ContactIdentifier, identifier_t.c.contact_id == office_id)) == MANY + 1


async def _inquiries_of(engine: AsyncEngine, contact_id: str) -> int:
    async with engine.connect() as conn:
        query = select(func.count()).select_from(inquiry_t).where(inquiry_t.c.contact_id == contact_id)
        return (await conn.execute(query)).scalar_one()


async def test_merging_a_contact_with_years_of_open_leads_takes_time_in_proportion(engine: AsyncEngine) -> None:
    """Each open lead was compared with every earlier episode's head, though one older than the widest lead window
    can never take it: 20,000 open leads (an office line calling for years, its leads never closed) made one merge
    take minutes inside the intake transaction."""
    pipeline = IntakePipeline(engine, SOURCES, default_region="RU", policy=IdentityPolicy(), clock=lambda: T0)
    await pipeline.store([pipeline.prepare(form("anna", T0, email="anna@x.example"))])
    office = pipeline.prepare(form("office", T0 + timedelta(minutes=1), phone="+7 495 123-45-67"))
    await pipeline.store([office])
    async with engine.begin() as conn:
        office_id = (await conn.execute(select(inquiry_t.c.contact_id).where(inquiry_t.c.key == office.key))).scalar()
        (lead,) = (await conn.execute(select(lead_t).where(lead_t.c.contact_id == office_id))).mappings()
        episodes = [
            dict(lead) | {"id": new_id(), "first_touch_at": at, "last_touch_at": at}
            for at in (T0 - timedelta(days=4 * (n + 1)) for n in range(LEADS))
        ]
        for start in range(0, LEADS, 2_000):
            await conn.execute(lead_t.insert(), episodes[start : start + 2_000])

    counted = ComparisonsCounted()
    pipeline.policy = counted
    linking = form("link", T0 + timedelta(days=10), email="anna@x.example", phone="84951234567")
    await pipeline.store([pipeline.prepare(linking)])
    assert len(await table(engine, ContactMerge)) == 1
