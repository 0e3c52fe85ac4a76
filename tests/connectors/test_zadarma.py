"""Zadarma NOTIFY_* notifications through the real hub: signed per Zadarma's scheme (base64 of the hex HMAC-SHA1 of
the event's signature string), a missed call becomes a callback lead and an answered one an inquiry on the contact;
the `?zd_echo=` URL check is echoed.

Material: ../shared/corpus/webhooks/zadarma/ (NOTIFY_*.request.json signed with zadarma_test_secret,
url_verification.request.json) and the signature strings of the official PHP SDK copied in sdk_refs/.
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from leadhub.connectors.zadarma import SIGNED_FIELDS, signature_string, zadarma_signature
from tests.conftest import HubFactory, RunningHub
from tests.connectors.calls_support import by_key_part, inquiries, post, rejected, sample
from tests.helpers import CORPUS, corpus

SECRET = "zadarma_test_secret"
SAMPLES = sorted(p.name for p in (CORPUS / "webhooks" / "zadarma").glob("NOTIFY_*.request.json"))


@pytest.mark.parametrize("name", SAMPLES)
def test_sdk_signature_strings_reproduce_the_samples(name: str) -> None:
    request = sample("zadarma", name)
    form = request["form"]
    assert signature_string(form, SIGNED_FIELDS[form["event"]]) == request["signature_string"]
    assert zadarma_signature(SECRET.encode(), request["signature_string"]) == request["headers"]["Signature"]


def test_the_signature_is_base64_of_hex_not_of_the_raw_digest() -> None:
    assert zadarma_signature(b"k", "x") != zadarma_signature(b"k", "y")
    assert len(zadarma_signature(b"k", "x")) == 56  # base64 of 40 hex characters, not of 20 bytes


@pytest.fixture
async def hub(make_hub: HubFactory) -> RunningHub:
    return await make_hub(
        [{"name": "zadarma", "type": "zadarma", "secrets": ["next_secret", SECRET], "max_body": 2048}]
    )


async def send(hub: RunningHub, name: str, body: bytes | None = None, signature: str | None = None) -> tuple[int, dict]:
    request = sample("zadarma", name)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    headers["Signature"] = request["headers"]["Signature"] if signature is None else signature
    return await post(hub, "/hooks/zadarma", body or request["body"].encode(), headers)


async def test_url_check_is_echoed(hub: RunningHub) -> None:
    check = sample("zadarma", "url_verification.request.json")
    async with hub.session.get(hub.url("/hooks/zadarma"), params=check["query"]) as response:
        assert response.status == 200 and await response.text() == check["expected_response_body"]
    async with hub.session.get(hub.url("/hooks/zadarma"), params={"zd_echo": "<script>"}) as response:
        assert response.status == 400


async def test_call_events_become_leads_inquiries_and_progress(hub: RunningHub) -> None:
    corpus("webhooks", "zadarma")  # skipped, not failed, without the corpus
    assert len(SAMPLES) >= 7, f"NOTIFY_* samples missing from the corpus: {SAMPLES}"
    for name in SAMPLES:
        status, answer = await send(hub, name)
        assert status == 202, (name, answer)
    # NOTIFY_START and NOTIFY_INTERNAL share the missed call's id with NOTIFY_END_missed: three distinct keys.
    items = await inquiries(hub, len(SAMPLES))
    [lead] = await hub.wait_items("/api/leads", 1)
    assert lead["channel"] == "phone" and lead["tags"] == ["callback_requested"]
    [contact] = (await hub.api("/api/contacts", phone="+79001234567"))["items"]
    assert lead["contact_id"] == contact["id"]
    missed = by_key_part(items, "in_6a7b5d8c0e9f1a2b3c4d:NOTIFY_END")
    assert missed["lead_id"] == lead["id"]
    start = by_key_part(items, "in_6a7b5d8c0e9f1a2b3c4d:NOTIFY_START")
    assert start["contact_id"] == contact["id"] and start["lead_id"] is None and start["dropped"] is None
    answered = by_key_part(items, "in_1111:NOTIFY_END")
    assert answered["contact_id"] == contact["id"] and answered["lead_id"] is None
    assert answered["fields"]["call_outcome"] == "answered"
    outbound = by_key_part(items, "out_2222:NOTIFY_OUT_END")
    assert outbound["contact_id"] == contact["id"] and outbound["lead_id"] is None
    assert by_key_part(items, "NOTIFY_RECORD")["dropped"] == "call progress: NOTIFY_RECORD"
    assert by_key_part(items, "NOTIFY_INTERNAL")["dropped"] == "call progress: NOTIFY_INTERNAL"


async def test_the_same_notification_twice_is_one_record(hub: RunningHub) -> None:
    answers = [await send(hub, "NOTIFY_END_missed.request.json") for _ in range(2)]
    assert [a[1]["duplicate"] for a in answers] == [False, True]
    await hub.wait_items("/api/leads", 1)
    await inquiries(hub, 1)


async def test_forged_or_missing_signature_is_401(hub: RunningHub) -> None:
    request = sample("zadarma", "NOTIFY_END_missed.request.json")
    forged = request["body"].replace("caller_id=79001234567", "caller_id=79990000000").encode()
    assert (await send(hub, "NOTIFY_END_missed.request.json", body=forged))[0] == 401
    assert (await send(hub, "NOTIFY_END_missed.request.json", signature=""))[0] == 401
    wrong = zadarma_signature(b"other", request["signature_string"])
    assert (await send(hub, "NOTIFY_END_missed.request.json", signature=wrong))[0] == 401
    assert await rejected(hub, "zadarma", "bad_signature") == 3
    assert (await hub.api("/api/inquiries"))["items"] == []


async def test_unknown_event_signed_like_a_known_one_is_202_and_dropped(hub: RunningHub) -> None:
    body = (
        b"event=NOTIFY_SOMETHING_NEW&pbx_call_id=x1&caller_id=7900&called_did=7495&call_start=2026-11-23+09%3A00%3A00"
    )
    signature = zadarma_signature(SECRET.encode(), "790074952026-11-23 09:00:00")
    status, _ = await send(hub, "NOTIFY_START.request.json", body=body, signature=signature)
    assert status == 202
    [item] = await inquiries(hub, 1)
    assert item["dropped"] == "unknown event: NOTIFY_SOMETHING_NEW"
    assert (await send(hub, "NOTIFY_START.request.json", body=body.replace(b"x1", b"x2"), signature="bm9wZQ=="))[
        0
    ] == 401


async def test_malformed_and_oversized_bodies_are_4xx(hub: RunningHub) -> None:
    assert (await send(hub, "NOTIFY_START.request.json", body=b"caller_id=1"))[0] == 400  # no event
    assert (await send(hub, "NOTIFY_START.request.json", body=b"event=\xff"))[0] == 400
    assert (await send(hub, "NOTIFY_START.request.json", body=b"event=NOTIFY_START&x=" + b"1" * 3000))[0] == 413


@pytest.mark.parametrize("caller_id", ["anonymous", "0"])
async def test_a_missed_call_from_a_hidden_number_opens_no_callback_lead(hub: RunningHub, caller_id: str) -> None:
    """NOTIFY_END_missed.request.json with the caller id withheld: nobody can call it back, so no lead, no contact."""
    request = sample("zadarma", "NOTIFY_END_missed.request.json")
    form = request["form"] | {"caller_id": caller_id}
    body = urlencode(form).encode()
    signature = zadarma_signature(SECRET.encode(), signature_string(form, SIGNED_FIELDS["NOTIFY_END"]))
    assert (await send(hub, "NOTIFY_END_missed.request.json", body, signature))[0] == 202
    [item] = await inquiries(hub, 1)
    assert item["dropped"] == f"NOTIFY_END: the caller's number is hidden ({caller_id})"
    assert item["fields"]["caller_hidden"] == caller_id and item["fields"]["call_outcome"] == "missed"
    assert item["contact_id"] is None and item["lead_id"] is None
    assert (await hub.api("/api/leads"))["items"] == [] and (await hub.api("/api/contacts"))["items"] == []


async def test_missed_calls_without_a_caller_id_open_no_callback_lead(hub: RunningHub) -> None:
    """NOTIFY_END_missed.request.json with caller_id empty, twice (two calls): as with a withheld number nobody can
    call back, so no lead, no empty contact and no callback task per call; each is kept as a dropped inquiry."""
    form = sample("zadarma", "NOTIFY_END_missed.request.json")["form"] | {"caller_id": ""}
    signature = zadarma_signature(SECRET.encode(), signature_string(form, SIGNED_FIELDS["NOTIFY_END"]))
    for call in ("in_first", "in_second"):
        body = urlencode(form | {"pbx_call_id": call}).encode()
        assert (await send(hub, "NOTIFY_END_missed.request.json", body, signature))[0] == 202
    items = await inquiries(hub, 2)
    assert {i["dropped"] for i in items} == {"NOTIFY_END: a call without the customer's number"}
    assert [(i["contact_id"], i["lead_id"], i["fields"]["call_outcome"]) for i in items] == [(None, None, "missed")] * 2
    assert (await hub.api("/api/leads"))["items"] == [] and (await hub.api("/api/contacts"))["items"] == []


@pytest.mark.parametrize(
    ("caller_id", "phone"),
    [("8613812345678", "+8613812345678"), ("819012345678", "+819012345678"), ("89001234567", "+79001234567")],
)
async def test_international_callers_starting_with_8_keep_their_number(
    hub: RunningHub, caller_id: str, phone: str
) -> None:
    """NOTIFY_END_missed.request.json from a Chinese / Japanese mobile sent without `+` (the region, RU, reads only
    the 11-digit trunk-prefixed national number): the callback lead's contact has the caller's number."""
    form = sample("zadarma", "NOTIFY_END_missed.request.json")["form"] | {"caller_id": caller_id}
    signature = zadarma_signature(SECRET.encode(), signature_string(form, SIGNED_FIELDS["NOTIFY_END"]))
    assert (await send(hub, "NOTIFY_END_missed.request.json", urlencode(form).encode(), signature))[0] == 202
    [lead] = await hub.wait_items("/api/leads", 1)
    [contact] = (await hub.api("/api/contacts", phone=phone))["items"]
    assert lead["contact_id"] == contact["id"] and lead["tags"] == ["callback_requested"]
