"""Shopify webhooks through the real hub: signed per Shopify's scheme (base64 HMAC-SHA256 of the raw body) they become
one order per Shopify order with leadhub's status; forged, malformed and oversized requests are refused with a 4xx.

Material: ../shared/corpus/webhooks/shopify/orders_create.shopify_test_notification.json (Shopify's test notification
order) and the shopify-api-js validate.test.ts vector quoted in that folder's MANIFEST.md.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from leadhub.connectors.shop_common import hmac_sha256_b64
from leadhub.store.models import OutboxEvent
from tests.conftest import HubFactory, RunningHub
from tests.helpers import corpus

NEW, OLD = "shpss_new_secret", "shpss_old_secret"


def test_signature_matches_the_shopify_api_js_vector() -> None:
    """shopify-api-js validate.test.ts: secret test_secret_key, body {"foo": "bar"}."""
    assert hmac_sha256_b64(b"test_secret_key", b'{"foo": "bar"}') == "B23tXN681gZ0qIWNRrgtzBE9XSDo5yaUu6wfmhu3a7g="


@pytest.fixture
async def hub(make_hub: HubFactory) -> RunningHub:
    return await make_hub([{"name": "shop", "type": "shopify", "secrets": [NEW, OLD]}])


def sample_bytes() -> bytes:
    return corpus("webhooks", "shopify", "orders_create.shopify_test_notification.json").read_bytes()


def sample(**changes: Any) -> dict[str, Any]:
    return json.loads(sample_bytes()) | changes


def headers(body: bytes, topic: str = "orders/create", *, secret: str = NEW, prefixed: bool = True, **extra: str):
    prefix = "X-Shopify-" if prefixed else "Shopify-"
    return {
        "Content-Type": "application/json",
        f"{prefix}Hmac-Sha256": hmac_sha256_b64(secret.encode(), body),
        f"{prefix}Topic": topic,
        f"{prefix}Shop-Domain": "jsmith.myshopify.com",
        f"{prefix}API-Version": "2022-04",
        f"{prefix}Webhook-Id": extra.pop("webhook_id", str(uuid.uuid4())),
        **extra,
    }


async def send(hub: RunningHub, body: bytes | dict[str, Any], topic: str = "orders/create", **kwargs: Any) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    hdrs = kwargs.pop("hdrs", None) or headers(raw, topic, **kwargs)
    async with await hub.post("/hooks/shop", data=raw, headers=hdrs) as response:
        return response.status, await response.json()


async def inquiries(hub: RunningHub, count: int) -> list[dict[str, Any]]:
    return await hub.wait_items("/api/inquiries", count)


async def test_the_test_notification_becomes_a_contact_lead_and_cancelled_order(hub: RunningHub) -> None:
    status, body = await send(hub, sample_bytes())  # pretty-printed, with \/ escapes: signed exactly as sent
    assert (status, body["duplicate"]) == (202, False)
    [order] = await hub.wait_items("/api/orders", 1)
    assert order["status"] == "cancelled"  # financial_status voided, cancelled_at set
    assert order["provider_status"] == "voided/pending/cancelled"
    assert (order["external_id"], order["number"]) == ("820982911946154508", "9999")
    assert (order["total"], order["currency"]) == ("403.00", "USD")
    assert [(i["name"], i["quantity"], i["price"]) for i in order["items"]] == [("IPod Nano - 8GB", 1, "199.00")] * 2
    assert order["customer"]["email"] == "jon@doe.ca" and order["customer"]["name"] == "John Smith"
    assert order["customer"]["address"]["city"] == "Shippington"
    assert order["cancelled_at"] is not None and order["placed_at"] == "2022-02-03T21:36:32Z"
    [contact] = (await hub.api("/api/contacts", email="jon@doe.ca"))["items"]
    assert order["contact_id"] == contact["id"]
    [lead] = (await hub.api("/api/leads", channel="shop"))["items"]
    assert lead["contact_id"] == contact["id"] and order["lead_id"] == lead["id"]
    assert (await hub.api("/api/orders", contact_id=contact["id"]))["items"][0]["id"] == order["id"]
    assert (await hub.api("/api/orders", contact_id="nobody"))["items"] == []
    assert (await hub.api(f"/api/orders/{order['id']}")) == order
    async with hub.session.get(hub.url("/api/orders/nope")) as response:
        assert response.status == 404


async def test_create_paid_fulfilled_is_one_order_with_one_event_per_transition(hub: RunningHub) -> None:
    base = {"financial_status": "pending", "fulfillment_status": None, "cancelled_at": None}
    steps = [
        ("orders/create", base | {"updated_at": "2022-02-03T16:36:32-05:00"}),
        ("orders/paid", base | {"financial_status": "paid", "updated_at": "2022-02-03T16:40:00-05:00"}),
        (
            "orders/fulfilled",
            base
            | {"financial_status": "paid", "fulfillment_status": "fulfilled", "updated_at": "2022-02-04T09:00:00Z"},
        ),
    ]
    for topic, changes in steps:
        assert (await send(hub, sample(**changes), topic))[0] == 202
    await inquiries(hub, 3)
    [order] = await hub.wait_items("/api/orders", 1)
    assert order["status"] == "fulfilled" and order["paid_at"] and order["fulfilled_at"]
    async with hub.engine.connect() as conn:
        rows = (await conn.execute(select(OutboxEvent.type, OutboxEvent.data).order_by(OutboxEvent.id))).all()
    order_events = [(t, d) for t, d in rows if t.startswith("order.")]
    assert [t for t, _ in order_events] == [
        "order.created",
        "order.status_changed",
        "order.paid",
        "order.status_changed",
        "order.fulfilled",
    ]
    assert [(d["from"], d["to"]) for t, d in order_events if t == "order.status_changed"] == [
        ("new", "paid"),
        ("paid", "fulfilled"),
    ]
    assert len((await hub.api("/api/leads"))["items"]) == 1  # updates of a known order open no lead


async def test_an_older_update_arriving_late_does_not_regress_the_status(hub: RunningHub) -> None:
    newer = sample(
        financial_status="paid", fulfillment_status="fulfilled", cancelled_at=None, updated_at="2022-02-05T00:00:00Z"
    )
    older = sample(
        financial_status="paid", fulfillment_status=None, cancelled_at=None, updated_at="2022-02-04T00:00:00Z"
    )
    await send(hub, newer, "orders/fulfilled")
    await send(hub, older, "orders/updated")
    await inquiries(hub, 2)
    [order] = await hub.wait_items("/api/orders", 1)
    assert order["status"] == "fulfilled"


async def test_a_refund_moves_the_order_to_refunded_on_the_same_contact(hub: RunningHub) -> None:
    await send(hub, sample(financial_status="paid", cancelled_at=None))
    refund = {"id": 509562969, "order_id": 820982911946154508, "created_at": "2022-02-06T10:00:00Z",
              "transactions": [{"amount": "199.00", "kind": "refund", "currency": "USD"}]}  # fmt: skip
    assert (await send(hub, refund, "refunds/create"))[0] == 202
    items = await inquiries(hub, 2)
    [order] = await hub.wait_items("/api/orders", 1)
    assert order["status"] == "refunded" and order["total"] == "403.00"
    assert {i["contact_id"] for i in items} == {order["contact_id"]}


async def test_the_same_delivery_twice_is_one_record(hub: RunningHub) -> None:
    raw = sample_bytes()
    hdrs = headers(raw, webhook_id="b54557e4-bdd9-4b37-8a5f-bf7d70bcd043")
    answers = [await send(hub, raw, hdrs=hdrs) for _ in range(2)]
    assert [a[1]["duplicate"] for a in answers] == [False, True] and answers[0][1]["id"] == answers[1][1]["id"]
    await inquiries(hub, 1)
    assert len(await hub.wait_items("/api/orders", 1)) == 1


async def test_a_duplicate_delivery_of_one_event_with_a_new_webhook_id_is_one_record(hub: RunningHub) -> None:
    """shopify.dev, "Ignore duplicate webhooks": the same X-Shopify-Event-Id on several deliveries marks a duplicate;
    keyed by the webhook id, the second delivery of one order was a second inquiry: rules fired twice."""
    raw = sample_bytes()
    event = str(uuid.uuid4())
    answers = [await send(hub, raw, **{"X-Shopify-Event-Id": event}) for _ in range(2)]  # a new webhook id each
    answers.append(await send(hub, raw, prefixed=False, **{"Shopify-Event-Id": event}))
    assert [a[1]["duplicate"] for a in answers] == [False, True, True], answers
    assert len({a[1]["id"] for a in answers}) == 1
    [inquiry] = await inquiries(hub, 1)
    assert inquiry["meta"]["event_id"] == event
    await hub.wait_items("/api/orders", 1)
    async with hub.engine.connect() as conn:
        kinds = (await conn.execute(select(OutboxEvent.type))).scalars().all()
    assert kinds.count("inquiry.received") == 1, kinds
    # Another event about the same order (an update) is news, though its body is the same.
    assert (await send(hub, raw, **{"X-Shopify-Event-Id": str(uuid.uuid4())}))[1]["duplicate"] is False
    await inquiries(hub, 2)


async def test_old_secret_and_unprefixed_headers_are_accepted(hub: RunningHub) -> None:
    assert (await send(hub, sample_bytes(), secret=OLD))[0] == 202
    assert (await send(hub, sample_bytes(), prefixed=False))[0] == 202
    await inquiries(hub, 2)


async def test_forged_or_missing_signature_is_401_and_counted(hub: RunningHub) -> None:
    raw = sample_bytes()
    forged = headers(raw, secret="guessed")
    missing = {k: v for k, v in headers(raw).items() if "Hmac" not in k}
    tampered = headers(raw)  # signed for the original body, sent with a changed total
    for hdrs, body in ((forged, raw), (missing, raw), (tampered, raw.replace(b"403.00", b"0.01"))):
        async with await hub.post("/hooks/shop", data=body, headers=hdrs) as response:
            assert response.status == 401, await response.text()
            assert (await response.json())["error"] == "bad_signature"
    async with hub.session.get(hub.url("/metrics")) as response:
        assert 'leadhub_intake_rejected_total{connector="shop",reason="bad_signature"} 3.0' in await response.text()
    await _nothing_stored(hub)


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (b'{"id": 1, "email": "x@y.z",', 400, "malformed JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (b'{"id": 1, "line_items": "many"}', 400, "line_items"),
        (b'{"id": 1, "total_price": "lots"}', 400, "total_price"),
        (b'{"id": {"nested": true}}', 400, "id"),
        (
            b'{"id": "x", "email": "x@y.z"}',
            400,
            "id: must be a whole number, not a string",
        ),  # docs: `id` a number; "x" was stored
        (b'{"id": "820982911946154508"}', 400, "id: must be a whole number, not a string"),
        (b'{"email": "no-id@example.com"}', 400, "id"),
        (b'{"id": 1, "note": "' + b"x" * (3 * 1024 * 1024) + b'"}', 413, "exceeds"),
    ],
    ids=[
        "truncated",
        "array",
        "items-not-a-list",
        "total-not-a-number",
        "id-object",
        "id-text",
        "id-digits-as-text",
        "no-id",
        "oversized",
    ],
)
async def test_bad_payloads_are_4xx_naming_the_problem(hub: RunningHub, body: bytes, status: int, detail: str) -> None:
    async with await hub.post("/hooks/shop", data=body, headers=headers(body)) as response:
        assert response.status == status, await response.text()
        assert detail in (await response.json())["detail"]
    await _nothing_stored(hub)


async def test_an_unknown_topic_is_accepted_and_stored_as_dropped(hub: RunningHub) -> None:
    status, _ = await send(hub, {"id": 632910392, "title": "IPod Nano"}, "products/create")
    assert status == 202
    [inquiry] = await inquiries(hub, 1)
    assert inquiry["dropped"] == "unknown topic: products/create" and inquiry["lead_id"] is None
    assert (await hub.api("/api/orders"))["items"] == []


async def test_get_is_405(hub: RunningHub) -> None:
    async with hub.session.get(hub.url("/hooks/shop")) as response:
        assert response.status == 405


async def _nothing_stored(hub: RunningHub) -> None:
    """A valid delivery after the refused one is the only inquiry: the queue is FIFO, so a leak would show."""
    assert (await send(hub, sample_bytes()))[0] == 202
    await inquiries(hub, 1)


async def test_a_replay_window_refuses_old_triggered_deliveries(make_hub: HubFactory) -> None:
    hub = await make_hub([{"name": "shop", "type": "shopify", "secret": NEW, "replay_window": "1h"}])
    raw = sample_bytes()
    old = headers(raw, **{"X-Shopify-Triggered-At": "2022-02-03T21:36:33.123Z"})
    status, answer = await send(hub, raw, hdrs=old)
    assert (status, answer["error"]) == (401, "stale")
    fresh = headers(raw, **{"X-Shopify-Triggered-At": datetime.now(UTC).isoformat()})
    assert (await send(hub, raw, hdrs=fresh))[0] == 202
    assert (await send(hub, raw, hdrs=headers(raw, **{"X-Shopify-Triggered-At": "soon"})))[0] == 400
