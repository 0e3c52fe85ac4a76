"""Mango Office VPBX events through the real hub: `sign` = sha256(vpbx_api_key + json + salt) in the form body;
events/call keeps the ringing call on the contact, events/summary of a missed inbound call makes a callback lead.

Material: ../shared/corpus/webhooks/mango/ (events_call_appeared, events_call_disconnected, events_summary_missed,
signed with key mango_test_api_key and salt mango_test_api_salt; recipe checked by verify_signatures.py).
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from leadhub.connectors.mango import mango_sign
from leadhub.store.models import Inquiry
from tests.conftest import HubFactory, RunningHub
from tests.connectors.calls_support import by_key_part, inquiries, post, rejected, sample

KEY, SALT = "mango_test_api_key", "mango_test_api_salt"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
FILES = ("events_call_appeared", "events_call_disconnected", "events_summary_missed")


@pytest.mark.parametrize("name", FILES)
def test_sign_reproduces_the_samples(name: str) -> None:
    request = sample("mango", f"{name}.request.json")
    form = request["form"]
    assert mango_sign(KEY.encode(), form["json"], SALT.encode()) == form["sign"]


@pytest.fixture
async def hub(make_hub: HubFactory) -> RunningHub:
    handle = await make_hub(
        [{"name": "mango", "type": "mango", "api_key": KEY, "secrets": ["new_salt", SALT], "max_body": 4096}]
    )
    handle.hub.connectors["mango"].clock = lambda: 1795413640.0  # the samples' time
    return handle


async def send(hub: RunningHub, name: str, **form_changes: str) -> tuple[int, dict]:
    request = sample("mango", f"{name}.request.json")
    body = urlencode(request["form"] | form_changes).encode() if form_changes else request["body"].encode()
    return await post(hub, "/hooks/mango" + request["url_suffix"], body, FORM)


def signed(event: dict | str, salt: str = SALT) -> dict[str, str]:
    text = event if isinstance(event, str) else json.dumps(event)
    return {"vpbx_api_key": KEY, "json": text, "sign": mango_sign(KEY.encode(), text, salt.encode())}


async def test_call_events_and_a_missed_summary(hub: RunningHub) -> None:
    for name in FILES:
        assert (await send(hub, name))[0] == 202, name
    [lead] = await hub.wait_items("/api/leads", 1)
    assert lead["channel"] == "phone" and lead["tags"] == ["callback_requested"]
    [contact] = (await hub.api("/api/contacts", phone="+79001234567"))["items"]
    items = await inquiries(hub, 3)
    appeared = by_key_part(items, ":appeared")
    assert appeared["contact_id"] == contact["id"] and appeared["lead_id"] is None and appeared["dropped"] is None
    assert by_key_part(items, "mango:mango:call:MToxMDE2")["dropped"] == "call progress: call Disconnected"
    assert by_key_part(items, ":summary:")["lead_id"] == lead["id"]


async def test_duplicate_and_second_appearance_of_the_same_call_are_one_record(hub: RunningHub) -> None:
    assert (await send(hub, "events_call_appeared"))[1]["duplicate"] is False
    assert (await send(hub, "events_call_appeared"))[1]["duplicate"] is True
    event = json.loads(sample("mango", "events_call_appeared.request.json")["form"]["json"])
    queue_leg = event | {"call_id": "another-leg", "seq": 2, "location": "queue"}
    status, answer = await post(hub, "/hooks/mango/events/call", urlencode(signed(queue_leg)).encode(), FORM)
    assert status == 202 and answer["duplicate"] is True  # one start per entry, however many legs appear
    await inquiries(hub, 1)


async def test_forged_sign_or_wrong_key_is_401_and_stale_events_too(hub: RunningHub) -> None:
    assert (await send(hub, "events_summary_missed", sign="0" * 64))[0] == 401
    assert (await send(hub, "events_summary_missed", vpbx_api_key="someone_else"))[0] == 401
    form = sample("mango", "events_summary_missed.request.json")["form"]
    tampered = form["json"].replace('"entry_result":0', '"entry_result":1')
    assert (await send(hub, "events_summary_missed", json=tampered))[0] == 401
    assert await rejected(hub, "mango", "bad_signature") == 3
    hub.hub.connectors["mango"].clock = lambda: 1795413640.0 + 86400
    status, error = await send(hub, "events_summary_missed")
    assert status == 401 and error["error"] == "stale"
    assert (await hub.api("/api/inquiries"))["items"] == []


async def test_unknown_event_path_is_202_and_dropped(hub: RunningHub) -> None:
    body = urlencode(signed({"recording_id": "r1", "timestamp": 1795413640})).encode()
    assert (await post(hub, "/hooks/mango/events/recording", body, FORM))[0] == 202
    [item] = await inquiries(hub, 1)
    assert item["dropped"] == "unknown event: events/recording"


async def test_malformed_wrong_types_and_oversized_are_4xx(hub: RunningHub) -> None:
    for broken in ('{"entry_id": "x", "call_st', "[1, 2]", '"just a string"'):
        status, error = await post(hub, "/hooks/mango/events/call", urlencode(signed(broken)).encode(), FORM)
        assert status == 400, broken
        assert "json" in error["detail"]
    no_json = urlencode({"vpbx_api_key": KEY, "sign": "x"}).encode()
    assert (await post(hub, "/hooks/mango/events/call", no_json, FORM))[0] == 400
    wrong_types = signed({"entry_id": 5, "call_id": ["x"], "seq": None, "call_state": 7, "from": "79001234567"})
    assert (await post(hub, "/hooks/mango/events/call", urlencode(wrong_types).encode(), FORM))[0] == 202
    [item] = await inquiries(hub, 1)
    assert item["dropped"] == "call progress: call 7"
    big = urlencode(signed({"x": "y" * 5000})).encode()
    assert (await post(hub, "/hooks/mango/events/call", big, FORM))[0] == 413


async def test_the_api_key_is_not_kept_with_the_event(hub: RunningHub) -> None:
    """The body Mango posts carries the VPBX API key (`vpbx_api_key`); the inquiry's payload, which dead letters,
    `leadhub dead show` and /api/dead-letters show whole, keeps the event without it, and still reads as the event."""
    assert (await send(hub, "events_call_appeared"))[0] == 202
    [item] = await inquiries(hub, 1)
    assert item["contact_id"] is not None  # parsed from what was kept
    async with hub.engine.connect() as conn:
        payload = (await conn.execute(select(Inquiry.payload))).scalar_one()
    assert KEY.encode() not in payload and b"vpbx_api_key" not in payload
    sent = sample("mango", "events_call_appeared.request.json")["body"].encode()
    assert payload == b"&".join(p for p in sent.split(b"&") if not p.startswith(b"vpbx_api_key="))
