"""An unmerge takes back what the merge did and nothing that happened after it: an opt-out received after the merge
stays on both contacts, a column changed since keeps its value, touches added since stay on their leads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.pipelines.intake import IntakePipeline
from leadhub.store import identity
from leadhub.store.models import Contact, ContactMerge, Inquiry, Lead
from leadhub.store.policy import IdentityPolicy
from tests.store.envelopes import SOURCES, form, live_contacts, table

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def pipeline(engine: AsyncEngine) -> IntakePipeline:
    return IntakePipeline(engine, SOURCES, default_region="RU", policy=IdentityPolicy(), clock=lambda: T0 + 30 * HOUR)


async def store(pipeline: IntakePipeline, **fields: Any) -> None:
    key, at = fields.pop("key"), fields.pop("at")
    await pipeline.store([pipeline.prepare(form(key, at, **fields))])


async def merged_pair(pipeline: IntakePipeline, engine: AsyncEngine, **consent: str | None) -> dict[str, Any]:
    """Anna by email (the older: the survivor), then by phone, then one form naming both; returns the merge."""
    await store(pipeline, key="a", at=T0, name="Anna", email="anna@x.example", consent=consent.get("email"))
    await store(pipeline, key="b", at=T0 + HOUR, phone="+79160001122", consent=consent.get("phone"))
    await store(pipeline, key="link", at=T0 + 2 * HOUR, email="anna@x.example", phone="89160001122")
    (merge,) = await table(engine, ContactMerge)
    return merge


async def unmerge(engine: AsyncEngine, merge: dict[str, Any]) -> dict[str, dict[str, Any]]:
    async with engine.begin() as conn:
        await identity.unmerge(conn, merge["merged_id"], T0 + 40 * HOUR)
    return {c["id"]: c for c in await table(engine, Contact)}


@pytest.mark.parametrize(
    "consent",
    [{"phone": "yes"}, {"email": "yes"}, {}],
    ids=["merged-granted-filled-into-survivor", "survivor-granted", "never-asked"],
)
async def test_an_opt_out_after_the_merge_stays_on_both_contacts_after_the_unmerge(
    pipeline: IntakePipeline, engine: AsyncEngine, consent: dict[str, str]
) -> None:
    """The unmerge put the survivor's consent back as it was before the merge (None, or `granted` on the merged
    contact): a customer who unsubscribed after the merge was silently subscribed again."""
    merge = await merged_pair(pipeline, engine, **consent)
    await store(pipeline, key="stop", at=T0 + 3 * HOUR, email="anna@x.example", consent="no")
    assert {c["consent"] for c in await live_contacts(engine)} == {"withdrawn"}
    contacts = await unmerge(engine, merge)
    assert contacts[merge["survivor_id"]]["consent"] == "withdrawn"
    assert contacts[merge["merged_id"]]["consent"] == "withdrawn"
    assert contacts[merge["merged_id"]]["merged_into"] is None


async def test_a_consent_given_before_the_merge_is_put_back_as_it_was(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """Nothing happened after the merge: the survivor gets back the consent it had (none), the merged one keeps its."""
    merge = await merged_pair(pipeline, engine, phone="yes")
    contacts = await unmerge(engine, merge)
    assert contacts[merge["survivor_id"]]["consent"] is None
    assert contacts[merge["merged_id"]]["consent"] == "granted"


async def test_a_column_changed_after_the_merge_keeps_its_value(pipeline: IntakePipeline, engine: AsyncEngine) -> None:
    """The survivor took the phone it lacked in the merge; changed since, the unmerge must not set it back to none."""
    merge = await merged_pair(pipeline, engine)
    async with engine.begin() as conn:
        await conn.execute(
            update(Contact.__table__)
            .where(Contact.__table__.c.id == merge["survivor_id"])
            .values(phone="+79990000000", updated_at=T0 + 35 * HOUR)
        )
    contacts = await unmerge(engine, merge)
    assert contacts[merge["survivor_id"]]["phone"] == "+79990000000"
    assert contacts[merge["survivor_id"]]["name"] == "Anna"


async def test_touches_after_the_merge_stay_with_the_leads_they_joined(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """Inquiries after the merge join the folded lead; the unmerge must not wind that lead's last touch back to
    before them, and every inquiry stays with its lead's contact."""
    merge = await merged_pair(pipeline, engine)
    await store(pipeline, key="later-email", at=T0 + 5 * HOUR, email="anna@x.example")
    await store(pipeline, key="later-phone", at=T0 + 6 * HOUR, phone="+79160001122")
    await unmerge(engine, merge)
    leads = {lead["id"]: lead for lead in await table(engine, Lead)}
    inquiries = await table(engine, Inquiry)
    for inquiry in inquiries:
        assert inquiry["contact_id"] == leads[inquiry["lead_id"]]["contact_id"], inquiry["key"]
    for lead_id, lead in leads.items():
        touches = [i["received_at"] for i in inquiries if i["lead_id"] == lead_id]
        assert lead["last_touch_at"] == max(touches), lead_id
    later = {i["key"]: i["contact_id"] for i in inquiries if i["key"].startswith("form:later")}
    assert set(later.values()) == {merge["survivor_id"]}  # made after the merge: they stay with the survivor


async def test_an_inquiry_after_the_merge_on_the_merged_contacts_lead_goes_back_with_that_lead(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """The merged contact's open lead (too far from the survivor's to fold) took an inquiry after the merge; the
    unmerge gave the lead back but left the inquiry on the survivor: an inquiry on another contact's lead."""
    await store(pipeline, key="a", at=T0, email="anna@x.example")
    await store(pipeline, key="b", at=T0 + 100 * HOUR, phone="+79160001122")
    await store(pipeline, key="link", at=T0 + 101 * HOUR, email="anna@x.example", phone="89160001122")
    (merge,) = await table(engine, ContactMerge)
    await store(pipeline, key="later", at=T0 + 102 * HOUR, email="anna@x.example")
    await unmerge(engine, merge)
    leads = {lead["id"]: lead for lead in await table(engine, Lead)}
    inquiries = {i["key"]: i for i in await table(engine, Inquiry)}
    later = inquiries["form:later"]
    assert leads[later["lead_id"]]["contact_id"] == merge["merged_id"]  # it joined the phone's lead, within 72h
    for inquiry in inquiries.values():
        assert inquiry["contact_id"] == leads[inquiry["lead_id"]]["contact_id"], inquiry["key"]


async def test_a_merge_journalled_before_columns_set_existed_never_re_subscribes(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """An old journal does not say what the merge left: a `withdrawn` consent is kept and carried to both."""
    merge = await merged_pair(pipeline, engine, phone="yes")
    await store(pipeline, key="stop", at=T0 + 3 * HOUR, email="anna@x.example", consent="no")
    merge_t = ContactMerge.__table__
    old = {k: v for k, v in merge["moved"].items() if k != "columns_set"}
    async with engine.begin() as conn:
        await conn.execute(update(merge_t).where(merge_t.c.id == merge["id"]).values(moved=old))
    contacts = await unmerge(engine, merge)
    assert {contacts[merge["survivor_id"]]["consent"], contacts[merge["merged_id"]]["consent"]} == {"withdrawn"}


async def test_an_opt_out_repeated_after_the_merge_is_kept_though_the_merge_had_set_it(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """The survivor took `withdrawn` from the merged contact; the person said no again after the merge. The value
    did not change, but the contact was written since: the opt-out may be the survivor's own, so it stays."""
    merge = await merged_pair(pipeline, engine, phone="no")
    later = IntakePipeline(engine, SOURCES, default_region="RU", clock=lambda: T0 + 35 * HOUR)
    await later.store([later.prepare(form("stop", T0 + 3 * HOUR, email="anna@x.example", consent="no"))])
    contacts = await unmerge(engine, merge)
    assert contacts[merge["survivor_id"]]["consent"] == "withdrawn"
    assert contacts[merge["merged_id"]]["consent"] == "withdrawn"


async def test_an_opt_out_the_merge_copied_goes_back_when_nothing_happened_since(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    merge = await merged_pair(pipeline, engine, phone="no")
    contacts = await unmerge(engine, merge)
    assert contacts[merge["survivor_id"]]["consent"] is None
    assert contacts[merge["merged_id"]]["consent"] == "withdrawn"


async def test_an_opt_out_the_merge_copied_goes_back_with_a_clock_that_moves(engine: AsyncEngine) -> None:
    """With the other tests' fixed clock the merge left `updated_at` as it found it. With a real one, putting the
    merged contact's columns back rewrote its `updated_at` before the opt-out check, which then took the merged
    contact's own old `withdrawn` for one received after the merge and withdrew the survivor's consent too."""

    def at(hours: int) -> IntakePipeline:
        clock = T0 + hours * HOUR
        return IntakePipeline(engine, SOURCES, default_region="RU", policy=IdentityPolicy(), clock=lambda: clock)

    await store(at(30), key="a", at=T0, name="Anna", email="anna@x.example", consent="yes")
    await store(at(31), key="b", at=T0 + HOUR, phone="+79160001122", consent="no")
    await store(at(32), key="link", at=T0 + 2 * HOUR, email="anna@x.example", phone="89160001122")
    assert await table(engine, ContactMerge) == []  # consent conflict: flagged, not merged
    await store(at(33), key="c", at=T0 + 3 * HOUR, name="Olga", email="olga@x.example")
    await store(at(34), key="d", at=T0 + 4 * HOUR, phone="+79160003344", consent="no")
    await store(at(35), key="link2", at=T0 + 5 * HOUR, email="olga@x.example", phone="89160003344")
    (merge,) = await table(engine, ContactMerge)  # the survivor had no consent: it took `withdrawn` from the other
    contacts = {c["id"]: c for c in await table(engine, Contact)}
    assert contacts[merge["survivor_id"]]["consent"] == "withdrawn"
    contacts = await unmerge(engine, merge)
    assert contacts[merge["survivor_id"]]["consent"] is None
    assert contacts[merge["merged_id"]]["consent"] == "withdrawn"
