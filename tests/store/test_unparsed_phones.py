"""A phone number that is no valid number still names its caller: the same number as written finds the same contact
(an identifier of its own kind, `phone_digits`), while placeholders and short junk name nobody.

Material: ../shared/corpus/webhooks/sipuni/inbound_missed_NOANSWER_event2.json (a REAL captured missed call from a
9-digit local number, `src_num=951218115`, which no region reads as valid).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.envelope import Envelope
from leadhub.pipelines.intake import IntakePipeline
from leadhub.pipelines.model import SourceSpec
from leadhub.store.models import ContactIdentifier, Inquiry
from tests.store.envelopes import SOURCES, form, live_contacts, live_leads, table

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus" / "webhooks" / "sipuni"
T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def pipeline(engine: AsyncEngine, region: str | None) -> IntakePipeline:
    sources = SOURCES | {"pbx": SourceSpec("sipuni", {})}
    return IntakePipeline(engine, sources, default_region=region, clock=lambda: T0 + 30 * DAY)


def missed_call(call_id: str, at: datetime) -> Envelope:
    params: dict[str, Any] = json.loads((CORPUS / "inbound_missed_NOANSWER_event2.json").read_text())["params"]
    return Envelope(
        key=f"sipuni:{call_id}", channel="phone", connector="pbx",
        payload=urlencode(params | {"call_id": call_id}).encode(),
        content_type="application/x-www-form-urlencoded", received_at=at,
    )  # fmt: skip


async def store(intake: IntakePipeline, *envelopes: Envelope) -> None:
    for envelope in envelopes:  # one batch each, as the daemon stores them
        await intake.store([intake.prepare(envelope)])


@pytest.mark.parametrize("region", ["RU", None])
async def test_the_same_unparseable_caller_is_one_contact_and_one_callback_lead(
    engine: AsyncEngine, region: str | None
) -> None:
    """Three missed calls from 951218115 made three contacts without identifiers, three leads tagged
    callback_requested and three callback tasks."""
    intake = pipeline(engine, region)
    await store(intake, *(missed_call(f"1774373436.{n}", T0 + n * DAY) for n in range(3)))
    (contact,) = await live_contacts(engine)
    assert contact["phone"] is None  # no E.164 to give it
    identifiers = [(i["kind"], i["value"]) for i in await table(engine, ContactIdentifier)]
    assert identifiers == [("phone_digits", "951218115")]
    assert [lead["tags"] for lead in await live_leads(engine)] == [["callback_requested"]]
    inquiries = await table(engine, Inquiry)
    assert {(i["contact_id"], i["phone"], i["meta"].get("phone_invalid")) for i in inquiries} == {
        (contact["id"], "951218115", "1")
    }


async def test_a_form_number_no_region_reads_finds_its_contact_again(engine: AsyncEngine) -> None:
    """Without a default region `89161110099` is no valid number: three posts of it made three contacts."""
    intake = pipeline(engine, None)
    await store(intake, *(form(f"x{n}", T0 + n * DAY, phone="89161110099", name="Oleg") for n in range(3)))
    assert len(await live_contacts(engine)) == 1
    identifiers = [(i["kind"], i["value"]) for i in await table(engine, ContactIdentifier)]
    assert identifiers == [("phone_digits", "89161110099")]


async def test_spellings_of_one_unparseable_number_are_one_contact(engine: AsyncEngine) -> None:
    intake = pipeline(engine, "RU")
    await store(
        intake,
        form("a", T0, phone="951 218 115"),
        form("b", T0 + DAY, phone="(951) 21-81-15"),
        form("c", T0 + 2 * DAY, phone="951218115", email="oleg@x.example"),
    )
    (contact,) = await live_contacts(engine)
    kinds = {(i["kind"], i["value"]) for i in await table(engine, ContactIdentifier)}
    assert kinds == {("phone_digits", "951218115"), ("email", "oleg@x.example")}
    assert contact["email"] == "oleg@x.example"


@pytest.mark.parametrize("junk", ["0", "123", "12345", "000000", "1111111", "123456", "1234567890", "987654"])
async def test_placeholders_and_short_numbers_merge_nobody(engine: AsyncEngine, junk: str) -> None:
    """A form's required phone filled with `0` or `123456` is no one's number: two strangers giving it stay two."""
    intake = pipeline(engine, "RU")
    await store(intake, form("a", T0, phone=junk, name="Anna"), form("b", T0 + DAY, phone=junk, name="Boris"))
    assert len(await live_contacts(engine)) == 2
    assert await table(engine, ContactIdentifier) == []


async def test_digits_never_match_a_valid_number(engine: AsyncEngine) -> None:
    """`79161234567` written without its plus is invalid with no region and valid as `+79161234567`: two kinds of
    identifier, so neither finds the other's contact by accident."""
    intake = pipeline(engine, None)
    await store(intake, form("a", T0, phone="+79161234567"), form("b", T0 + DAY, phone="89161234567"))
    kinds = sorted((i["kind"], i["value"]) for i in await table(engine, ContactIdentifier))
    assert kinds == [("phone", "+79161234567"), ("phone_digits", "89161234567")]
