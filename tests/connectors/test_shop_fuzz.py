"""Property: random bodies and headers on every shop webhook route never get a 5xx, never stop the hub, and whatever
gets past the edge is stored or dead-lettered as a PermanentError (never a crash of the store).

Bodies are random bytes, random JSON, and mutations of realistic orders; half of them are signed with the right secret
so the payload checks behind the signature are exercised too. Hypothesis runs in a worker thread with a blocking HTTP
client while the hub serves on the test's event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from leadhub.connectors.shop_common import hmac_sha256_b64
from leadhub.store.models import DeadLetter
from tests.conftest import HubFactory
from tests.helpers import corpus, wait_for

SECRET = "fuzz-secret"
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
ORDER_KEYS = ["id", "status", "total", "total_price", "currency", "line_items", "billing", "customer", "email",
              "updated_at", "date_modified_gmt", "financial_status", "cancelled_at", "order_id", "number"]  # fmt: skip
ORDERISH = st.dictionaries(st.sampled_from(ORDER_KEYS), JSON, max_size=8).map(lambda d: {"id": 1, **d})
PLAUSIBLE = st.one_of(
    JSON,
    st.sampled_from(["2026-11-01T10:00:00Z", "2026-11-01T10:00:00", "12.50", "paid", "fulfilled", "refunded", "1e400"]),
)


def bodies(samples: list[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    """Random bytes and JSON, and real orders with a few fields replaced: most pass the edge and reach the pipeline."""
    mutated = st.builds(
        lambda sample, changes: json.dumps(sample | changes).encode(),
        st.sampled_from(samples),
        st.dictionaries(st.sampled_from(sorted({k for s in samples for k in s})), PLAUSIBLE, max_size=3),
    )
    return st.one_of(
        st.binary(max_size=300),
        JSON.map(lambda v: json.dumps(v).encode()),
        ORDERISH.map(lambda v: json.dumps(v).encode()),
        ORDERISH.map(lambda v: ("payment=" + json.dumps(v)).encode()),
        mutated,
        mutated,
    )


TOPICS = st.sampled_from(
    ["orders/create", "orders/paid", "refunds/create", "order.updated", "order.created", "", "x" * 300]
)
CONTENT_TYPES = st.sampled_from(
    ["application/json", "application/x-www-form-urlencoded", "text/plain", "", "multipart/form-data"]
)
ROUTES = {
    "/hooks/shopify": lambda body, topic: {
        "X-Shopify-Hmac-Sha256": hmac_sha256_b64(SECRET.encode(), body),
        "X-Shopify-Topic": topic,
        "X-Shopify-Webhook-Id": hashlib.sha1(body).hexdigest(),
    },
    "/hooks/woo": lambda body, topic: {
        "X-WC-Webhook-Signature": hmac_sha256_b64(SECRET.encode(), body),
        "X-WC-Webhook-Topic": topic,
    },
    "/hooks/tilda?token=" + SECRET: lambda body, topic: {},
    "/hooks/generic": lambda body, topic: {"X-Signature": hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()},
}


def _post(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bool]:
    """The status, and whether a 202 was for something new (not a duplicate)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read()
        return response.status, response.status == 202 and json.loads(answer)["duplicate"] is False
    finally:
        connection.close()


async def test_random_requests_never_get_a_5xx_or_break_the_store(make_hub: HubFactory) -> None:
    hub = await make_hub([
        {"name": "shopify", "type": "shopify", "secret": SECRET},
        {"name": "woo", "type": "woocommerce", "secret": SECRET},
        {"name": "tilda", "type": "tilda", "secret": SECRET},
        {"name": "generic", "type": "order", "secret": SECRET, "fields": {"external_id": "id"}},
    ])  # fmt: skip
    port = hub.hub.port
    assert port is not None
    samples = [
        json.loads(corpus("webhooks", "shopify", "orders_create.shopify_test_notification.json").read_text()),
        json.loads(corpus("webhooks", "woocommerce", "order.created.wire_body.json").read_text()),
    ]
    statuses: list[int] = []
    fresh: list[bool] = []

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(
        route=st.sampled_from(sorted(ROUTES)),
        body=bodies(samples),
        topic=TOPICS,
        content_type=CONTENT_TYPES,
        signed=st.sampled_from([True, True, True, False]),
        extra=st.dictionaries(st.sampled_from(["X-Shopify-Triggered-At", "X-WC-Webhook-Delivery-ID"]), st.text(
            alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=20), max_size=2),
    )  # fmt: skip
    def property_(  # noqa: PLR0917 - hypothesis passes each strategy as an argument
        route: str, body: bytes, topic: str, content_type: str, signed: bool, extra: dict[str, str]
    ) -> None:
        headers = {"Content-Type": content_type, **extra}
        if signed:
            headers |= ROUTES[route](body, topic)
        status, new = _post(port, route, body, headers)
        statuses.append(status)
        fresh.append(new)
        assert status < 500, (route, body[:200], headers, status)

    await asyncio.to_thread(property_)
    assert any(s == 202 for s in statuses) and any(400 <= s < 500 for s in statuses)

    # Still serving, and everything accepted was stored or dead-lettered as permanently unreadable.
    async with hub.session.get(hub.url("/healthz")) as response:
        assert response.status == 200
    accepted = fresh.count(True)

    async def settled() -> dict[str, Any] | None:
        async with hub.engine.connect() as conn:
            dead = (await conn.execute(select(DeadLetter.key, DeadLetter.error))).all()
        stored = len((await hub.api("/api/inquiries", limit=1000))["items"])
        return {"dead": dead} if stored + len(dead) >= accepted else None

    dead = (await wait_for(settled, timeout=60, what="every accepted request to be stored or dead-lettered"))["dead"]
    assert {error for _, error in dead} <= {"PermanentError"}, dead
    assert (await hub.api("/api/orders"))["items"], "no random delivery reached the orders: the strategies are too weak"
