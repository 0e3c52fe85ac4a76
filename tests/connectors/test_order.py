"""The generic `order` connector through the real hub: a shop's own JSON read through the configured field mapping,
HMAC-SHA256 (hex) over the raw body or a token, statuses mapped by config, bad input refused with a 4xx."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from leadhub.hub.config import ConfigError, config_from_dict
from tests.conftest import HubFactory, RunningHub

SECRET = "generic-shop-secret"
MAPPING = {
    "external_id": "order.uid",
    "number": "order.no",
    "status": "order.state",
    "total": "order.sum",
    "currency": "order.cur",
    "email": "buyer.mail",
    "phone": "buyer.tel",
    "name": "buyer.fio",
    "address": "buyer.addr",
    "items": "order.positions",
    "updated_at": "order.changed",
    "delivery_id": "event_id",
}


def payload(state: str = "awaiting_payment", changed: str = "2026-11-01T10:00:00+03:00", event: str = "e1") -> bytes:
    data = {
        "event_id": event,
        "order": {
            "uid": "A-17",
            "no": 17,
            "state": state,
            "sum": 2490.5,
            "cur": "RUB",
            "changed": changed,
            "positions": [{"name": "Чайник", "quantity": 1, "price": "2490.50"}],
        },
        "buyer": {"mail": "Olga@Example.ru", "tel": "8 916 000-11-22", "fio": "Ольга", "addr": "Москва, Тверская 1"},
    }
    return json.dumps(data, ensure_ascii=False).encode()


def sign(body: bytes, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Signature": f"sha256={digest}"}


@pytest.fixture
async def hub(make_hub: HubFactory) -> RunningHub:
    return await make_hub([
        {"name": "shop", "type": "order", "secret": SECRET, "signature_prefix": "sha256=", "fields": MAPPING,
         "statuses": {"awaiting_payment": "new", "paid_online": "paid", "delivered": "completed"}},
        {"name": "tokened", "type": "order", "auth": "token", "secret": "t0k", "id_header": "X-Event-Id"},
    ])  # fmt: skip


async def post(hub: RunningHub, body: bytes, headers: dict[str, str], path: str = "/hooks/shop") -> tuple[int, Any]:
    async with await hub.post(path, data=body, headers=headers) as response:
        return response.status, await response.json()


async def test_mapped_fields_become_an_order_and_statuses_move(hub: RunningHub) -> None:
    paid = payload("paid_online", "2026-11-01T11:00:00+03:00", "e2")
    delivered = payload("delivered", "2026-11-03T09:00:00Z", "e3")
    for body in (payload(), paid, delivered):
        assert (await post(hub, body, sign(body)))[0] == 202
    await hub.wait_items("/api/inquiries", 3)
    [order] = await hub.wait_items("/api/orders", 1)
    assert (order["external_id"], order["number"], order["status"]) == ("A-17", "17", "completed")
    assert (order["total"], order["currency"], order["provider_status"]) == ("2490.50", "RUB", "delivered")
    assert order["customer"] == {"name": "Ольга", "email": "Olga@Example.ru", "phone": "8 916 000-11-22",
                                 "address": {"line1": "Москва, Тверская 1"}}  # fmt: skip
    assert order["paid_at"] and order["completed_at"] and order["fulfilled_at"] is None
    [contact] = (await hub.api("/api/contacts", phone="+79160001122"))["items"]
    assert order["contact_id"] == contact["id"] and contact["email"] == "olga@example.ru"
    assert len((await hub.api("/api/leads"))["items"]) == 1


async def test_the_delivery_id_field_makes_a_resend_a_duplicate(hub: RunningHub) -> None:
    body = payload()
    resent = json.dumps(json.loads(body), ensure_ascii=False, indent=1).encode()  # the same delivery, serialized anew
    answers = [await post(hub, raw, sign(raw)) for raw in (body, resent)]
    assert [a[1]["duplicate"] for a in answers] == [False, True] and answers[0][1]["id"] == answers[1][1]["id"]
    [item] = await hub.wait_items("/api/inquiries", 1)
    assert item["key"].endswith(":e1"), item["key"]


@pytest.mark.parametrize("event", ["e\n1", "e" * 199 + "\t1"], ids=["line break", "tab where the id is cut"])
async def test_the_id_answered_is_the_stored_inquirys_whatever_whitespace_the_delivery_id_holds(
    hub: RunningHub, event: str
) -> None:
    """The queue trims a key's ends and turns a line break into a space: a delivery id with either (or a tab left at
    the end once cut to 200 characters) was stored under another key, so another id, than the one answered."""
    body = payload(event=event)
    status, answer = await post(hub, body, sign(body))
    assert status == 202, answer
    [item] = await hub.wait_items("/api/inquiries", 1)
    assert item["id"] == answer["id"], item["key"]


async def test_token_auth_and_id_header(hub: RunningHub) -> None:
    body = json.dumps({"external_id": 5, "status": "paid", "email": "t@example.com"}).encode()
    headers = {"Content-Type": "application/json", "X-Event-Id": "ev-5"}
    assert (await post(hub, body, headers, "/hooks/tokened"))[0] == 401
    assert (await post(hub, body, headers | {"X-Leadhub-Token": "t0k"}, "/hooks/tokened"))[0] == 202
    resent = json.dumps(json.loads(body), indent=1).encode()  # another serialization: only X-Event-Id tells
    assert (await post(hub, resent, headers | {"X-Leadhub-Token": "t0k"}, "/hooks/tokened"))[1]["duplicate"] is True
    [order] = await hub.wait_items("/api/orders", 1)
    assert (order["external_id"], order["status"]) == ("5", "paid")


@pytest.mark.parametrize(
    ("body", "headers", "status", "detail"),
    [
        (payload(), {"Content-Type": "application/json", "X-Signature": "sha256=00"}, 401, "does not match"),
        (payload(), {"Content-Type": "application/json"}, 401, "missing X-Signature"),
        (payload()[:-5], None, 400, "malformed JSON"),
        (b'{"order": {"state": "paid"}}', None, 400, "external_id"),
        # string ids are taken: "Input should be a valid integer" misled
        (b'{"order": {"uid": ["x"]}}', None, 400, "external_id: must be a number or a string, not an array"),
        (b'{"order": {"uid": {"a": 1}}}', None, 400, "external_id: must be a number or a string, not an object"),
        (b'{"order": {"uid": true}}', None, 400, "external_id: must be a number or a string, not true or false"),
        (b'{"order": {"uid": "A", "sum": "a lot"}}', None, 400, "total"),
        (b'{"order": {"uid": "A", "positions": "x"}}', None, 400, "items"),
        (b'{"order": {"uid": "A", "changed": "yesterday"}}', None, 400, "updated_at"),
        (b'{"order": {"uid": "' + b"x" * (3 * 1024 * 1024) + b'"}}', None, 413, "exceeds"),
    ],
    ids=[
        "forged",
        "unsigned",
        "truncated",
        "no-id",
        "id-array",
        "id-object",
        "id-boolean",
        "total-text",
        "items-text",
        "bad-time",
        "oversized",
    ],
)
async def test_bad_requests_are_4xx_naming_the_problem(
    hub: RunningHub, body: bytes, headers: dict[str, str] | None, status: int, detail: str
) -> None:
    got, answer = await post(hub, body, headers or sign(body))
    assert got == status and detail in answer["detail"], answer
    ok = payload()
    assert (await post(hub, ok, sign(ok)))[0] == 202
    await hub.wait_items("/api/inquiries", 1)


async def test_a_path_step_of_digits_int_refuses_is_a_key_not_an_index(make_hub: HubFactory) -> None:
    """str.isdigit() takes '²', which int() refuses: a mapped path through a list answered every order with a 500."""
    hub = await make_hub([{"name": "o", "type": "order", "auth": "token", "secret": "t0k",
                           "fields": {"external_id": "uid", "email": "buyers.²", "phone": "buyers.0"}}])  # fmt: skip
    body = json.dumps({"uid": "A-1", "buyers": ["+79160001122"]}).encode()
    headers = {"Content-Type": "application/json", "X-Leadhub-Token": "t0k"}
    status, answer = await post(hub, body, headers, "/hooks/o")
    assert status == 202, answer
    [order] = await hub.wait_items("/api/orders", 1)
    assert order["customer"] == {"phone": "+79160001122"}, order


def test_config_errors_name_the_bad_field_and_status() -> None:
    with pytest.raises(ConfigError) as error:
        config_from_dict(
            {
                "connectors": [
                    {
                        "name": "o",
                        "type": "order",
                        "secret": "s",
                        "fields": {"colour": "x"},
                        "statuses": {"done": "shipped"},
                    }
                ]
            },
            env={},
        )
    text = str(error.value)
    assert "unknown order field(s) colour" in text and "unknown leadhub status" in text
    with pytest.raises(ConfigError, match="secret is required"):
        config_from_dict({"connectors": [{"name": "o", "type": "order"}]}, env={})
