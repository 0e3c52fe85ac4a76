"""Telegram Bot API updates through the real hub: the secret token header is checked in constant time; messages,
shared contacts, edits and button presses become chat inquiries keyed by update_id; other update types are stored
as dropped.

Material: ../shared/corpus/webhooks/telegram/ (official-guide updates, the aiogram test shape, constructed
contact / edited / callback updates, request_headers.example.json with the secret token my_Secret-token_123).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from leadhub.hub.config import ConfigError, config_from_dict
from tests.conftest import HubFactory, RunningHub
from tests.connectors.calls_support import inquiries, post, rejected, sample

SECRET = "my_Secret-token_123"  # request_headers.example.json
HEADER = "X-Telegram-Bot-Api-Secret-Token"


def test_secret_token_alphabet_is_checked_at_start_up() -> None:
    with pytest.raises(ConfigError, match="secret_token"):
        config_from_dict({"connectors": [{"name": "bot", "type": "telegram", "secret": "has space"}]}, env={})


@pytest.fixture
async def hub(make_hub: HubFactory) -> RunningHub:
    connector = {
        "name": "bot",
        "type": "telegram",
        "secrets": ["next-token", SECRET],
        "callback_data": ["callback:yes"],
    }
    return await make_hub([connector | {"max_body": 4096}])


def headers(secret: str | None = SECRET) -> dict[str, str]:
    request = sample("telegram", "request_headers.example.json")
    result = dict(request["headers"])
    if secret is None:
        del result[HEADER]
    else:
        result[HEADER] = secret
    return result


async def send(hub: RunningHub, update: bytes | dict[str, Any] | str, secret: str | None = SECRET) -> tuple[int, Any]:
    if isinstance(update, str):
        update = sample("telegram", update)
    body = update if isinstance(update, bytes) else json.dumps(update, ensure_ascii=False).encode()
    return await post(hub, "/hooks/bot", body, headers(secret))


async def test_the_header_secret_from_the_corpus_is_accepted(hub: RunningHub) -> None:
    request = sample("telegram", "request_headers.example.json")
    assert request["headers"][HEADER] == SECRET
    status, answer = await send(hub, request["body_file"])
    assert status == 202 and answer["duplicate"] is False
    [lead] = await hub.wait_items("/api/leads", 1)
    assert lead["channel"] == "chat" and lead["message"] == "/start"
    [item] = await inquiries(hub, 1)
    assert item["key"] == "telegram:bot:update:10000"
    assert item["fields"]["messenger_id"] == "telegram:1111111" and item["name"] == "Test Test Lastname"


async def test_shared_contact_gives_the_phone_and_name(hub: RunningHub) -> None:
    assert (await send(hub, "update_message_contact.constructed.json"))[0] == 202
    [lead] = await hub.wait_items("/api/leads", 1)
    [contact] = (await hub.api("/api/contacts", phone="+79001234567"))["items"]
    assert contact["id"] == lead["contact_id"] and contact["name"] == "Иван Петров"
    [item] = await inquiries(hub, 1)
    assert item["fields"]["messenger_id"] == "telegram:123456789"
    assert item["fields"]["telegram_username"] == "ivan_p"


async def test_edit_is_history_and_button_press_a_callback_lead(hub: RunningHub) -> None:
    assert (await send(hub, "update_edited_message.constructed.json"))[0] == 202
    assert (await send(hub, "update_callback_query.constructed.json"))[0] == 202
    items = await inquiries(hub, 2)
    edited = next(i for i in items if i["key"].endswith(":900000003"))
    assert edited["lead_id"] is None and edited["dropped"] is None
    # "Мой номер +7 900 123-45-67" in the text: kept for a person to read, not the sender's phone.
    assert edited["phone"] is None and edited["fields"]["phones"] == ["+7 900 123-45-67"]
    [lead] = await hub.wait_items("/api/leads", 1)
    assert lead["channel"] == "chat" and lead["tags"] == ["callback_requested"]
    assert lead["message"] == "pressed button: callback:yes"


async def test_other_update_types_and_minimal_shapes_are_tolerated(hub: RunningHub) -> None:
    for update_id, name in enumerate(
        (
            "update_inline_query.official_guide.json",
            "update_chosen_inline_result.official_guide.json",
            "update_message_text.aiogram_test_shape.json",
        ),
        start=100,
    ):
        status, _ = await send(hub, {**sample("telegram", name), "update_id": update_id})
        assert status == 202, name
    assert (await send(hub, {"update_id": 7, "brand_new_kind": {}}))[0] == 202
    assert (await send(hub, {"update_id": 8, "message": {"text": 5, "from": "x", "chat": None}}))[0] == 202
    items = await inquiries(hub, 5)
    dropped = sorted(i["dropped"] or "" for i in items)
    assert dropped == [
        "",
        "",
        "unhandled update type: chosen_inline_result",
        "unhandled update type: inline_query",
        "unknown event: brand_new_kind",
    ]


async def test_the_same_update_twice_is_one_record(hub: RunningHub) -> None:
    answers = [await send(hub, "update_message_contact.constructed.json") for _ in range(2)]
    assert [a[1]["duplicate"] for a in answers] == [False, True]
    await hub.wait_items("/api/leads", 1)
    await inquiries(hub, 1)


async def test_wrong_or_missing_secret_is_401(hub: RunningHub) -> None:
    assert (await send(hub, "update_message_contact.constructed.json", secret="my_Secret-token_124"))[0] == 401
    assert (await send(hub, "update_message_contact.constructed.json", secret=None))[0] == 401
    assert await rejected(hub, "bot", "bad_signature") == 2
    assert (await hub.api("/api/inquiries"))["items"] == []


async def test_truncated_json_wrong_types_and_oversized_are_4xx(hub: RunningHub) -> None:
    whole = json.dumps(sample("telegram", "update_message_contact.constructed.json")).encode()
    for body in (whole[: len(whole) // 2], b"[]", b'{"update_id": "1"}', b'{"message": {}}', b"\xff"):
        status, error = await send(hub, body)
        assert status == 400, body
        assert error["error"] == "malformed"
    assert (await send(hub, {"update_id": 9, "message": {"text": "x" * 5000}}))[0] == 413


@pytest.mark.parametrize("kind", ["message", "edited_message", "callback_query", "brand_new_kind"])
@pytest.mark.parametrize("value", ["hi", 1, [], None])
async def test_an_update_whose_content_is_not_an_object_is_400(hub: RunningHub, kind: str, value: object) -> None:
    """docs/providers/telegram.md: every field of an Update but update_id is an object. `"message": "hi"` was answered
    202 and stored as dropped "unknown event: message"."""
    status, error = await send(hub, {"update_id": 777, kind: value})
    assert (status, error["error"]) == (400, "malformed"), error
    assert f"{kind} must be a JSON object" in error["detail"], error
    assert (await hub.api("/api/inquiries"))["items"] == []


async def test_someone_elses_shared_contact_is_not_the_senders_phone(hub: RunningHub) -> None:
    """The corpus contact update (update_message_contact.constructed.json) is the sender's own card (user_id = from.id);
    the same message with a friend's card (another user_id) must not give the sender the friend's phone and name."""
    own = sample("telegram", "update_message_contact.constructed.json")
    friend = json.loads(json.dumps(own))
    friend["update_id"] += 1
    friend["message"]["message_id"] += 1
    friend["message"]["contact"] = {"phone_number": "+79005556677", "first_name": "Пётр", "user_id": 42}
    assert (await send(hub, friend))[0] == 202
    [item] = await inquiries(hub, 1)
    assert item["phone"] is None and item["name"] == "Иван Петров"
    assert item["fields"]["shared_contact"] == {"phone": "+79005556677", "name": "Пётр", "telegram_id": 42}
    assert (await hub.api("/api/contacts", phone="+79005556677"))["items"] == []
    assert (await send(hub, own))[0] == 202  # the sender's own card still gives the sender's phone
    await inquiries(hub, 2)
    [contact] = (await hub.api("/api/contacts", phone="+79001234567"))["items"]
    assert contact["name"] == "Иван Петров" and item["contact_id"] == contact["id"]


async def test_a_phone_in_the_text_does_not_join_the_contact_that_has_it(hub: RunningHub) -> None:
    """Иван shares his own card (+7 900 123-45-67); another user writes "call me at" the same number (a typo, a
    relative's phone, a forwarded text): a phone in free text is a hint, so the writer stays a contact of their own
    (it was an identifier, and the two were merged)."""
    assert (await send(hub, "update_message_contact.constructed.json"))[0] == 202
    [ivan] = await hub.wait_items("/api/contacts", 1, phone="+79001234567")
    writer = {"id": 222333444, "is_bot": False, "first_name": "Анна"}
    text = {"message_id": 5, "date": 1800000000, "from": writer, "chat": writer | {"type": "private"}}
    text["text"] = "Перезвоните мне, пожалуйста: +7 900 123-45-67"
    assert (await send(hub, {"update_id": 900000030, "message": text}))[0] == 202
    leads = await hub.wait_items("/api/leads", 2)
    assert len({lead["contact_id"] for lead in leads}) == 2
    [anna] = [c for c in (await hub.api("/api/contacts"))["items"] if c["id"] != ivan["id"]]
    assert anna["name"] == "Анна" and anna["phone"] is None and anna["merged_into"] is None
    assert anna["identifiers"] == [{"kind": "messenger", "value": "telegram:222333444"}]
    assert [c["id"] for c in (await hub.api("/api/contacts", phone="+79001234567"))["items"]] == [ivan["id"]]
    [item] = (await hub.api("/api/inquiries", contact_id=anna["id"]))["items"]
    assert item["phone"] is None and item["fields"]["phones"] == ["+7 900 123-45-67"]


@pytest.mark.store_independent  # the parser's; once, on the embedded default: not about the store
async def test_a_phone_written_the_national_way_is_kept_on_the_inquiry(hub: RunningHub) -> None:
    """Only international numbers (`+7 ...`) were found in a message; an e-mail's text is read in the hub's default
    region (RU here), and so is a chat message now: "8 (916) 123-45-67" is how most people here write theirs."""
    writer = {"id": 222333445, "is_bot": False, "first_name": "Олег"}
    text = {"message_id": 6, "date": 1800000000, "from": writer, "chat": writer | {"type": "private"}}
    text["text"] = "Добрый день! Перезвоните по номеру 8 (916) 123-45-67 после обеда, или 8-495-123-45-67."
    assert (await send(hub, {"update_id": 900000031, "message": text}))[0] == 202
    [item] = await inquiries(hub, 1)
    assert item["fields"]["phones"] == ["8 (916) 123-45-67", "8-495-123-45-67"]
    assert item["phone"] is None, "a phone in free text is a hint, never the writer's identifier"


async def test_a_channel_post_forwarded_into_its_discussion_group_is_no_lead(hub: RunningHub) -> None:
    """Telegram copies a linked channel's posts into the group "from" the placeholder user 777000 ("Telegram")
    with is_automatic_forward; shape per the corpus message (update_message_text.official_guide.json)."""
    update = sample("telegram", "update_message_text.official_guide.json")
    message = update["message"] | {
        "from": {"id": 777000, "is_bot": False, "first_name": "Telegram"},
        "chat": {"id": -1001234567890, "type": "supergroup", "title": "Shop chat"},
        "sender_chat": {"id": -1009876543210, "type": "channel", "title": "Shop news"},
        "is_automatic_forward": True,
    }
    assert (await send(hub, {"update_id": update["update_id"], "message": message}))[0] == 202
    [item] = await inquiries(hub, 1)
    assert item["dropped"] == "message on behalf of a chat (a channel post or an anonymous admin)"
    assert (await hub.api("/api/leads"))["items"] == [] and item["contact_id"] is None


def business_update(update_id: int, sender: dict[str, Any], text: str, **extra: Any) -> dict[str, Any]:
    """A `business_message` of a connected business account's private chat with the customer Иван (id 123456789)."""
    message = {
        "business_connection_id": "bc1",
        "message_id": update_id,
        "date": 1800000000,
        "from": sender,
        "chat": {"id": 123456789, "type": "private", "first_name": "Иван", "username": "ivan_p"},
        "text": text,
    }
    return {"update_id": update_id, "business_message": message | extra}


CUSTOMER = {"id": 123456789, "is_bot": False, "first_name": "Иван"}
OWNER = {"id": 555000, "is_bot": False, "first_name": "Shop", "last_name": "Owner"}


async def test_business_replies_are_history_on_the_customers_contact(hub: RunningHub) -> None:
    """A connected business account delivers both sides of its chats: the customer's message opens the lead, the
    owner's reply (`from` the owner) and the bot's auto-reply (`sender_business_bot`) are history on the customer,
    and a phone in a reply is not the customer's."""
    assert (await send(hub, business_update(900000020, CUSTOMER, "Здравствуйте, заказ готов?")))[0] == 202
    [lead] = await hub.wait_items("/api/leads", 1)
    reply = business_update(900000021, OWNER, "Здравствуйте! Ваш заказ готов, позвоните +7 900 765-43-21")
    bot = {"id": 42, "is_bot": True, "first_name": "ShopBot"}
    auto = business_update(900000022, OWNER, "Auto-reply: we are closed", sender_business_bot=bot)
    assert (await send(hub, reply))[0] == 202 and (await send(hub, auto))[0] == 202
    items = await inquiries(hub, 3)
    assert [i["id"] for i in (await hub.api("/api/leads"))["items"]] == [lead["id"]]
    assert (await hub.api("/api/contacts", phone="+79007654321"))["items"] == []
    [contact] = (await hub.api("/api/contacts"))["items"]
    assert contact["id"] == lead["contact_id"] and contact["name"] == "Иван"
    replies = [i for i in items if i["fields"].get("telegram_direction") == "outgoing"]
    assert sorted(i["fields"]["telegram_sent_by"] for i in replies) == ["telegram:42", "telegram:555000"]
    for item in replies:
        assert item["lead_id"] is None and item["dropped"] is None and item["contact_id"] == lead["contact_id"]
        assert item["name"] == "Иван" and item["phone"] is None
        assert item["fields"]["messenger_id"] == "telegram:123456789"
    chatless = business_update(900000023, OWNER, "Auto-reply", sender_business_bot=bot)
    del chatless["business_message"]["chat"]["id"]
    assert (await send(hub, chatless))[0] == 202
    [item] = [i for i in await inquiries(hub, 4) if i["key"].endswith(":900000023")]
    assert item["dropped"] == "outgoing business message without the customer's chat id" and item["contact_id"] is None
