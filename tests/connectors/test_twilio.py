"""Twilio voice webhooks through the real hub: signed per Twilio's scheme (HMAC-SHA1 over the public URL and the
sorted parameters), an incoming call is kept on the contact and a no-answer status callback becomes a callback lead.

Material: ../shared/corpus/webhooks/twilio/ (incoming_call.request.json, status_callback_no_answer.request.json,
signed with auth token twilio_test_auth_token) and the twilio-python RequestValidator test vectors quoted in
that folder's MANIFEST.md and verify_signatures.py.
"""

from __future__ import annotations

import hashlib
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

import pytest

from leadhub.connectors.twilio import signature_valid, twilio_signature, url_variants
from tests.conftest import HubFactory, RunningHub
from tests.connectors.calls_support import by_key_part, inquiries, post, rejected, sample

VECTOR_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
VECTOR_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
    "Caller": "+14158675309",
}
JSON_BODY = b'{"property": "value", "boolean": true}'
TOKEN = "twilio_test_auth_token"  # the corpus samples' test token
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_sdk_vector_form_params() -> None:
    assert twilio_signature(b"12345", VECTOR_URL, VECTOR_PARAMS.items()) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_sdk_vector_duplicate_keys_are_sorted_and_deduplicated() -> None:
    params = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234"), ("Digits", "1234")]
    assert twilio_signature(b"12345", VECTOR_URL, params) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


def test_sdk_vector_with_and_without_the_default_port() -> None:
    ported = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    assert twilio_signature(b"12345", ported, VECTOR_PARAMS.items()) == "kvajT1Ptam85bY51eRf/AJRuM3w="
    params = list(VECTOR_PARAMS.items())
    assert signature_valid("kvajT1Ptam85bY51eRf/AJRuM3w=", [b"12345"], VECTOR_URL, b"", params)
    assert signature_valid("RSOYDt4T1cUTdK1PDd93/VVr8B8=", [b"12345"], ported, b"", params)
    assert not signature_valid("RSOYDt4T1cUTdK1PDd93/VVr8B8=", [b"wrong"], VECTOR_URL, b"", params)
    assert url_variants("https://h:99999/x") == ["https://h:99999/x"]  # a bad port is not an error


def test_sdk_vector_json_body_is_signed_through_body_sha256() -> None:
    digest = hashlib.sha256(JSON_BODY).hexdigest()
    assert digest == "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
    url = f"{VECTOR_URL}&bodySHA256={digest}"
    assert signature_valid("a9nBmqA0ju/hNViExpshrM61xv4=", [b"12345"], url, JSON_BODY, [])
    assert not signature_valid("a9nBmqA0ju/hNViExpshrM61xv4=", [b"12345"], url, JSON_BODY + b" ", [])


@pytest.mark.parametrize("name", ["incoming_call", "status_callback_no_answer"])
def test_corpus_samples_verify(name: str) -> None:
    request = sample("twilio", f"{name}.request.json")
    params = list(request["form"].items())
    assert signature_valid(request["headers"]["X-Twilio-Signature"], [TOKEN.encode()], request["url"], b"", params)


@pytest.fixture
async def hub(make_hub: HubFactory) -> RunningHub:
    handle = await make_hub(
        [{"name": "twilio", "type": "twilio", "secrets": ["rotated_new_token", TOKEN], "max_body": "4KiB"}],
        public_url="https://crm.example.com",
    )
    callback = sample("twilio", "status_callback_no_answer.request.json")
    sent = parsedate_to_datetime(callback["form"]["Timestamp"]).timestamp()
    handle.hub.connectors["twilio"].clock = lambda: sent + 30  # the sample's time, so the replay window holds
    return handle


async def send(hub: RunningHub, name: str, **changes: Any) -> Any:
    request = sample("twilio", f"{name}.request.json")
    path = request["url"].removeprefix("https://crm.example.com")
    body = changes.pop("body", request["body"].encode())
    headers = FORM | {"X-Twilio-Signature": request["headers"]["X-Twilio-Signature"]} | changes
    return await post(hub, path, body, {k: v for k, v in headers.items() if v is not None})


async def test_missed_call_becomes_a_callback_lead_and_the_ring_an_inquiry(hub: RunningHub) -> None:
    assert (await send(hub, "incoming_call"))[0] == 202
    status, answer = await send(hub, "status_callback_no_answer")
    assert status == 202 and answer["duplicate"] is False
    [lead] = await hub.wait_items("/api/leads", 1)
    assert lead["channel"] == "phone" and lead["tags"] == ["callback_requested"]
    contacts = (await hub.api("/api/contacts", phone="+7 900 123-45-67"))["items"]
    assert [c["id"] for c in contacts] == [lead["contact_id"]]
    items = await inquiries(hub, 2)
    ring = by_key_part(items, ":ringing")
    assert ring["lead_id"] is None and ring["contact_id"] == lead["contact_id"] and ring["dropped"] is None
    missed = by_key_part(items, ":no-answer")
    assert missed["lead_id"] == lead["id"] and missed["key"].startswith("twilio:twilio:CA0000")


async def test_the_same_callback_twice_is_one_record(hub: RunningHub) -> None:
    answers = [await send(hub, "status_callback_no_answer") for _ in range(2)]
    assert [a[1]["duplicate"] for a in answers] == [False, True]
    await hub.wait_items("/api/leads", 1)
    await inquiries(hub, 1)


async def test_forged_missing_or_stale_signatures_are_401(hub: RunningHub) -> None:
    request = sample("twilio", "status_callback_no_answer.request.json")
    forged_body = request["body"].replace("no-answer", "completed").encode()
    assert (await send(hub, "status_callback_no_answer", body=forged_body))[0] == 401
    assert (await send(hub, "status_callback_no_answer", **{"X-Twilio-Signature": None}))[0] == 401
    wrong_key = twilio_signature(b"not-the-token", request["url"], request["form"].items())
    assert (await send(hub, "status_callback_no_answer", **{"X-Twilio-Signature": wrong_key}))[0] == 401
    assert await rejected(hub, "twilio", "bad_signature") == 3
    hub.hub.connectors["twilio"].clock = lambda: parsedate_to_datetime(request["form"]["Timestamp"]).timestamp() + 7200
    status, error = await send(hub, "status_callback_no_answer")
    assert status == 401 and error["error"] == "stale"
    assert (await hub.api("/api/inquiries"))["items"] == []


async def test_json_body_signed_with_body_sha256_is_stored_as_dropped(hub: RunningHub) -> None:
    digest = hashlib.sha256(JSON_BODY).hexdigest()
    url = f"https://crm.example.com/hooks/twilio?bodySHA256={digest}"
    signature = twilio_signature(TOKEN.encode(), url, [])
    headers = {"Content-Type": "application/json", "X-Twilio-Signature": signature, "I-Twilio-Idempotency-Token": "t-1"}
    answers = [await post(hub, f"/hooks/twilio?bodySHA256={digest}", JSON_BODY, headers) for _ in range(2)]
    assert [a[0] for a in answers] == [202, 202] and answers[1][1]["duplicate"] is True
    [item] = await inquiries(hub, 1)
    assert item["dropped"] == "unknown event: json body" and item["key"] == "twilio:twilio:json:t-1"
    assert (await post(hub, f"/hooks/twilio?bodySHA256={digest}", JSON_BODY + b"x", headers))[0] == 401


async def test_malformed_and_oversized_bodies_are_4xx(hub: RunningHub) -> None:
    url = "https://crm.example.com/hooks/twilio"
    assert (await post(hub, "/hooks/twilio", b"\xff\xfe=1", FORM | {"X-Twilio-Signature": "x"}))[0] == 400
    no_sid = [("CallStatus", "ringing")]
    status, error = await post(
        hub,
        "/hooks/twilio",
        b"CallStatus=ringing",
        FORM | {"X-Twilio-Signature": twilio_signature(TOKEN.encode(), url, no_sid)},
    )
    assert status == 400 and "CallSid" in error["detail"]
    assert (await post(hub, "/hooks/twilio", b"a=" + b"x" * 5000, FORM))[0] == 413
    async with hub.session.get(hub.url("/hooks/twilio")) as response:
        assert response.status == 405


async def send_form(hub: RunningHub, form: dict[str, str], path: str = "/hooks/twilio/status") -> Any:
    """POST a constructed callback form signed with the corpus token for the URL Twilio would call."""
    signature = twilio_signature(TOKEN.encode(), f"https://crm.example.com{path}", form.items())
    return await post(hub, path, urlencode(form).encode(), FORM | {"X-Twilio-Signature": signature})


def dial_leg(status: str, call_sid: str) -> dict[str, str]:
    """A `<Number statusCallback>` callback: the leg a `<Dial>` of the corpus call (the no-answer sample's CallSid)
    rings to the team's phone +79169990000; From is the caller."""
    parent = sample("twilio", "status_callback_no_answer.request.json")["form"]
    return {
        "AccountSid": parent["AccountSid"],
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "ParentCallSid": parent["CallSid"],
        "CallStatus": status,
        "Direction": "outbound-dial",
        "From": parent["From"],
        "Caller": parent["From"],
        "To": "+79169990000",
        "Called": "+79169990000",
        "Timestamp": parent["Timestamp"],
        "CallbackSource": "call-progress-events",
    }


async def test_a_dial_leg_is_the_callers_call_and_its_no_answer_joins_the_callers_lead(hub: RunningHub) -> None:
    """The caller's leg (the corpus no-answer callback), the `<Dial>` leg to the team's phone and the `<Dial action>`
    callback are one call: one callback lead on the caller, and the team's phone is nobody's contact."""
    parent = sample("twilio", "status_callback_no_answer.request.json")["form"]
    assert (await send_form(hub, dial_leg("no-answer", "CA00000000000000000000000000000002")))[0] == 202
    assert (await send(hub, "status_callback_no_answer"))[0] == 202
    action = {k: parent[k] for k in ("AccountSid", "CallSid", "Direction", "From", "To", "Timestamp")}
    assert (await send_form(hub, action | {"CallStatus": "in-progress", "DialCallStatus": "no-answer"}))[0] == 202
    items = await inquiries(hub, 3)
    [lead] = (await hub.api("/api/leads"))["items"]
    assert lead["tags"] == ["callback_requested"]
    assert [i["lead_id"] for i in items] == [lead["id"]] * 3
    leg = by_key_part(items, "CA00000000000000000000000000000002:no-answer")
    assert leg["phone"] == "+79001234567" and leg["fields"]["call_outcome"] == "missed"
    assert leg["fields"]["ParentCallSid"] == parent["CallSid"]
    assert (await hub.api("/api/contacts", phone="+79169990000"))["items"] == []


async def test_an_answered_dial_leg_is_history_on_the_caller(hub: RunningHub) -> None:
    assert (await send_form(hub, dial_leg("completed", "CA00000000000000000000000000000003")))[0] == 202
    [item] = await inquiries(hub, 1)
    assert item["fields"]["call_outcome"] == "answered" and item["lead_id"] is None and item["dropped"] is None
    assert item["phone"] == "+79001234567" and item["contact_id"] is not None
    assert (await hub.api("/api/contacts", phone="+79169990000"))["items"] == []
    assert (await hub.api("/api/leads"))["items"] == []


async def test_a_keypad_spelled_withheld_caller_id_is_a_hidden_number(hub: RunningHub) -> None:
    """Twilio has sent a withheld caller id as the word spelled on a phone keypad (+266696687 is ANONYMOUS), on the
    caller's leg and on `<Dial>` legs: nobody can call it back, so a missed call from it opens no lead."""
    parent = sample("twilio", "status_callback_no_answer.request.json")["form"]
    anonymous = parent | {"CallSid": "CA00000000000000000000000000000004", "From": "+266696687", "Caller": "+266696687"}
    unavailable = dial_leg("no-answer", "CA00000000000000000000000000000005") | {"From": "+86282452253"}
    assert (await send_form(hub, anonymous))[0] == 202 and (await send_form(hub, unavailable))[0] == 202
    items = await inquiries(hub, 2)
    assert sorted(i["dropped"] or "" for i in items) == [
        "call no-answer: the caller's number is hidden (ANONYMOUS)",
        "call no-answer: the caller's number is hidden (UNAVAILABLE)",
    ]
    assert all(i["contact_id"] is None and i["phone"] is None for i in items)
    assert (await hub.api("/api/contacts"))["items"] == []
