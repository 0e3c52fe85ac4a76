"""An amount the pipeline cannot store (abs >= 10^15, `shop_payloads.MAX_AMOUNT`) is a 400 naming the field at every
shop connector: from 10^15 up to 24 digits such orders were answered 202 and then dead-lettered for good."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest

from leadhub.connectors.shop_common import hmac_sha256_b64
from tests.conftest import HubFactory, RunningHub

SECRET = "amount-secret"
HUGE = "100000000000000000000.00"  # 10^20: 21 digits before the point, under the old 24-digit bound
EDGE = "1000000000000000"  # 10^15 exactly: the first amount the pipeline refuses
LARGEST = "999999999999999.99"


def _shopify(body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Shopify-Hmac-Sha256": hmac_sha256_b64(SECRET.encode(), body),
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Webhook-Id": hashlib.sha1(body).hexdigest(),
    }


def _woo(body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-WC-Webhook-Signature": hmac_sha256_b64(SECRET.encode(), body),
        "X-WC-Webhook-Topic": "order.created",
    }


def _generic(body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Signature": hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(),
    }


def _tilda(body: bytes) -> dict[str, str]:
    return {"Content-Type": "application/x-www-form-urlencoded"}


def _tilda_body(payment: dict[str, Any]) -> bytes:
    return urlencode({"Name": "Ann", "Phone": "+79161110097", "payment": json.dumps(payment)}).encode()


Route = tuple[str, Callable[[bytes], dict[str, str]]]
SHOPIFY: Route = ("/hooks/shopify", _shopify)
WOO: Route = ("/hooks/woo", _woo)
GENERIC: Route = ("/hooks/generic", _generic)
TILDA: Route = (f"/hooks/tilda?token={SECRET}", _tilda)

CASES = [
    ("shopify total_price", SHOPIFY, json.dumps({"id": 1, "total_price": HUGE}), "total_price"),
    ("shopify at the limit", SHOPIFY, json.dumps({"id": 2, "total_price": EDGE}), "total_price"),
    ("shopify line item price", SHOPIFY, json.dumps({"id": 3, "line_items": [{"price": HUGE}]}), "line_items.0.price"),
    ("shopify negative", SHOPIFY, json.dumps({"id": 4, "total_price": "-" + HUGE}), "total_price"),
    ("woocommerce total", WOO, json.dumps({"id": 1, "status": "processing", "total": HUGE}), "total"),
    ("woocommerce item total", WOO,
     json.dumps({"id": 2, "status": "processing", "line_items": [{"total": HUGE}]}), "line_items.0.total"),
    ("order sum", GENERIC, '{"id": "A-1", "total": 1e20}', "total"),
    ("order item price", GENERIC, json.dumps({"id": "A-2", "items": [{"price": EDGE}]}), "items.0.price"),
    ("tilda payment amount", TILDA, _tilda_body({"orderid": "1", "amount": "100000000000000000000"}), "amount"),
    ("tilda product price", TILDA,
     _tilda_body({"orderid": "2", "amount": "1", "products": [{"name": "x", "price": HUGE}]}), "products.0.price"),
]  # fmt: skip


@pytest.fixture
async def hub(make_hub: HubFactory) -> RunningHub:
    return await make_hub([
        {"name": "shopify", "type": "shopify", "secret": SECRET},
        {"name": "woo", "type": "woocommerce", "secret": SECRET},
        {"name": "tilda", "type": "tilda", "secret": SECRET},
        {"name": "generic", "type": "order", "secret": SECRET, "fields": {"external_id": "id"}},
    ])  # fmt: skip


async def _post(hub: RunningHub, route: Route, body: bytes) -> tuple[int, dict[str, Any]]:
    path, sign = route
    async with await hub.post(path, data=body, headers=sign(body)) as response:
        return response.status, await response.json()


@pytest.mark.parametrize(("label", "route", "body", "field"), CASES, ids=[c[0] for c in CASES])
async def test_an_amount_the_pipeline_refuses_is_400_naming_the_field(
    hub: RunningHub, label: str, route: Route, body: str | bytes, field: str
) -> None:
    raw = body.encode() if isinstance(body, str) else body
    status, answer = await _post(hub, route, raw)
    assert (status, answer.get("error")) == (400, "malformed"), answer
    assert f"{field}: " in answer["detail"] and "less than 10^15" in answer["detail"], answer


async def test_a_refund_whose_sum_the_pipeline_refuses_is_400(hub: RunningHub) -> None:
    """Each transaction is in range, their sum is not: the pipeline stores the sum."""
    refund = {"id": 9, "order_id": 1, "transactions": [{"amount": LARGEST, "kind": "refund"}] * 2}
    body = json.dumps(refund).encode()
    headers = _shopify(body) | {"X-Shopify-Topic": "refunds/create"}
    async with await hub.post("/hooks/shopify", data=body, headers=headers) as response:
        answer = await response.json()
        assert (response.status, answer.get("error")) == (400, "malformed"), answer
    assert "transactions" in answer["detail"] and "less than 10^15" in answer["detail"], answer


async def test_the_largest_amount_the_pipeline_takes_is_stored(hub: RunningHub) -> None:
    status, answer = await _post(hub, GENERIC, json.dumps({"id": "A-9", "total": LARGEST}).encode())
    assert status == 202, answer
    [order] = await hub.wait_items("/api/orders", 1)
    assert order["total"] == LARGEST
    assert await hub.api("/api/dead-letters") == {"items": [], "next_cursor": None}
