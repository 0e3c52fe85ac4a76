"""Sipuni call events through the real hub: no signature, a token in the URL; the doubled start event is one
record, a missed inbound call that arrives only as its end event still makes the callback lead, and a call whose
end never arrives is still recorded from its start.

Material: ../shared/corpus/webhooks/sipuni/ (REAL captured event values: inbound_missed_NOANSWER_event2,
outbound_event1_start, outbound_event3_answer, outbound_event2_ANSWER) and the quirks listed in its MANIFEST.md.
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from tests.conftest import HubFactory, RunningHub
from tests.connectors.calls_support import by_key_part, inquiries, post, rejected, sample

TOKEN = "sipuni-url-token"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
async def hub(make_hub: HubFactory) -> RunningHub:
    return await make_hub([{"name": "sipuni", "type": "sipuni", "secrets": [TOKEN, "old-token"], "max_body": 2048}])


def params(name: str) -> dict[str, str]:
    return sample("sipuni", f"{name}.json")["params"]


async def get(hub: RunningHub, query: dict[str, str]) -> tuple[int, dict]:
    async with hub.session.get(hub.url("/hooks/sipuni"), params=query) as response:
        return response.status, await response.json()


async def test_missed_inbound_call_from_its_end_event_alone_is_a_callback_lead(hub: RunningHub) -> None:
    body = urlencode(params("inbound_missed_NOANSWER_event2")).encode()
    assert (await post(hub, f"/hooks/sipuni?token={TOKEN}", body, FORM))[0] == 202
    [lead] = await hub.wait_items("/api/leads", 1)
    assert lead["channel"] == "phone" and lead["tags"] == ["callback_requested"]
    [item] = await inquiries(hub, 1)
    assert item["lead_id"] == lead["id"] and item["fields"]["status"] == "NOANSWER"
    assert "token" not in item["key"] and TOKEN not in str(item)


async def test_doubled_start_is_one_record_and_a_call_without_end_is_kept(hub: RunningHub) -> None:
    start = params("outbound_event1_start")
    answers = [await get(hub, start | {"token": TOKEN}) for _ in range(2)]  # Sipuni sends event 1 twice
    assert [a[0] for a in answers] == [202, 202] and [a[1]["duplicate"] for a in answers] == [False, True]
    [item] = await inquiries(hub, 1)  # no end event (yet): the start alone is on the contact
    assert item["dropped"] is None and item["lead_id"] is None and item["contact_id"]
    [contact] = (await hub.api("/api/contacts", phone="+998948867473"))["items"]
    assert contact["id"] == item["contact_id"]
    for name in ("outbound_event3_answer", "outbound_event2_ANSWER"):
        assert (await get(hub, params(name) | {"token": "old-token"}))[0] == 202
    items = await inquiries(hub, 3)
    assert by_key_part(items, ":answer")["dropped"] == "call progress: answer"
    assert by_key_part(items, ":end")["dropped"] == "call progress: end ANSWER"
    assert (await hub.api("/api/leads"))["items"] == []


async def test_missing_or_wrong_token_is_401(hub: RunningHub) -> None:
    start = params("outbound_event1_start")
    assert (await get(hub, start))[0] == 401
    assert (await get(hub, start | {"token": "guess"}))[0] == 401
    assert await rejected(hub, "sipuni", "bad_signature") == 2
    assert (await hub.api("/api/inquiries"))["items"] == []


async def test_malformed_and_oversized_are_4xx(hub: RunningHub) -> None:
    status, error = await get(hub, {"token": TOKEN, "event": "1"})
    assert status == 400 and "call_id" in error["detail"]
    assert (await post(hub, f"/hooks/sipuni?token={TOKEN}", b"call_id=\xff&event=1", FORM))[0] == 400
    assert (await post(hub, f"/hooks/sipuni?token={TOKEN}", b"x=" + b"1" * 3000, FORM))[0] == 413
    assert (await get(hub, {"token": TOKEN, "call_id": "c1", "event": "9"}))[0] == 202
    [item] = await inquiries(hub, 1)
    assert item["dropped"] == "unknown event: event 9"


@pytest.mark.store_independent  # the webhook's reading; once, on the embedded default: not about the store
async def test_a_query_with_bytes_that_are_not_utf8_is_400_not_a_lost_number(hub: RunningHub) -> None:
    """aiohttp's parsed query puts U+FFFD where the bytes are not UTF-8: such an event was answered 202 with the
    caller's number gone. A query is read as strictly as a form body."""
    raw = f"/hooks/sipuni?token={TOKEN}&call_id=c2&event=2&src_num=%FF%FE7916&status=NOANSWER"
    async with hub.session.get(hub.url(raw)) as response:
        status, error = response.status, await response.json()
    assert status == 400 and error["error"] == "malformed", error
    assert "the URL's query holds percent-escaped bytes that are not UTF-8" in error["detail"]
    assert (await hub.api("/api/inquiries"))["items"] == []
    missed = params("inbound_missed_NOANSWER_event2")  # a real event, its Cyrillic treeName percent-escaped
    assert (await get(hub, missed | {"token": TOKEN}))[0] == 202
    [lead] = await hub.wait_items("/api/leads", 1)
    assert lead["tags"] == ["callback_requested"]


async def test_an_accepted_event_answers_success_true_as_sipuni_requires(hub: RunningHub) -> None:
    """Sipuni's HTTP events doc: the URL answers a JSON object with `success` (true when processed); without it
    Sipuni may suspend sending events. The hub's id and duplicate flag stay beside it."""
    start = params("outbound_event1_start") | {"token": TOKEN}
    answers = [await get(hub, start) for _ in range(2)]
    assert [a[0] for a in answers] == [202, 202]
    assert [a[1]["success"] for a in answers] == [True, True]
    assert [a[1]["duplicate"] for a in answers] == [False, True] and answers[0][1]["id"] == answers[1][1]["id"]
    body = urlencode(params("inbound_missed_NOANSWER_event2")).encode()
    status, answer = await post(hub, f"/hooks/sipuni?token={TOKEN}", body, FORM)
    assert status == 202 and answer["success"] is True and answer["duplicate"] is False


async def test_an_event_number_with_spaces_is_read_as_the_connector_keys_it(hub: RunningHub) -> None:
    """The connector keyed `event=" 2"` as the end event while the parser read it as an unknown one: a missed call
    stored as `unknown event`, and no callback lead."""
    missed = params("inbound_missed_NOANSWER_event2") | {"event": "\n2 ", "token": TOKEN}
    assert (await get(hub, missed))[0] == 202
    [lead] = await hub.wait_items("/api/leads", 1)
    assert lead["tags"] == ["callback_requested"]
    [item] = await inquiries(hub, 1)
    assert item["key"].endswith(":end") and item["fields"]["status"] == "NOANSWER"
