"""Tilda webhooks through the real hub: `test=test` gets a 200 and no lead, a cart submission becomes an order on
channel shop, a plain form a form lead; the URL token is required; `tranid` makes a retry a duplicate.

Material: ../shared/corpus/webhooks/tilda/ — test_request.json (the request Tilda sends when the URL is saved),
cart_order.constructed.json and form_submission.constructed.json (constructed per Tilda help; values invented).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from leadhub.hub.config import ConfigError, config_from_dict
from leadhub.hub.logging import redact_text
from leadhub.store.models import OutboxEvent
from tests.conftest import HubFactory, RunningHub
from tests.helpers import corpus

TOKEN, OLD_TOKEN = "tilda-url-token-1", "tilda-url-token-0"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def sample(name: str) -> dict[str, Any]:
    return json.loads(corpus("webhooks", "tilda", name).read_text())


@pytest.fixture
async def hub(make_hub: HubFactory) -> RunningHub:
    return await make_hub([{"name": "tilda", "type": "tilda", "secrets": [TOKEN, OLD_TOKEN], "currency": "RUB"}])


async def post(hub: RunningHub, body: str | bytes, token: str | None = TOKEN, **headers: str) -> tuple[int, str]:
    params = {"token": token} if token is not None else {}
    data = body.encode() if isinstance(body, str) else body
    async with await hub.post("/hooks/tilda", data=data, params=params, headers=FORM | headers) as response:
        return response.status, await response.text()


async def test_the_test_request_gets_200_and_creates_nothing(hub: RunningHub) -> None:
    status, text = await post(hub, sample("test_request.json")["body"])
    assert (status, text) == (200, "ok")
    await _only_the_sentinel_is_stored(hub)


@pytest.mark.parametrize("body", ["", "Name=&Phone=&Email=", "{}"], ids=["empty", "blank-fields", "empty-json"])
async def test_a_submission_with_no_value_is_400_empty(hub: RunningHub, body: str) -> None:
    """It was answered 202 and became a blank contact and lead on which rules fired."""
    headers = {"Content-Type": "application/json"} if body.startswith("{") else {}
    status, text = await post(hub, body, **headers)
    assert status == 400 and json.loads(text)["error"] == "empty", text
    assert "no fields with a value" in json.loads(text)["detail"]
    await _only_the_sentinel_is_stored(hub)


async def test_a_cart_submission_becomes_an_order_on_channel_shop(hub: RunningHub) -> None:
    status, text = await post(hub, sample("cart_order.constructed.json")["body"])
    assert status == 202, text
    [order] = await hub.wait_items("/api/orders", 1)
    assert (order["external_id"], order["number"], order["status"]) == ("1234567890", "1234567890", "new")
    assert (order["total"], order["currency"]) == ("1500.00", "RUB")
    assert order["items"] == [{"name": "Товар 1", "quantity": 1, "price": "1500.00", "total": "1500.00"}]
    [contact] = (await hub.api("/api/contacts", phone="+79001234567"))["items"]
    assert contact["email"] == "ivan@example.ru" and contact["name"] == "Иван Петров"
    [lead] = (await hub.api("/api/leads", channel="shop"))["items"]
    assert (order["contact_id"], order["lead_id"], lead["contact_id"]) == (contact["id"], lead["id"], contact["id"])
    [inquiry] = (await hub.api("/api/inquiries"))["items"]
    assert (
        inquiry["fields"]["payment"]["orderid"] == "1234567890" and inquiry["fields"]["tranid"] == "1234567:8901234568"
    )


async def test_a_cart_paid_through_a_payment_system_is_paid(hub: RunningHub) -> None:
    payment = {
        "orderid": "77",
        "amount": "990",
        "sys": "yakassa",
        "systranid": "2a1b",
        "products": ["Mug - 1x990 = 990"],
    }
    await post(hub, urlencode({"Email": "buyer@example.ru", "tranid": "1:2", "payment": json.dumps(payment)}))
    [order] = await hub.wait_items("/api/orders", 1)
    assert (order["status"], order["provider_status"], order["items"]) == (
        "paid",
        "paid via yakassa",
        [{"name": "Mug - 1x990 = 990"}],
    )


@pytest.mark.parametrize(
    "payment",
    [
        {"sys": "none", "systranid": "0"},  # as Tilda sends a cart without a payment system (cash, on delivery)
        {"sys": "none", "systranid": 0},
        {"systranid": "0"},
        {"sys": "yakassa", "systranid": ""},
        {"sys": "none", "systranid": "2a1b"},
    ],
    ids=["none-text-0", "none-number-0", "only-0", "empty", "system-none"],
)
async def test_a_cart_without_a_payment_transaction_awaits_payment(hub: RunningHub, payment: dict[str, Any]) -> None:
    payment = payment | {"orderid": "1118197065", "products": ["Участие ЮС Байкал 2025=1000"], "amount": "1000"}
    await post(
        hub, urlencode({"Email": "buyer@example.ru", "tranid": "8888:1118197065", "payment": json.dumps(payment)})
    )
    [order] = await hub.wait_items("/api/orders", 1)
    assert (order["status"], order["provider_status"], order["paid_at"]) == ("new", None, None)
    async with hub.engine.connect() as conn:
        types = [t for (t,) in await conn.execute(select(OutboxEvent.type))]
    assert "order.created" in types and "order.paid" not in types


async def test_a_plain_form_is_a_form_lead_without_an_order(hub: RunningHub) -> None:
    status, _ = await post(hub, sample("form_submission.constructed.json")["body"])
    assert status == 202
    [lead] = await hub.wait_items("/api/leads", 1)
    assert lead["channel"] == "form" and lead["attribution"] == {"utm_source": "yandex", "utm_medium": "cpc"}
    assert (await hub.api("/api/orders"))["items"] == []


async def test_a_resent_submission_is_one_record(hub: RunningHub) -> None:
    body = sample("cart_order.constructed.json")["body"]
    # The resend's body differs (a field Tilda adds per attempt): only `tranid` can tell it is the same submission.
    sends = ((TOKEN, body), (OLD_TOKEN, body + "&COOKIES=resent"))
    answers = [json.loads((await post(hub, data, token=token))[1]) for token, data in sends]
    assert [a["duplicate"] for a in answers] == [False, True]  # the old token still works during a rotation
    assert answers[0]["id"] == answers[1]["id"]
    [item] = await hub.wait_items("/api/inquiries", 1)
    assert item["key"] == "tilda:tilda:1234567_8901234568"  # the tranid, made safe for a key


@pytest.mark.parametrize("token", [None, "", "wrong"], ids=["missing", "empty", "wrong"])
async def test_a_missing_or_wrong_token_is_401(hub: RunningHub, token: str | None) -> None:
    status, text = await post(hub, sample("test_request.json")["body"], token=token)
    assert status == 401 and json.loads(text)["error"] == "bad_signature"
    # The log's `webhook rejected` line shows the detail through the URL redaction: "(?token=...)" read as a query
    # value there, and the line said "wrong token in the webhook URL (?token=***", its end eaten.
    detail = json.loads(text)["detail"]
    assert redact_text(detail) == detail and detail.endswith("in the webhook URL as ?token="), detail
    await _only_the_sentinel_is_stored(hub)


@pytest.mark.parametrize(
    ("body", "headers", "status", "detail"),
    [
        ("Name=A&payment=%7B%22orderid%22%3A", {}, 400, "malformed JSON"),
        ("Name=A&payment=" + json.dumps({"amount": "lots"}), {}, 400, "amount"),
        ("Name=A&payment=" + json.dumps({"products": 5}), {}, 400, "products"),
        ("Name=A&payment=[1]", {}, 400, "JSON object"),
        (b"Name=\xff\xfe", {}, 400, "UTF-8"),
        ("<xml/>", {"Content-Type": "application/xml"}, 415, "unsupported content type"),
        ("Name=" + "x" * (3 * 1024 * 1024), {}, 413, "exceeds"),
    ],
    ids=["truncated-payment", "amount-not-a-number", "products-not-a-list", "payment-array", "not-utf8", "xml", "big"],
)
async def test_bad_payloads_are_4xx_naming_the_problem(
    hub: RunningHub, body: str | bytes, headers: dict[str, str], status: int, detail: str
) -> None:
    got, text = await post(hub, body, **headers)
    assert got == status and detail in json.loads(text)["detail"], text
    await _only_the_sentinel_is_stored(hub)


async def _only_the_sentinel_is_stored(hub: RunningHub) -> None:
    """A valid submission after the refused one is the only inquiry: the queue is FIFO, so a leak would show."""
    assert (await post(hub, sample("form_submission.constructed.json")["body"]))[0] == 202
    await hub.wait_items("/api/inquiries", 1)


async def test_custom_fields_map_onto_leadhub_fields_in_any_case(make_hub: HubFactory) -> None:
    hub = await make_hub([{"name": "tilda", "type": "tilda", "secret": TOKEN, "fields": {"Input_2": "Company"}}])
    status, _ = await post(hub, urlencode({"Name": "Иван Петров", "Input_2": "Ромашка и партнёры", "tranid": "5:6"}))
    assert status == 202
    [inquiry] = await hub.wait_items("/api/inquiries", 1)
    [contact] = (await hub.api("/api/contacts"))["items"]
    assert contact["company"] == "Ромашка и партнёры" and "Input_2" not in inquiry["fields"]


def test_a_mapping_onto_a_field_leadhub_does_not_read_is_refused() -> None:
    tilda = {"name": "tilda", "type": "tilda", "secret": TOKEN, "fields": {"Input_2": "telephone"}}
    with pytest.raises(ConfigError, match=r"'Input_2' -> 'telephone': not a field leadhub reads; map each field to"):
        config_from_dict({"connectors": [tilda]}, env={})
