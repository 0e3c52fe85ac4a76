"""Jivo webhooks through the real hub: a token in the URL; a call_event callback request becomes a phone lead tagged
callback_requested, finished chats and offline messages chat leads; other events are stored as dropped.

Material: ../shared/corpus/webhooks/jivo/call_event.callback.docs_example.json (verbatim Jivo docs example). The
chat_finished and offline_message bodies below are constructed from the field lists in that folder's MANIFEST.md.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import HubFactory, RunningHub
from tests.connectors.calls_support import inquiries, post, rejected, sample

TOKEN = "jivo-url-token"
JSON = {"Content-Type": "application/json"}
CHAT_FINISHED = {
    "event_name": "chat_finished",
    "chat_id": 5512,
    "widget_id": "2853",
    "visitor": {"name": "Мария", "email": "Maria@Example.ru", "phone": "8 916 765-43-21"},
    "session": {"utm_json": {"source": "yandex", "medium": "cpc"}},
    "chat": {
        "messages": [
            {"timestamp": 1795413600, "type": "visitor", "message": "Здравствуйте, сколько стоит доставка?"},
            {"timestamp": 1795413620, "type": "agent", "message": "Добрый день!"},
            {"timestamp": 1795413650, "type": "visitor", "message": "Ждём"},
        ]
    },
    "page": {"url": "https://shop.example.ru/delivery", "title": "Доставка"},
}
OFFLINE = {
    "event_name": "offline_message",
    "offline_message_id": "om-42",
    "widget_id": "2853",
    "visitor": {"name": "Oleg", "phone": "+79160001122"},
    "message": "Please call me tomorrow",
}


@pytest.fixture
async def hub(make_hub: HubFactory) -> RunningHub:
    return await make_hub([{"name": "jivo", "type": "jivo", "secrets": [TOKEN, "old"], "max_body": 4096}])


async def send(hub: RunningHub, event: dict[str, Any] | bytes, token: str | None = TOKEN) -> tuple[int, Any]:
    body = event if isinstance(event, bytes) else json.dumps(event, ensure_ascii=False).encode()
    path = "/hooks/jivo" + (f"?token={token}" if token is not None else "")
    return await post(hub, path, body, JSON)


async def test_callback_request_is_a_phone_lead(hub: RunningHub) -> None:
    assert (await send(hub, sample("jivo", "call_event.callback.docs_example.json")))[0] == 202
    [lead] = await hub.wait_items("/api/leads", 1)
    assert lead["channel"] == "phone" and lead["tags"] == ["callback_requested"]
    assert lead["attribution"]["utm_source"] == "google"
    [contact] = (await hub.api("/api/contacts", phone="+14084987855"))["items"]
    assert contact["id"] == lead["contact_id"]
    assert (contact["name"], contact["email"]) == ("John Smith", "email@example.com")


async def test_finished_chat_and_offline_message_are_chat_leads(hub: RunningHub) -> None:
    assert (await send(hub, CHAT_FINISHED))[0] == 202
    assert (await send(hub, OFFLINE))[0] == 202
    leads = await hub.wait_items("/api/leads", 2, channel="chat")
    messages = sorted(lead["message"] for lead in leads)
    assert messages == ["Please call me tomorrow", "Здравствуйте, сколько стоит доставка?\nЖдём"]
    [maria] = (await hub.api("/api/contacts", email="maria@example.ru"))["items"]
    assert maria["phone"] == "+79167654321"


async def test_same_event_twice_is_one_record_and_a_callback_reported_twice_too(hub: RunningHub) -> None:
    status, answer = await send(hub, CHAT_FINISHED)
    assert status == 202 and answer["result"] == "ok" and answer["duplicate"] is False
    assert (await send(hub, CHAT_FINISHED))[1]["duplicate"] is True
    reordered = json.dumps(CHAT_FINISHED, ensure_ascii=False, indent=1).encode()  # the same chat, other bytes
    assert (await send(hub, reordered))[1]["duplicate"] is True, "a finished chat is keyed by its chat_id"
    callback = sample("jivo", "call_event.callback.docs_example.json")
    assert (await send(hub, callback | {"call": callback["call"] | {"status": "start"}}))[1]["duplicate"] is False
    assert (await send(hub, callback))[1]["duplicate"] is True
    await inquiries(hub, 2)


async def test_other_and_unknown_events_are_stored_as_dropped(hub: RunningHub) -> None:
    assert (await send(hub, {"event_name": "chat_accepted", "chat_id": 1}))[0] == 202
    assert (await send(hub, {"event_name": "something_new", "chat_id": 1}))[0] == 202
    items = await inquiries(hub, 2)
    assert sorted(i["dropped"] for i in items) == ["unhandled event: chat_accepted", "unknown event: something_new"]


async def test_wrong_or_missing_token_is_401(hub: RunningHub) -> None:
    assert (await send(hub, OFFLINE, token="nope"))[0] == 401
    assert (await send(hub, OFFLINE, token=None))[0] == 401
    assert await rejected(hub, "jivo", "bad_signature") == 2
    assert (await hub.api("/api/inquiries"))["items"] == []


async def test_truncated_json_wrong_types_and_oversized_are_4xx(hub: RunningHub) -> None:
    whole = json.dumps(CHAT_FINISHED).encode()
    for body in (whole[:40], b"[1]", b'{"chat_id": 1}', b'{"event_name": 5}', b'{"event_name": "x", "visitor": []}'):
        status, error = await send(hub, body)
        assert status == 400 and error["error"] == "malformed", body
    assert (await send(hub, OFFLINE | {"message": "x" * 5000}))[0] == 413
