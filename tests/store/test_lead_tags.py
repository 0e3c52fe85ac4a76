"""A touch's tags join the lead it joins: a missed call from a customer with an open lead still asks for a callback.

A missed call is a touch of the caller's open lead within the lead window (a form sent, an order placed an hour
before); the lead takes its `callback_requested` tag and says so with `lead.updated` and `lead.tags_changed`, the
events a tag change through the API emits, so a rule on the tag learns of the callback. It was a bare touch: the
tag was lost, and with it the callback task.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.envelope import Envelope
from leadhub.pipelines.intake import IntakePipeline
from leadhub.pipelines.model import SourceSpec
from leadhub.store.models import Lead, OutboxEvent
from tests.store.envelopes import SOURCES, form, live_leads, table

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
PHONE = "+79005550101"
CALLBACK = "callback_requested"


@pytest.fixture
def pipeline(engine: AsyncEngine) -> IntakePipeline:
    sources = SOURCES | {"twilio": SourceSpec("twilio", {})}
    return IntakePipeline(engine, sources, default_region="RU", clock=lambda: T0 + timedelta(days=1))


def missed_call(call_sid: str, at: datetime, phone: str = PHONE) -> Envelope:
    """A Twilio status callback of an inbound call nobody answered."""
    body = {"CallSid": call_sid, "CallStatus": "no-answer", "Direction": "inbound", "From": phone, "To": "+74950000000"}
    return Envelope(
        key=f"twilio:twilio:{call_sid}:no-answer", channel="phone", connector="twilio",
        payload=urlencode(body).encode(), content_type="application/x-www-form-urlencoded", received_at=at,
    )  # fmt: skip


async def store(pipeline: IntakePipeline, *envelopes: Envelope) -> None:
    await pipeline.store([pipeline.prepare(e) for e in envelopes])


async def lead_events(engine: AsyncEngine) -> list[tuple[str, dict[str, Any]]]:
    rows = await table(engine, OutboxEvent, OutboxEvent.__table__.c.type.like("lead.%"))
    return [(row["type"], row["data"]) for row in sorted(rows, key=lambda r: r["id"])]


async def test_a_missed_call_joining_a_form_lead_adds_its_tag_once(pipeline: IntakePipeline, engine) -> None:
    await store(pipeline, form("order-form", T0, name="Olga", phone="+7 900 555-01-01"))
    await store(pipeline, missed_call("CA01", T0 + 5 * MINUTE))
    (lead,) = await live_leads(engine)
    assert lead["channel"] == "form" and lead["tags"] == [CALLBACK]
    base = {"lead_id": lead["id"], "contact_id": lead["contact_id"]}
    (created, updated, changed) = await lead_events(engine)
    assert created[0] == "lead.created" and created[1]["tags"] == []
    call_id = updated[1]["inquiry_id"]
    assert updated == ("lead.updated", base | {"inquiry_id": call_id, "changes": ["tags"], "source": "inquiry"})
    assert changed == ("lead.tags_changed", base | {"inquiry_id": call_id, "from": [], "to": [CALLBACK]})

    await store(pipeline, missed_call("CA02", T0 + 9 * MINUTE))  # the same episode: the tag is on already
    (lead,) = await live_leads(engine)
    assert lead["tags"] == [CALLBACK]
    assert len(await lead_events(engine)) == 3


async def test_in_one_batch_the_lead_the_form_opens_takes_the_calls_tag(pipeline: IntakePipeline, engine) -> None:
    await store(
        pipeline,
        form("order-form", T0, phone=PHONE),
        missed_call("CA01", T0 + MINUTE),
        missed_call("CA02", T0 + 2 * MINUTE),
    )
    (lead,) = await live_leads(engine)
    assert lead["tags"] == [CALLBACK]
    kinds = [(kind, data.get("tags"), data.get("from"), data.get("to")) for kind, data in await lead_events(engine)]
    assert kinds == [
        ("lead.created", [], None, None),
        ("lead.updated", None, None, None),
        ("lead.tags_changed", None, [], [CALLBACK]),
    ]


async def test_the_tag_is_kept_whichever_comes_first(pipeline: IntakePipeline, engine: AsyncEngine) -> None:
    """A lead the call opened keeps its tag when the form joins it, and a tag a manager set stays beside it."""
    await store(pipeline, missed_call("CA01", T0 + 5 * MINUTE))
    await store(pipeline, form("order-form", T0, phone=PHONE))
    (lead,) = await live_leads(engine)
    assert lead["tags"] == [CALLBACK] and lead["channel"] == "form"  # the earlier form is the lead's source
    assert [kind for kind, _ in await lead_events(engine)] == ["lead.created"]

    async with engine.begin() as conn:
        await conn.execute(OutboxEvent.__table__.delete())
        await conn.execute(Lead.__table__.update().values(tags=["vip"]))
    await store(pipeline, missed_call("CA02", T0 + 20 * MINUTE))
    (lead,) = await live_leads(engine)
    assert lead["tags"] == ["vip", CALLBACK]
    changed = [data for kind, data in await lead_events(engine) if kind == "lead.tags_changed"]
    assert [(c["from"], c["to"]) for c in changed] == [(["vip"], ["vip", CALLBACK])]
