"""The generic `telephony` connector through the real hub, configured as for UIS notifications (the admin templates
the body; ../shared/corpus/webhooks/uis/MANIFEST.md lists the placeholders) and as for MegaFon's CRM API with a
URL token (field names from the same MANIFEST): HMAC-SHA256 over the raw body, the mapping, the event table.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest

from leadhub.hub.config import ConfigError, config_from_dict
from tests.conftest import HubFactory, RunningHub
from tests.connectors.calls_support import inquiries, post, rejected

SECRET = "uis-shared-secret"
NOW = 1795413600.0
UIS = {
    "name": "uis",
    "type": "telephony",
    "secrets": ["new-secret", SECRET],
    "signature_header": "X-UIS-Signature",
    "max_body": 2048,
    "fields": {
        "phone": "contact_phone_number",
        "call_id": "call_session_id",
        "event": "notification_name",
        "time": "notification_time",
        "name": "contact.full_name",
    },
    "events": {"lost_call": "missed", "call_answered": "answered", "call_start": "start"},
}
MEGAFON = {
    "name": "megafon",
    "type": "telephony",
    "auth": "token",
    "secret": "crm-token",
    "fields": {"phone": "phone", "call_id": "callid", "event": "type", "status": "status"},
    "events": {"INCOMING": "start", "missed": "missed", "Success": "answered"},
}


def test_mapping_and_outcomes_are_checked_at_start_up() -> None:
    for broken, message in (
        (UIS | {"fields": {"phone": "p", "colour": "c"}}, "unknown leadhub field"),
        (UIS | {"events": {"x": "maybe"}}, "unknown outcome"),
        (UIS | {"fields": {"call_id": "c"}}, "fields.phone is required"),
    ):
        with pytest.raises(ConfigError, match=message):
            config_from_dict({"connectors": [broken]}, env={})


@pytest.fixture
async def hub(make_hub: HubFactory) -> RunningHub:
    handle = await make_hub([UIS, MEGAFON])
    handle.hub.connectors["uis"].clock = lambda: NOW
    return handle


def uis_event(name: str, session: int | str, **extra: Any) -> bytes:
    event = {
        "notification_name": name,
        "call_session_id": session,
        "contact_phone_number": "79001234567",
        "notification_time": "2026-11-23T06:00:00+00:00",
        "contact": {"full_name": "Пётр Сидоров"},
    }
    return json.dumps(event | extra, ensure_ascii=False).encode()


async def send_uis(hub: RunningHub, body: bytes, secret: str = SECRET, form: str = "hex") -> tuple[int, Any]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256)
    signature = {
        "hex": digest.hexdigest(),
        "prefixed": "sha256=" + digest.hexdigest(),
        "base64": base64.b64encode(digest.digest()).decode(),
    }[form]
    return await post(hub, "/hooks/uis", body, {"Content-Type": "application/json", "X-UIS-Signature": signature})


async def test_lost_call_is_a_callback_lead_answered_and_started_calls_inquiries(hub: RunningHub) -> None:
    assert (await send_uis(hub, uis_event("call_start", 1)))[0] == 202
    assert (await send_uis(hub, uis_event("lost_call", 1), form="prefixed"))[0] == 202
    assert (await send_uis(hub, uis_event("call_answered", 2), form="base64"))[0] == 202
    assert (await send_uis(hub, uis_event("call_transferred", 2), secret="new-secret"))[0] == 202
    [lead] = await hub.wait_items("/api/leads", 1)
    assert lead["channel"] == "phone" and lead["tags"] == ["callback_requested"]
    [contact] = (await hub.api("/api/contacts", phone="+79001234567"))["items"]
    assert contact["name"] == "Пётр Сидоров" and contact["id"] == lead["contact_id"]
    items = {i["key"]: i for i in await inquiries(hub, 4)}
    assert items["telephony:uis:1:call_start"]["lead_id"] is None
    assert items["telephony:uis:1:lost_call"]["lead_id"] == lead["id"]
    assert items["telephony:uis:2:call_answered"]["contact_id"] == contact["id"]
    assert items["telephony:uis:2:call_answered"]["lead_id"] is None
    assert items["telephony:uis:2:call_transferred"]["dropped"] == "unknown event: call_transferred"


async def test_same_event_twice_is_one_record(hub: RunningHub) -> None:
    answers = [await send_uis(hub, uis_event("lost_call", 7)) for _ in range(2)]
    assert [a[1]["duplicate"] for a in answers] == [False, True]
    await inquiries(hub, 1)


@pytest.mark.parametrize("session", ["c\n1", "c\r1"], ids=["LF", "CR"])
async def test_the_id_answered_is_the_stored_inquirys_when_the_call_id_holds_a_line_break(
    hub: RunningHub, session: str
) -> None:
    """The queue turns a line break in a key into a space: it was stored under another key, and so another id,
    than the one answered."""
    status, answer = await send_uis(hub, uis_event("lost_call", session))
    assert status == 202, answer
    [item] = await inquiries(hub, 1)
    assert item["id"] == answer["id"], item["key"]


async def test_forged_missing_and_stale_signatures_are_401(hub: RunningHub) -> None:
    assert (await send_uis(hub, uis_event("lost_call", 1), secret="guess"))[0] == 401
    async with await hub.post("/hooks/uis", data=uis_event("lost_call", 1)) as response:
        assert response.status == 401
    assert await rejected(hub, "uis", "bad_signature") == 2
    stale = uis_event("lost_call", 3, notification_time="2026-11-20T06:00:00+00:00")
    status, error = await send_uis(hub, stale)
    assert status == 401 and error["error"] == "stale"
    assert (await hub.api("/api/inquiries"))["items"] == []


@pytest.mark.parametrize("time", ["²", "٣", "soon", ""], ids=["superscript", "arabic-indic", "word", "empty"])
async def test_a_signed_event_with_an_unreadable_time_is_accepted_without_the_window(
    hub: RunningHub, time: str
) -> None:
    """str.isdigit() takes '²' and other digits float() refuses: such a time is unreadable (it was a 500)."""
    status, answer = await send_uis(hub, uis_event("lost_call", 4, notification_time=time))
    assert status == 202, answer
    await inquiries(hub, 1)


async def test_a_signed_time_too_large_for_a_float_is_400(hub: RunningHub) -> None:
    """A whole number float() cannot hold is infinite, as 1e999 is (it was a 500)."""
    for time in (10**400, "9" * 400):
        status, answer = await send_uis(hub, uis_event("lost_call", 5, notification_time=time))
        assert (status, answer["error"]) == (400, "malformed"), answer


async def test_token_mode_takes_get_and_form_posts(hub: RunningHub) -> None:
    query = {"token": "crm-token", "cmd": "history", "type": "INCOMING", "phone": "+79160001122", "callid": "m1"}
    async with hub.session.get(hub.url("/hooks/megafon"), params=query) as response:
        assert response.status == 202
    form = {"cmd": "history", "type": "INCOMING", "status": "missed", "phone": "+79160001122", "callid": "m1"}
    async with await hub.post("/hooks/megafon?token=crm-token", data=form) as response:
        assert response.status == 202
    async with await hub.post("/hooks/megafon?token=wrong", data=form) as response:
        assert response.status == 401
    [lead] = await hub.wait_items("/api/leads", 1)
    assert lead["tags"] == ["callback_requested"]
    items = await inquiries(hub, 2)
    assert all("crm-token" not in json.dumps(i) for i in items)


@pytest.mark.store_independent  # the webhook's reading; once, on the embedded default: not about the store
async def test_a_get_query_with_bytes_that_are_not_utf8_is_400(hub: RunningHub) -> None:
    """The GET's query became the payload through aiohttp's parsed query, U+FFFD in place of what was not UTF-8."""
    async with hub.session.get(hub.url("/hooks/megafon?token=crm-token&type=INCOMING&phone=%FF79&callid=m9")) as r:
        assert r.status == 400 and "not UTF-8" in (await r.json())["detail"]
    assert (await hub.api("/api/inquiries"))["items"] == []


async def test_malformed_wrong_types_and_oversized_are_4xx(hub: RunningHub) -> None:
    for body in (uis_event("lost_call", 1)[:30], b"[1]", b"\xff\xfe"):
        status, error = await send_uis(hub, body)
        assert status == 400 and error["error"] == "malformed", body
    odd = json.dumps({"notification_name": ["x"], "call_session_id": {"a": 1}, "contact_phone_number": 5}).encode()
    assert (await send_uis(hub, odd))[0] == 202
    [item] = await inquiries(hub, 1)
    assert item["dropped"] == "unknown event: (no event)"
    assert (await send_uis(hub, uis_event("lost_call", 1, pad="x" * 3000)))[0] == 413


@pytest.mark.parametrize(
    ("region", "sent", "number"),
    [
        ("CN", "13812345678", "+8613812345678"),  # an 11-digit national number without a trunk prefix
        ("BR", "11987654321", "+5511987654321"),
        ("RU", "84951234567", "+74951234567"),  # trunk-prefixed and bare national numbers, as before
        ("RU", "4951234567", "+74951234567"),
        ("RU", "49301234567", "+49301234567"),  # international without the plus, as before
    ],
)
async def test_digits_only_numbers_are_read_with_the_default_region(
    make_hub: HubFactory, region: str, sent: str, number: str
) -> None:
    """A PBX's number in digits only that is no valid number with a plus put in front is read with
    LEADHUB_DEFAULT_REGION, as a form's phone is; 11 digits not starting with 8 were always taken as international,
    so China's and Brazil's national numbers became invalid `+1...` numbers (`phone_invalid`, no phone identifier)."""
    hub = await make_hub([MEGAFON], default_region=region)
    form = {"type": "INCOMING", "status": "missed", "phone": sent, "callid": "d1"}
    async with await hub.post("/hooks/megafon?token=crm-token", data=form) as response:
        assert response.status == 202
    [lead] = await hub.wait_items("/api/leads", 1)
    [contact] = (await hub.api("/api/contacts", phone=number))["items"]
    assert contact["id"] == lead["contact_id"] and contact["phone"] == number
