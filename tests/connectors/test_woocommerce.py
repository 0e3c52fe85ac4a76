"""WooCommerce webhooks through the real hub: the signed order.created sample becomes a paid order on its contact,
the ping gets a 200 without storing anything, updates move the status, bad requests get a 4xx.

Material: ../shared/corpus/webhooks/woocommerce/ — order.created.request.json (headers and signature computed with
WooCommerce core's WC_Webhook::generate_signature, secret wc_test_secret) with order.created.wire_body.json (the REST v3
docs order re-encoded like wp_json_encode), ping.request.json, product.created.captured_request.json (a real capture).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from leadhub.connectors.shop_common import hmac_sha256_b64, wordpress_secret
from leadhub.store.models import OutboxEvent
from tests.conftest import HubFactory, RunningHub
from tests.helpers import corpus

SECRET = "wc_test_secret"


def request_sample() -> tuple[dict[str, str], bytes]:
    spec = json.loads(corpus("webhooks", "woocommerce", "order.created.request.json").read_text())
    body = corpus("webhooks", "woocommerce", spec["body_file"]).read_bytes()
    assert spec["secret"] == SECRET
    return spec["headers"], body


@pytest.fixture
async def hub(make_hub: HubFactory) -> RunningHub:
    config = {"name": "woo", "type": "woocommerce", "secrets": ["wc_rotated_secret", SECRET]}
    return await make_hub([config | {"statuses": {"shipped": "fulfilled"}}])


def signed(body: bytes, topic: str = "order.updated", secret: str = SECRET, delivery: str | None = None) -> dict:
    return {
        "Content-Type": "application/json",
        "X-WC-Webhook-Source": "https://example.com/",
        "X-WC-Webhook-Topic": topic,
        "X-WC-Webhook-ID": "12",
        "X-WC-Webhook-Delivery-ID": delivery or uuid.uuid4().hex,
        "X-WC-Webhook-Signature": hmac_sha256_b64(secret.encode(), body),
    }


def order(**changes: Any) -> bytes:
    _, body = request_sample()
    return json.dumps(json.loads(body) | changes, separators=(",", ":")).encode()


async def post(hub: RunningHub, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with await hub.post("/hooks/woo", data=body, headers=headers) as response:
        return response.status, await response.json()


async def test_the_signed_sample_becomes_a_paid_order_on_its_contact(hub: RunningHub) -> None:
    headers, body = request_sample()
    status, answer = await post(hub, body, headers)
    assert (status, answer["duplicate"]) == (202, False)
    [order_] = await hub.wait_items("/api/orders", 1)
    assert (order_["status"], order_["provider_status"]) == ("paid", "processing")
    assert (order_["external_id"], order_["number"], order_["total"], order_["currency"]) == (
        "727",
        "727",
        "29.35",
        "USD",
    )
    assert [(i["name"], i["quantity"], i["total"]) for i in order_["items"]] == [
        ("Woo Single #1", 2, "6.00"),
        ("Ship Your Idea \u2013 Color: Black, Size: M Test", 1, "12.00"),
    ]
    assert order_["customer"]["name"] == "John Doe" and order_["customer"]["address"]["city"] == "San Francisco"
    assert order_["placed_at"] == "2017-03-22T19:28:02Z" and order_["paid_at"] is not None
    [contact] = (await hub.api("/api/contacts", email="john.doe@example.com"))["items"]
    [lead] = (await hub.api("/api/leads", contact_id=contact["id"]))["items"]
    assert (order_["contact_id"], order_["lead_id"], lead["channel"]) == (contact["id"], lead["id"], "shop")
    inquiry = await hub.api(f"/api/inquiries/{answer['id']}")
    assert inquiry["lead_id"] == lead["id"] and inquiry["fields"]["topic"] == "order.created"


async def test_the_ping_gets_200_and_stores_nothing(hub: RunningHub) -> None:
    ping = json.loads(corpus("webhooks", "woocommerce", "ping.request.json").read_text())
    async with await hub.post("/hooks/woo", data=ping["body"].encode(), headers=ping["headers"]) as response:
        assert response.status == 200
    signed_ping = ping["headers"] | {"X-WC-Webhook-Signature": hmac_sha256_b64(SECRET.encode(), ping["body"].encode())}
    async with await hub.post("/hooks/woo", data=ping["body"].encode(), headers=signed_ping) as response:
        assert response.status == 200
    await _only_the_sentinel_is_stored(hub)


async def test_updates_move_the_status_with_one_event_each(hub: RunningHub) -> None:
    headers, body = request_sample()
    await post(hub, body, headers)
    later = order(status="shipped", date_modified_gmt="2017-03-23T10:00:00")  # a plugin status, mapped in config
    latest = order(status="completed", date_modified_gmt="2017-03-24T10:00:00")
    stale = order(status="pending", date_modified_gmt="2017-03-22T19:28:08")  # a retry of an old delivery
    for body_ in (later, latest, stale):
        assert (await post(hub, body_, signed(body_)))[0] == 202
    await hub.wait_items("/api/inquiries", 4)
    [order_] = await hub.wait_items("/api/orders", 1)
    assert order_["status"] == "completed" and order_["fulfilled_at"] and order_["completed_at"]
    async with hub.engine.connect() as conn:
        types = [t for (t,) in await conn.execute(select(OutboxEvent.type).order_by(OutboxEvent.id))]
    assert [t for t in types if t.startswith("order.")] == [
        "order.created",
        "order.paid",
        "order.status_changed",
        "order.fulfilled",
        "order.status_changed",
        "order.completed",
    ]
    assert len((await hub.api("/api/leads"))["items"]) == 1


async def test_an_unknown_status_keeps_the_orders_status(hub: RunningHub) -> None:
    body = order(status="awaiting-pickup", date_modified_gmt="2017-03-23T10:00:00")
    await post(hub, body, signed(body, "order.created"))
    [order_] = await hub.wait_items("/api/orders", 1)
    assert (order_["status"], order_["provider_status"]) == ("new", "awaiting-pickup")


async def test_the_same_delivery_twice_is_one_record(hub: RunningHub) -> None:
    headers, body = request_sample()
    delivery = headers["X-WC-Webhook-Delivery-ID"]
    answers = [await post(hub, body, headers), await post(hub, body, dict(headers))]
    assert [a[1]["duplicate"] for a in answers] == [False, True] and answers[0][1]["id"] == answers[1][1]["id"]
    [inquiry] = await hub.wait_items("/api/inquiries", 1)
    assert inquiry["key"].startswith(f"woocommerce:woo:{delivery}:sha256:"), inquiry["key"]
    await hub.wait_items("/api/orders", 1)


def wp_delivery_id(webhook_id: int, unix_second: int) -> str:
    """Like WC_Webhook::get_new_delivery_id(), wp_hash($this->get_id() . strtotime('now')): the same within a second."""
    return hashlib.md5(f"{webhook_id}{unix_second}".encode()).hexdigest()


async def test_two_deliveries_in_the_same_second_are_two_records(hub: RunningHub) -> None:
    delivery = wp_delivery_id(12, 1_800_000_000)
    first = order(id=727, number="727")
    second = order(id=728, number="728", billing={"first_name": "Jane", "email": "jane@example.com"})
    update = order(id=727, number="727", status="completed")  # another topic's webhook would have another id
    sends = [(first, "order.created"), (second, "order.created"), (update, "order.updated")]
    answers = [await post(hub, body, signed(body, topic, delivery=delivery)) for body, topic in sends]
    assert [a[1]["duplicate"] for a in answers] == [False, False, False]
    await hub.wait_items("/api/inquiries", 3)
    orders = (await hub.api("/api/orders"))["items"]
    assert sorted((o["external_id"], o["status"]) for o in orders) == [("727", "completed"), ("728", "paid")]


async def test_a_secret_typed_with_html_entities_signs_like_wordpress(make_hub: HubFactory) -> None:
    """WooCommerce signs with wp_specialchars_decode($secret): `a&amp;b` is the key `a&b`."""
    hub = await make_hub([{"name": "woo", "type": "woocommerce", "secret": "s3&amp;cret"}])
    body = order()
    assert (await post(hub, body, signed(body, secret="s3&cret")))[0] == 202


async def test_forged_or_missing_signature_is_401(hub: RunningHub) -> None:
    headers, body = request_sample()
    without = {k: v for k, v in headers.items() if k != "X-WC-Webhook-Signature"}
    for hdrs, body_ in (
        (signed(body, secret="guess"), body),
        (without, body),
        (headers, body.replace(b"29.35", b"0.01")),
    ):
        status, answer = await post(hub, body_, hdrs)
        assert (status, answer["error"]) == (401, "bad_signature")
    await _only_the_sentinel_is_stored(hub)


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (b'{"id":727,"status":"processing"', 400, "malformed JSON"),
        (b'{"id":"seven","status":"processing"}', 400, "id"),
        (
            b'{"id":"1","status":"processing"}',
            400,
            "id: must be a whole number, not a string",
        ),  # docs: `id` a number; "1" was stored
        (b'{"id":727,"status":"processing","line_items":{"a":1}}', 400, "line_items"),
        (b'{"id":727,"status":"processing","total":[1]}', 400, "total"),
        (b'{"id":727}', 400, "status"),
        (b'{"id":727,"status":"processing","customer_note":"' + b"x" * (3 * 1024 * 1024) + b'"}', 413, "exceeds"),
    ],
    ids=[
        "truncated",
        "id-not-a-number",
        "id-a-numeric-string",
        "items-not-a-list",
        "total-a-list",
        "no-status",
        "oversized",
    ],
)
async def test_bad_payloads_are_4xx_naming_the_problem(hub: RunningHub, body: bytes, status: int, detail: str) -> None:
    got, answer = await post(hub, body, signed(body, "order.created"))
    assert got == status and detail in answer["detail"], answer
    await _only_the_sentinel_is_stored(hub)


async def test_an_unknown_topic_is_accepted_and_stored_as_dropped(hub: RunningHub) -> None:
    """The body is a real product.created capture (re-signed: its secret is unknown)."""
    capture = json.loads(corpus("webhooks", "woocommerce", "product.created.captured_request.json").read_text())
    body = capture["body"].encode()
    status, answer = await post(hub, body, signed(body, capture["headers"]["x-wc-webhook-topic"]))
    assert status == 202
    [inquiry] = await hub.wait_items("/api/inquiries", 1)
    assert inquiry["dropped"] == "unknown topic: product.created" and inquiry["id"] == answer["id"]


async def _only_the_sentinel_is_stored(hub: RunningHub) -> None:
    """A valid delivery after the refused one is the only inquiry: the queue is FIFO, so a leak would show."""
    headers, body = request_sample()
    assert (await post(hub, body, headers))[0] == 202
    await hub.wait_items("/api/inquiries", 1)


@pytest.mark.parametrize(
    ("typed", "key"),
    [("s3&amp;cret", "s3&cret"), ("a&#039;b&quot;c", "a'b\"c"), ("&amp;lt;", "&lt;"), ("a&copyb", "a&copyb"),
     ("x&QUOT;", "x&QUOT;")],
)  # fmt: skip
def test_the_secret_is_decoded_exactly_like_wp_specialchars_decode(typed: str, key: str) -> None:
    """Only the entities wp_specialchars_decode(ENT_QUOTES) knows, in one pass (PHP strtr), case-sensitive."""
    assert wordpress_secret(typed.encode()) == key.encode()


async def test_an_unknown_status_on_an_update_keeps_the_status_but_shows_the_provider_status(hub: RunningHub) -> None:
    """docs/providers/woocommerce.md: any other status keeps leadhub's status; `provider_status` shows WooCommerce's.

    Material: ../shared/corpus/webhooks/woocommerce/order.created.request.json (the signed order, status processing).
    """
    headers, body = request_sample()
    await post(hub, body, headers)
    later = order(status="awaiting-pickup", date_modified_gmt="2017-03-23T10:00:00")  # a plugin status, not mapped
    assert (await post(hub, later, signed(later)))[0] == 202
    await hub.wait_items("/api/inquiries", 2)
    [order_] = await hub.wait_items("/api/orders", 1)
    assert (order_["status"], order_["provider_status"]) == ("paid", "awaiting-pickup")
    assert order_["provider_updated_at"] == "2017-03-23T10:00:00Z"
