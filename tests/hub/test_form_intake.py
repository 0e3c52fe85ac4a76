"""A form post of each content type becomes a lead, normalized; an idempotency key makes a retry a no-op."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import aiohttp
import pytest

from leadhub.hub.queue import INBOUND
from tests.conftest import HubFactory, RunningHub
from tests.helpers import wait_for

TEN_MINUTES = 600.0  # the default dedupe_window


def _multipart() -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("Name", "Мария Иванова")
    form.add_field("Phone", "8 (916) 765-43-21")
    form.add_field("Email", "  Maria@Example.RU ")
    form.add_field("message", "Перезвоните, пожалуйста")
    form.add_field("cv", b"%PDF-1.4 fake", filename="cv.pdf", content_type="application/pdf")
    return form


CASES = {
    "json": {
        "json": {
            "name": "ivan petrov",
            "phone": "+7 916 123-45-67",
            "email": "Ivan.Petrov@Example.COM",
            "message": "need a quote",
            "utm_source": "google",
            "budget": "100k",
        },
    },
    "urlencoded": {
        "data": {"Name": "Anna", "Phone": "8-916-555-44-33", "Email": "ANNA@MAIL.RU", "utm_campaign": "spring"},
    },
    "multipart": {"data": _multipart},
}
EXPECTED = {
    "json": ("+79161234567", "ivan.petrov@example.com", "Ivan Petrov"),
    "urlencoded": ("+79165554433", "anna@mail.ru", "Anna"),
    "multipart": ("+79167654321", "maria@example.ru", "Мария Иванова"),
}


@pytest.mark.parametrize("kind", CASES)
async def test_each_content_type_becomes_a_normalized_lead(form_hub: RunningHub, kind: str) -> None:
    kwargs = {k: (v() if callable(v) else v) for k, v in CASES[kind].items()}
    async with await form_hub.post("/hooks/site-form", **kwargs) as response:
        assert response.status == 202, await response.text()
        body = await response.json()
    assert body["duplicate"] is False and body["id"]

    leads = await form_hub.wait_items("/api/leads", 1)
    phone, email, name = EXPECTED[kind]
    contacts = (await form_hub.api("/api/contacts", phone=phone))["items"]
    assert [c["id"] for c in contacts] == [leads[0]["contact_id"]]
    contact = contacts[0]
    assert (contact["phone"], contact["email"], contact["name"]) == (phone, email, name)
    inquiry = await form_hub.api(f"/api/inquiries/{body['id']}")
    assert inquiry["lead_id"] == leads[0]["id"] and inquiry["contact_id"] == contact["id"]
    assert inquiry["channel"] == "form" and inquiry["connector"] == "site-form"


async def test_extra_fields_and_utm_are_kept(form_hub: RunningHub) -> None:
    async with await form_hub.post("/hooks/site-form", **CASES["json"]) as response:
        inquiry_id = (await response.json())["id"]
    await form_hub.wait_items("/api/leads", 1)
    inquiry = await form_hub.api(f"/api/inquiries/{inquiry_id}")
    assert inquiry["fields"] == {"budget": "100k"}
    lead = (await form_hub.api("/api/leads"))["items"][0]
    assert lead["attribution"] == {"utm_source": "google"}
    assert lead["message"] == "need a quote"


async def test_same_idempotency_key_is_a_duplicate_and_stores_once(form_hub: RunningHub) -> None:
    headers = {"Idempotency-Key": "order-form-42"}
    payload = {"name": "Ivan", "phone": "+79161234567"}
    answers = []
    for _ in range(3):
        async with await form_hub.post("/hooks/site-form", json=payload, headers=headers) as response:
            assert response.status == 202
            answers.append(await response.json())
    assert [a["duplicate"] for a in answers] == [False, True, True]
    assert len({a["id"] for a in answers}) == 1
    await form_hub.wait_items("/api/leads", 1)
    assert len((await form_hub.api("/api/inquiries"))["items"]) == 1
    # The same key with a different body is still the same submission.
    async with await form_hub.post("/hooks/site-form", json={"name": "Other"}, headers=headers) as response:
        assert (await response.json())["duplicate"] is True


async def test_configured_idempotency_field_dedupes_resubmissions(make_hub) -> None:  # type: ignore[no-untyped-def]
    hub = await make_hub([{"name": "tilda-form", "type": "form", "idempotency_field": "tranid", "rate_limit": None}])
    answers = []
    # The resubmission's body differs (another timestamp), so only the configured field can tell it is the same.
    for sent in ("10:00:01", "10:00:07"):
        data = {"Name": "A", "Phone": "+79160000001", "tranid": "t-1", "sent": sent}
        async with await hub.post("/hooks/tilda-form", data=data) as r:
            assert r.status == 202
            answers.append(await r.json())
    assert [a["duplicate"] for a in answers] == [False, True] and answers[0]["id"] == answers[1]["id"], answers
    async with await hub.post("/hooks/tilda-form", data={"Name": "A", "Phone": "+79160000001", "tranid": "t-2"}) as r:
        assert (await r.json())["duplicate"] is False
    await hub.wait_items("/api/inquiries", 2)


async def test_an_idempotency_field_is_trimmed_so_the_id_answered_is_the_stored_inquirys(make_hub) -> None:  # type: ignore[no-untyped-def]
    """The queue trims a key: " t-1 " was stored as another key, so another id, than the one answered."""
    hub = await make_hub([{"name": "tilda-form", "type": "form", "idempotency_field": "tranid", "rate_limit": None}])
    answers = []
    for tranid in (" t-1 ", "t-1", "t-2\u2028"):
        async with await hub.post("/hooks/tilda-form", data={"Name": "A", "tranid": tranid}) as r:
            assert r.status == 202
            answers.append(await r.json())
    assert [a["duplicate"] for a in answers] == [False, True, False], answers
    stored = await hub.wait_items("/api/inquiries", 2)
    assert sorted(i["id"] for i in stored) == sorted({a["id"] for a in answers})
    assert sorted(i["key"] for i in stored) == ["form:tilda-form:field:t-1", "form:tilda-form:field:t-2"]


async def test_an_idempotency_field_with_a_line_break_is_400(make_hub) -> None:  # type: ignore[no-untyped-def]
    """The queue turns a line break into a space: "a\\nb" was stored as "a b", under another id than the one
    answered, and as the same submission as "a b"."""
    hub = await make_hub([{"name": "tilda-form", "type": "form", "idempotency_field": "tranid", "rate_limit": None}])
    for tranid in ("a\nb", "a\rb", "a\x00b"):
        async with await hub.post("/hooks/tilda-form", json={"Name": "A", "tranid": tranid}) as r:
            answer = await r.json()
        assert (r.status, answer["error"]) == (400, "malformed"), answer
        # a NUL is refused first, as any form field holding one is
        expected = "field 'tranid' holds a NUL" if "\x00" in tranid else "idempotency_field 'tranid' holds a control"
        assert expected in answer["detail"], answer
    assert (await hub.api("/api/inquiries"))["items"] == []


async def test_identical_bodies_within_the_window_are_one_submission(form_hub: RunningHub) -> None:
    payload = {"name": "Double Click", "phone": "+79160000002"}
    async with await form_hub.post("/hooks/site-form", json=payload) as first:
        first_body = await first.json()
    async with await form_hub.post("/hooks/site-form", json=payload) as second:
        second_body = await second.json()
    assert second_body == {"id": first_body["id"], "duplicate": True}


async def test_same_person_twice_is_one_contact(form_hub: RunningHub) -> None:
    for body in ({"email": "Same@Person.com", "message": "a"}, {"email": "same@person.com ", "message": "b"}):
        async with await form_hub.post("/hooks/site-form", json=body) as response:
            assert response.status == 202
    inquiries = await form_hub.wait_items("/api/inquiries", 2)
    assert len({i["contact_id"] for i in inquiries}) == 1
    # Minutes apart, inside the lead window: one lead with both as touches.
    (lead,) = (await form_hub.api("/api/leads"))["items"]
    touches = (await form_hub.api(f"/api/leads/{lead['id']}"))["touches"]
    assert sorted(t["id"] for t in touches) == sorted(i["id"] for i in inquiries)
    contacts = (await form_hub.api("/api/contacts", email="SAME@person.com"))["items"]
    assert len(contacts) == 1


async def test_relayed_events_are_json_with_the_stored_data(form_hub: RunningHub) -> None:
    """The relay passes the stored event JSON through as text; on both stores the message must parse."""
    import json

    async with await form_hub.post("/hooks/site-form", json={"name": "Evented", "email": "ev@example.com"}) as r:
        inquiry_id = (await r.json())["id"]
    lead = (await form_hub.wait_items("/api/leads", 1))[0]
    jetstream = form_hub.hub.queue.jetstream

    async def relayed() -> bool:
        try:
            await jetstream.get_last_msg("EVENTS", "events.lead.created")
        except Exception:  # not there yet
            return False
        return True

    await wait_for(relayed, what="the lead.created event on EVENTS")
    message = await jetstream.get_last_msg("EVENTS", "events.lead.created")
    event = json.loads(message.data)
    assert event["type"] == "lead.created" and event["subject_id"] == lead["id"]
    assert event["data"]["inquiry_id"] == inquiry_id and event["data"]["contact_id"] == lead["contact_id"]
    assert message.headers["Nats-Msg-Id"] == event["id"]


async def test_file_only_posts_are_told_apart_by_their_files(form_hub: RunningHub) -> None:
    """The body-hash key covered the fields only: a second file-only post was answered "duplicate" and not stored."""

    def upload(content: bytes) -> aiohttp.FormData:
        form = aiohttp.FormData()
        form.add_field("attachment", content, filename="brief.pdf", content_type="application/pdf")
        return form

    answers = []
    for content in (b"%PDF-1.4 first brief", b"%PDF-1.4 second brief", b"%PDF-1.4 first brief"):
        async with await form_hub.post("/hooks/site-form", data=upload(content)) as response:
            assert response.status == 202, await response.text()
            answers.append(await response.json())
    assert [a["duplicate"] for a in answers] == [False, False, True], answers
    assert answers[0]["id"] == answers[2]["id"] != answers[1]["id"]
    await form_hub.wait_items("/api/inquiries", 2)


def _clock(*moments: float) -> Callable[[], float]:
    """A form connector's clock reading `moments` in turn, one per post."""
    readings: Iterator[float] = iter(moments)
    return lambda: next(readings)


def _next_bucket_edge() -> float:
    return (time.time() // TEN_MINUTES + 1) * TEN_MINUTES


async def test_a_double_click_across_a_bucket_edge_is_one_submission(form_hub: RunningHub) -> None:
    """The body's key took the 10-minute slice of the clock it fell in: two posts a second apart on either side of
    a slice's edge got two keys, two inquiries and two leads, though the README calls them one submission."""
    edge = _next_bucket_edge()
    form_hub.hub.connectors["site-form"].clock = _clock(edge - 0.5, edge + 0.5, edge - 0.5 + TEN_MINUTES)
    payload = {"name": "Double Click", "phone": "+79160000003"}
    answers = []
    for _ in range(3):
        async with await form_hub.post("/hooks/site-form", json=payload) as response:
            assert response.status == 202, await response.text()
            answers.append(await response.json())
    assert answers[1] == {"id": answers[0]["id"], "duplicate": True}, answers
    assert answers[2]["duplicate"] is False and answers[2]["id"] != answers[0]["id"]  # a window later: a new one
    await form_hub.wait_items("/api/inquiries", 2)


async def _inbound_drained(hub: RunningHub) -> bool:
    return (await hub.hub.queue.jetstream.stream_info(INBOUND)).state.messages == 0


@pytest.mark.parametrize("later_first", [False, True], ids=["earlier-copy-first", "later-copy-first"])
async def test_a_copy_across_the_bucket_edge_on_another_replica_is_stored_once(
    make_hub: HubFactory, later_first: bool
) -> None:
    """Another replica, or the daemon after a restart, does not know the first copy's key: the store recognises
    the copy in the neighbouring bucket received within the window, in whichever order the two arrive."""
    form = {"name": "site-form", "type": "form", "rate_limit": None}
    replicas = [await make_hub([form]), await make_hub([form])]  # one database, each with its own queue
    edge = _next_bucket_edge()
    moments = [edge + 0.5, edge - 0.5] if later_first else [edge - 0.5, edge + 0.5]
    payload = {"name": "Restarted", "phone": "+79160000004"}
    for hub, moment in zip(replicas, moments, strict=True):
        hub.hub.connectors["site-form"].clock = _clock(moment)
        async with await hub.post("/hooks/site-form", json=payload) as response:
            assert response.status == 202, await response.text()
        await wait_for(lambda hub=hub: _inbound_drained(hub), timeout=15, what="the pipeline to take the copy")
    [inquiry] = (await replicas[0].api("/api/inquiries"))["items"]
    assert inquiry["name"] == "Restarted"
    await replicas[0].wait_items("/api/leads", 1)


WINDOWS_1251 = {"Content-Type": "application/x-www-form-urlencoded; charset=windows-1251"}


async def test_a_form_in_a_declared_charset_is_stored_in_that_charset(form_hub: RunningHub) -> None:
    """An old cp1251 page or PHP client: parse_qsl read the escapes as UTF-8 with U+FFFD in their place, so name and
    message were lost and the post answered 202."""
    body = "name=%C8%E2%E0%ED&phone=%2B79160000001&message=%CF%E5%F0%E5%E7%E2%EE%ED%E8%F2%E5"
    async with await form_hub.post("/hooks/site-form", data=body, headers=WINDOWS_1251) as response:
        assert response.status == 202, await response.text()
    [inquiry] = await form_hub.wait_items("/api/inquiries", 1)
    assert (inquiry["name"], inquiry["message"]) == ("Иван", "Перезвоните")


@pytest.mark.parametrize(
    ("content_type", "detail"),
    [
        ("application/x-www-form-urlencoded", "percent-escaped bytes that are not UTF-8; send UTF-8 or declare"),
        ("application/x-www-form-urlencoded; charset=x-no-such", "unknown charset 'x-no-such' in Content-Type"),
    ],
    ids=["undeclared", "unknown charset"],
)
async def test_a_form_not_in_its_charset_is_400_naming_the_problem(
    form_hub: RunningHub, content_type: str, detail: str
) -> None:
    body = "name=%C8%E2%E0%ED&phone=%2B79160000001"
    async with await form_hub.post("/hooks/site-form", data=body, headers={"Content-Type": content_type}) as r:
        assert r.status == 400, await r.text()
        answer = await r.json()
    assert answer["error"] == "malformed" and detail in answer["detail"], answer
