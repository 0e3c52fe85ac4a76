"""A local WooCommerce REST API for the poller's tests: `/wp-json/wc/v3/orders` with consumer key/secret auth,
`modified_after` filtering, oldest modification first, pagination, and knobs for a shop that misbehaves.

Orders are built from ../shared/corpus/webhooks/woocommerce/order.created.rest_v3_example.json (REST v3 docs example).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from tests.helpers import corpus

KEY, SECRET = "ck_test_0123", "cs_test_4567"


@dataclass
class FakeShop:
    """The part of the WooCommerce REST API the poller uses, with a log of the requests it answered."""

    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)
    url: str = ""
    hang: asyncio.Event | None = None  # when set, requests wait on it (a shop that stopped answering)
    redirect: bool = False  # answer every request with a redirect to itself
    after_request: Callable[[dict[str, str]], None] | None = None  # runs once a page is cut (a shop being edited)
    extra: list[Any] = field(default_factory=list)  # items served after the orders on every page (broken answers)
    refusals: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # (status, headers) answered first
    refuse_always: tuple[int, dict[str, str]] | None = None  # a shop that keeps failing
    times: list[float] = field(default_factory=list)  # time.monotonic() of every request
    bodies: list[bytes] = field(default_factory=list)  # raw answers served first instead of a page (broken JSON)

    def put(self, order_id: int, status: str, modified: str, email: str) -> None:
        base = json.loads(corpus("webhooks", "woocommerce", "order.created.rest_v3_example.json").read_text())
        billing = base["billing"] | {"email": email}
        self.orders[order_id] = base | {
            "id": order_id,
            "number": str(order_id),
            "status": status,
            "date_modified_gmt": modified,
            "billing": billing,
        }

    async def list_orders(self, request: web.Request) -> web.Response:
        if self.redirect:
            raise web.HTTPFound(location=str(request.rel_url))
        expected = "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"code": "woocommerce_rest_cannot_view", "message": "Sorry"}, status=401)
        query = dict(request.query)
        self.requests.append(query)
        self.times.append(time.monotonic())
        if self.refusals or self.refuse_always:
            status, headers = self.refusals.pop(0) if self.refusals else self.refuse_always  # type: ignore[misc]
            return web.json_response({"code": "refused", "message": "try later"}, status=status, headers=headers)
        if self.bodies:
            return web.Response(body=self.bodies.pop(0), content_type="application/json")
        if self.hang is not None:
            await self.hang.wait()
        after = datetime.fromisoformat(query["modified_after"]).replace(tzinfo=UTC)
        matching = sorted(
            (
                o
                for o in self.orders.values()
                if datetime.fromisoformat(o["date_modified_gmt"]).replace(tzinfo=UTC) > after
            ),
            key=lambda o: o["date_modified_gmt"],
        )
        per_page, page = int(query["per_page"]), int(query["page"])
        pages = max(1, -(-len(matching) // per_page))
        chunk = matching[(page - 1) * per_page : page * per_page] + self.extra
        if self.after_request is not None:
            self.after_request(query)
        headers = {"X-WP-Total": str(len(matching)), "X-WP-TotalPages": str(pages)}
        return web.json_response(chunk, headers=headers)


@pytest.fixture(name="shop")
async def shop_fixture() -> AsyncIterator[FakeShop]:
    """A FakeShop on a free loopback port; requests still hanging at the end are let go."""
    fake = FakeShop()
    app = web.Application()
    app.router.add_get("/wp-json/wc/v3/orders", fake.list_orders)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    yield fake
    if fake.hang is not None:
        fake.hang.set()
    await runner.cleanup()


def poller(shop: FakeShop, **changes: Any) -> dict[str, Any]:
    return {
        "name": "woo-pull",
        "type": "woocommerce_poll",
        "url": shop.url,
        "consumer_key": KEY,
        "consumer_secret": SECRET,
        "interval": "300ms",
        "per_page": 2,
        "initial_lookback": "3650d",
        **changes,
    }
