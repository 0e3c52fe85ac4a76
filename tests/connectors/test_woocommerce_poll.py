"""The WooCommerce REST poller against a local aiohttp server playing the shop (tests/connectors/woo_shop.py):
every order arrives once, the checkpoint moves forward and survives a restart, a modified order is re-read and moves
its status, an order edited mid-walk hides nothing, broken orders are dead-lettered, and a refusing shop is reported
and backed off from.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from leadhub.connectors.base import ConnectorContext, PublishResult
from leadhub.connectors.shop_common import hmac_sha256_b64
from leadhub.connectors.woocommerce_api import retry_after
from leadhub.connectors.woocommerce_fit import encoded, fitted
from leadhub.connectors.woocommerce_poll import (
    MAX_BACKOFF,
    MAX_RETRY_AFTER,
    WooCommercePollConfig,
    WooCommercePollConnector,
    next_delay,
)
from leadhub.envelope import Envelope
from leadhub.hub.config import ConfigError, config_from_dict
from leadhub.hub.embedded_nats import EmbeddedNats
from leadhub.store import dead_letters
from leadhub.store.connector_state import load_state
from leadhub.store.models import OutboxEvent
from tests.conftest import HubFactory, RunningHub
from tests.connectors.woo_shop import FakeShop, poller, shop_fixture  # noqa: F401 - the `shop` fixture
from tests.helpers import wait_for


async def orders_by_id(hub: RunningHub) -> dict[str, dict[str, Any]]:
    return {o["external_id"]: o for o in (await hub.api("/api/orders"))["items"]}


async def test_orders_are_pulled_across_pages_and_the_checkpoint_moves(make_hub: HubFactory, shop: FakeShop) -> None:
    shop.put(101, "processing", "2026-11-01T10:00:00", "a@example.com")
    shop.put(102, "pending", "2026-11-01T11:00:00", "b@example.com")
    shop.put(103, "completed", "2026-11-01T12:00:00", "c@example.com")
    hub = await make_hub([poller(shop)])
    orders = {o["external_id"]: o for o in await hub.wait_items("/api/orders", 3)}
    assert {k: o["status"] for k, o in orders.items()} == {"101": "paid", "102": "new", "103": "completed"}
    assert len(await hub.wait_items("/api/leads", 3)) == 3
    first_page = await hub.api("/api/orders", limit=2)
    second_page = await hub.api("/api/orders", limit=2, cursor=first_page["next_cursor"])
    pages = [o["external_id"] for o in first_page["items"] + second_page["items"]]
    assert len(first_page["items"]) == 2 and sorted(pages) == ["101", "102", "103"]
    assert second_page["next_cursor"] is None

    # The second page is asked for from the first page's last modification (keyset), not as page=2 of the query.
    # The orders are in once the second page is read; the third read (the walk's end) may still be on its way.
    async def walked() -> bool:
        return len(shop.requests) >= 3

    await wait_for(walked, what="the poll's third read")
    first_poll = [(r["modified_after"], r["page"]) for r in shop.requests[:3]]
    assert first_poll[1:] == [("2026-11-01T10:59:59", "1"), ("2026-11-01T11:59:59", "1")]
    assert all(r["orderby"] == "modified" and r["dates_are_gmt"] == "true" for r in shop.requests)

    async def checkpoint() -> dict[str, Any] | None:
        return await load_state(hub.engine, "woo-pull", "orders")

    assert (await wait_for(checkpoint, what="the checkpoint"))["modified_after"] == "2026-11-01T12:00:00+00:00"

    # A later modification is read from the checkpoint on, and moves the order without a new lead.
    seen = len(shop.requests)
    shop.put(102, "completed", "2026-11-02T09:00:00", "b@example.com")

    async def completed() -> bool:
        return (await orders_by_id(hub))["102"]["status"] == "completed"

    await wait_for(completed, what="order 102 to be completed")
    assert all(r["modified_after"] >= "2026-11-01T11:59:59" for r in shop.requests[seen:])
    assert len((await hub.api("/api/leads"))["items"]) == 3
    assert len((await hub.api("/api/inquiries"))["items"]) == 4  # re-reads of unchanged orders are duplicates


async def test_an_order_modified_again_within_the_second_it_was_read_in_is_not_a_duplicate(
    make_hub: HubFactory, shop: FakeShop
) -> None:
    """Shop times are whole seconds: a checkout that creates the order and marks it paid within one second may be
    read between the two; the re-read of that second brings the paid order under the same id and time."""
    shop.put(601, "pending", "2026-11-01T10:00:00", "p@example.com")
    hub = await make_hub([poller(shop)])
    [order] = await hub.wait_items("/api/orders", 1)
    assert order["status"] == "new"
    shop.put(601, "processing", "2026-11-01T10:00:00", "p@example.com")

    async def paid() -> bool:
        return (await orders_by_id(hub))["601"]["status"] == "paid"

    await wait_for(paid, what="order 601 to be paid")
    assert len(await hub.wait_items("/api/inquiries", 2)) == 2


async def test_the_checkpoint_survives_a_restart(make_hub: HubFactory, shop: FakeShop) -> None:
    shop.put(201, "processing", "2026-11-01T10:00:00", "d@example.com")
    first = await make_hub([poller(shop)])
    await first.wait_items("/api/orders", 1)
    await wait_for(lambda: load_state(first.engine, "woo-pull", "orders"), what="the checkpoint")
    await first.hub.stop()
    seen = len(shop.requests)
    second = await make_hub([poller(shop)])  # same database

    async def polled_again() -> bool:
        return len(shop.requests) > seen

    await wait_for(polled_again, what="the second hub to poll")
    assert shop.requests[seen]["modified_after"] == "2026-11-01T09:59:59"
    assert len((await second.api("/api/inquiries"))["items"]) == 1


async def test_wrong_credentials_show_in_readyz_and_store_nothing(make_hub: HubFactory, shop: FakeShop) -> None:
    shop.put(301, "processing", "2026-11-01T10:00:00", "e@example.com")
    hub = await make_hub([poller(shop, consumer_secret="cs_wrong")])

    async def reported() -> dict[str, Any] | None:
        async with hub.session.get(hub.url("/readyz")) as response:
            detail = (await response.json())["detail"].get("connector:woo-pull")
            return detail if detail and not detail["ok"] else None

    detail = await wait_for(reported, what="the poller to report its failure")
    assert "HTTP 401" in detail["error"] and "cs_wrong" not in detail["error"]
    assert (await hub.api("/api/orders"))["items"] == []
    assert await load_state(hub.engine, "woo-pull", "orders") is None


async def test_the_hub_stops_promptly_while_a_poll_hangs(make_hub: HubFactory, shop: FakeShop) -> None:
    shop.hang = asyncio.Event()
    hub = await make_hub([poller(shop, timeout="60s")])

    async def polling() -> bool:
        return bool(shop.requests)

    await wait_for(polling, what="the poller to send its request")
    started = time.monotonic()
    await hub.hub.stop()
    assert time.monotonic() - started < hub.hub.settings.shutdown_timeout
    assert await load_state(hub.engine, "woo-pull", "orders") is None


async def test_query_auth_keys_never_reach_the_readiness_report(make_hub: HubFactory, shop: FakeShop) -> None:
    """A redirect loop: aiohttp's error quotes the URL, which carries the keys with `auth: query`."""
    shop.redirect = True
    hub = await make_hub([poller(shop, auth="query", consumer_key="ck_visible_key", consumer_secret="cs_visible")])

    async def reported() -> dict[str, Any] | None:
        async with hub.session.get(hub.url("/readyz")) as response:
            detail = (await response.json())["detail"].get("connector:woo-pull")
            return detail if detail and not detail["ok"] else None

    detail = await wait_for(reported, what="the poller to report its failure")
    assert "TooManyRedirects" in detail["error"] and "consumer_secret=***" in detail["error"]
    assert "ck_visible_key" not in detail["error"] and "cs_visible" not in detail["error"]


async def test_an_order_modified_while_pages_are_read_does_not_hide_the_next_one(
    make_hub: HubFactory, shop: FakeShop
) -> None:
    """Page 1 is [401, 402]; then 401 is edited and moves to the end, so every later order slides back one place.

    Walking `page=2` of the same query would start at 404 and never see 403, and the checkpoint would pass it.
    """
    for i, order_id in enumerate(range(401, 407)):
        shop.put(order_id, "processing", f"2026-11-01T10:0{i}:00", f"o{order_id}@example.com")
    edited = False

    def edit_401_after_the_first_page(query: dict[str, str]) -> None:
        nonlocal edited
        if not edited:
            edited = True
            shop.put(401, "completed", "2026-11-03T08:00:00", "o401@example.com")

    shop.after_request = edit_401_after_the_first_page
    hub = await make_hub([poller(shop)])

    async def checkpoint_past_the_edit() -> bool:
        state = await load_state(hub.engine, "woo-pull", "orders")
        return bool(state) and state["modified_after"] == "2026-11-03T08:00:00+00:00"

    await wait_for(checkpoint_past_the_edit, what="the checkpoint to reach the edited order")
    orders = {o["external_id"]: o for o in await hub.wait_items("/api/orders", 6)}
    assert sorted(orders) == [str(i) for i in range(401, 407)]


async def test_many_orders_with_one_modified_second_across_pages(make_hub: HubFactory, shop: FakeShop) -> None:
    """Five orders share a second (a bulk edit) with two per page: every one is read, and the poll ends."""
    for order_id in range(501, 506):
        shop.put(order_id, "processing", "2026-11-01T10:00:00", f"t{order_id}@example.com")
    shop.put(506, "processing", "2026-11-01T10:00:01", "t506@example.com")
    hub = await make_hub([poller(shop)])
    orders = await hub.wait_items("/api/orders", 6)
    assert sorted(o["external_id"] for o in orders) == [str(i) for i in range(501, 507)]

    async def checkpoint() -> dict[str, Any] | None:
        state = await load_state(hub.engine, "woo-pull", "orders")
        return state if state and state["modified_after"] == "2026-11-01T10:00:01+00:00" else None

    await wait_for(checkpoint, what="the checkpoint past the shared second")
    # A later poll starts inside the shared second again (overlap) and still ends: requests per poll stay few.
    seen = len(shop.requests)
    await wait_for(lambda: _polls_since(shop, seen, 2), what="two more polls")
    assert len(shop.requests) - seen < 20


async def _polls_since(shop: FakeShop, seen: int, polls: int) -> bool:
    """True once `polls` polls (each starts from the checkpoint on page 1) began after request `seen`."""
    starts = [r for r in shop.requests[seen:] if r["modified_after"] == "2026-11-01T10:00:00" and r["page"] == "1"]
    return len(starts) >= polls


async def test_a_broken_order_is_dead_lettered_and_the_others_still_arrive(
    make_hub: HubFactory, shop: FakeShop
) -> None:
    shop.put(601, "processing", "2026-11-01T10:00:00", "p601@example.com")
    shop.extra = [
        {"id": "not-a-number", "status": "processing", "date_modified_gmt": "2026-11-01T10:00:00"},
        {"id": [602], "status": "processing", "date_modified_gmt": "2026-11-01T10:00:00"},
        None,
    ]
    hub = await make_hub([poller(shop, per_page=5)])
    await hub.wait_items("/api/orders", 1)

    async def dead() -> list[Any] | None:
        async with hub.engine.connect() as conn:
            rows = list(await dead_letters.list_open(conn, payloads=True))
        return rows or None

    rows = await wait_for(dead, what="the broken order in dead letters")
    assert b"not-a-number" in rows[0].payload and all(r.key.startswith("woocommerce_poll:woo-pull:") for r in rows)

    async def all_three() -> bool:
        async with hub.engine.connect() as conn:
            return len(await dead_letters.list_open(conn)) == 3

    await wait_for(all_three, what="the three broken items in dead letters")

    async def checkpoint_moved() -> bool:  # the broken items did not fail the poll
        state = await load_state(hub.engine, "woo-pull", "orders")
        return bool(state) and state["modified_after"] == "2026-11-01T10:00:00+00:00"

    await wait_for(checkpoint_moved, what="the checkpoint past the broken items")


def _gaps(shop: FakeShop) -> list[float]:
    return [later - earlier for earlier, later in zip(shop.times, shop.times[1:], strict=False)]


async def test_a_429_retry_after_is_honoured(make_hub: HubFactory, shop: FakeShop) -> None:
    shop.put(701, "processing", "2026-11-01T10:00:00", "r701@example.com")
    shop.refusals = [(429, {"Retry-After": "2"})]
    hub = await make_hub([poller(shop)])  # polls every 300 ms
    await hub.wait_items("/api/orders", 1)
    assert _gaps(shop)[0] >= 1.9, f"asked again {_gaps(shop)[0]:.2f}s after a 429 with Retry-After: 2"


async def test_a_failing_shop_is_polled_less_and_less_often(make_hub: HubFactory, shop: FakeShop) -> None:
    """503s (or a revoked key's 401s) back off from the interval instead of knocking at the same rate for ever."""
    shop.refuse_always = (503, {})
    hub = await make_hub([poller(shop, interval="100ms")])

    async def five_requests() -> bool:
        return len(shop.times) >= 5

    await wait_for(five_requests, what="five polls of the failing shop")
    gaps = _gaps(shop)
    assert gaps[3] >= 0.7, f"gaps between polls did not grow: {[round(g, 2) for g in gaps]}"
    async with hub.session.get(hub.url("/readyz")) as response:
        detail = (await response.json())["detail"]["connector:woo-pull"]
    assert not detail["ok"] and "HTTP 503" in detail["error"]


async def test_a_revoked_key_is_reported_as_such(make_hub: HubFactory, shop: FakeShop) -> None:
    shop.refuse_always = (401, {})
    hub = await make_hub([poller(shop, auth="query", consumer_key="ck_revoked_1", consumer_secret="cs_revoked_2")])

    async def reported() -> dict[str, Any] | None:
        async with hub.session.get(hub.url("/readyz")) as response:
            detail = (await response.json())["detail"].get("connector:woo-pull")
            return detail if detail and not detail["ok"] else None

    detail = await wait_for(reported, what="the poller to report the refusal")
    assert "HTTP 401" in detail["error"] and "refused the consumer key" in detail["error"]
    assert "ck_revoked_1" not in detail["error"] and "cs_revoked_2" not in detail["error"]


async def _failure_reported(hub: RunningHub) -> dict[str, Any]:
    async def reported() -> dict[str, Any] | None:
        async with hub.session.get(hub.url("/readyz")) as response:
            detail = (await response.json())["detail"].get("connector:woo-pull")
            return detail if detail and not detail["ok"] else None

    return await wait_for(reported, what="the poller to report its failure")


async def test_a_retry_after_of_digits_float_refuses_leaves_the_refusal_as_it_was(
    make_hub: HubFactory, shop: FakeShop
) -> None:
    """str.isdigit() takes '²', which float() refuses: the ValueError replaced the shop's 401, reported as a failing
    shop (`source`) rather than a refused key. The poller goes on as after any refusal."""
    shop.put(702, "processing", "2026-11-01T10:00:00", "r702@example.com")
    shop.refusals = [(401, {"Retry-After": "²"})] * 3
    hub = await make_hub([poller(shop)])
    detail = await _failure_reported(hub)
    assert "HTTP 401" in detail["error"] and "refused the consumer key" in detail["error"], detail
    await hub.wait_items("/api/orders", 1)


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply"), (b"[" + b"9" * 5000 + b"]", "more than 4300 digits")],
    ids=["nested too deeply", "a number too long"],
)
async def test_a_page_json_cannot_read_is_a_poll_error_and_polling_goes_on(
    make_hub: HubFactory, shop: FakeShop, body: bytes, reason: str
) -> None:
    """A RecursionError was reported as Python's own words ("maximum recursion depth exceeded while decoding a JSON
    array from a unicode string"); a number of 4,301+ digits as "not JSON" without saying why."""
    shop.put(703, "processing", "2026-11-01T10:00:00", "r703@example.com")
    shop.bodies = [body] * 3  # three failed polls: backed off 0.3, 0.6 and 1.2 s, long enough to see
    hub = await make_hub([poller(shop)])
    detail = await _failure_reported(hub)
    assert detail["error"].startswith("PollError: GET /wp-json/wc/v3/orders page 1: the answer is not JSON: ")
    assert reason in detail["error"], detail
    await hub.wait_items("/api/orders", 1)


async def _at_depth(frames: int, call: Callable[[], Awaitable[None]]) -> None:
    """`call()` awaited `frames` coroutine frames deeper in the stack than the caller."""
    await (call() if frames == 0 else _at_depth(frames - 1, call))


def _deepest_array_read_here(template: str) -> str:
    """`template` with the most deeply nested array json.loads reads from this depth in the stack."""
    low, high = 1, sys.getrecursionlimit()
    while low < high:
        middle = (low + high + 1) // 2
        try:
            json.loads(template % ("[" * middle + "]" * middle))
            low = middle
        except RecursionError:
            high = middle - 1
    return template % ("[" * low + "]" * low)


async def test_an_order_json_cannot_write_back_is_cut_not_a_failed_poll() -> None:
    """json.loads reads an order nested nearly as deep as the stack allows; json.dumps, called deeper down in the
    poll, could not write it: the RecursionError failed every poll at that order, holding back every order after it.
    The order is cut as an oversized order is, to what the pipeline reads."""
    published: list[Envelope] = []

    async def publish(envelope: Envelope) -> PublishResult:
        published.append(envelope)
        return PublishResult(id=envelope.id, duplicate=False)

    config = WooCommercePollConfig.model_validate(
        {"name": "woo-pull", "url": "http://127.0.0.1:1", "consumer_key": "ck", "consumer_secret": "cs"}
    )
    connector = WooCommercePollConnector(config, ConnectorContext(publish=publish))
    order = json.loads(
        _deepest_array_read_here(
            '{"id": 704, "status": "processing", "date_modified_gmt": "2026-11-01T10:00:00",'
            ' "billing": {"email": "r704@example.com"}, "meta_data": [{"key": "plugin", "value": %s}]}'
        )
    )
    await _at_depth(20, lambda: connector._publish(order))
    [envelope] = published
    assert envelope.key.startswith("woocommerce_poll:woo-pull:704:20261101T100000:") and envelope.meta["too_deep"]
    assert json.loads(envelope.payload) == {
        "id": 704,
        "status": "processing",
        "date_modified_gmt": "2026-11-01T10:00:00",
        "billing": {"email": "r704@example.com"},
        "line_items": [],
    }


def test_the_backoff_doubles_up_to_its_cap_and_yields_to_retry_after() -> None:
    assert [next_delay(60, n) for n in range(5)] == [60, 60, 120, 240, 480]
    assert next_delay(60, 50) == MAX_BACKOFF and next_delay(60, 10_000) == MAX_BACKOFF
    assert next_delay(3600, 3) == 3600  # an interval longer than the cap is never shortened
    assert next_delay(1, 1, retry_after=30) == 30
    assert next_delay(1, 1, retry_after=10**9) == MAX_RETRY_AFTER


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 1, 10, 0, 0, tzinfo=UTC)
    assert retry_after("120", now) == 120
    assert retry_after("Sun, 01 Nov 2026 10:00:30 GMT", now) == 30
    assert retry_after("soon", now) is None and retry_after(None, now) is None
    assert retry_after("²", now) is None and retry_after("١٢", now) is None  # digits, but not ASCII ones


async def test_an_order_over_the_queue_limit_is_cut_to_fit_and_holds_nothing_up(
    make_hub: HubFactory, shop: FakeShop, stock_nats: EmbeddedNats
) -> None:
    """1.5 MB of plugin meta_data on one order: the queue refuses it whole, and every poll used to fail there."""
    shop.put(901, "completed", "2026-11-01T10:00:00", "big@example.com")
    shop.orders[901]["meta_data"] = [{"id": 1, "key": "_plugin_blob", "value": "x" * 1_500_000}]
    shop.put(902, "processing", "2026-11-01T10:01:00", "small@example.com")
    hub = await make_hub([poller(shop)], nats_url=stock_nats.url)
    orders = {o["external_id"]: o for o in await hub.wait_items("/api/orders", 2, timeout=20)}
    assert {k: o["status"] for k, o in orders.items()} == {"901": "completed", "902": "paid"}
    inquiries = {i["meta"].get("too_large"): i for i in await hub.wait_items("/api/inquiries", 2)}
    assert set(inquiries) == {None, len(encoded(shop.orders[901]))}

    async def checkpoint_past_both() -> bool:
        state = await load_state(hub.engine, "woo-pull", "orders")
        return bool(state) and state["modified_after"] == "2026-11-01T10:01:00+00:00"

    await wait_for(checkpoint_past_both, what="the checkpoint past both orders")


def test_an_order_is_cut_only_as_far_as_needed() -> None:
    order = {"id": 1, "status": "completed", "meta_data": ["m" * 200_000], "line_items": [{"name": "A", "sku": "a"}]}
    payload, full = fitted(order, 400 * 1024)  # the limit keeps 64 KiB for headers
    assert full is None and payload == encoded(order)
    payload, full = fitted(order, 200 * 1024)
    assert full == len(encoded(order)) and json.loads(payload) == {
        "id": 1,
        "status": "completed",
        "line_items": order["line_items"],
    }
    items = [{"name": "i" * 1000, "sku": str(n), "meta_data": []} for n in range(200)]
    payload, _ = fitted({"id": 2, "status": "x", "_links": {}, "line_items": items}, 200 * 1024)
    assert json.loads(payload) == {"id": 2, "status": "x", "line_items": []}


async def test_an_order_dated_in_the_future_does_not_carry_the_checkpoint_past_new_orders(
    make_hub: HubFactory, shop: FakeShop
) -> None:
    """An import or a clock jump leaves an order modified in 2099: a checkpoint there would skip every later order."""
    now = datetime.now(UTC).replace(microsecond=0)
    shop.put(1001, "processing", (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"), "f1@example.com")
    shop.put(1002, "processing", "2099-01-01T00:00:00", "f2@example.com")
    hub = await make_hub([poller(shop)])
    await hub.wait_items("/api/orders", 2)

    async def checkpoint() -> dict[str, Any] | None:
        return await load_state(hub.engine, "woo-pull", "orders")

    await wait_for(checkpoint, what="the first checkpoint")
    shop.put(1003, "processing", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"), "f3@example.com")
    orders = await hub.wait_items("/api/orders", 3)
    assert sorted(o["external_id"] for o in orders) == ["1001", "1002", "1003"]
    assert (await checkpoint())["modified_after"] < "2099"  # type: ignore[index]


async def test_an_order_edited_while_a_shared_second_is_paged_does_not_hide_another(
    make_hub: HubFactory, shop: FakeShop
) -> None:
    """Five orders share a second, two per page, so that second is read as page 1, 2, 3 of one query; editing 1101
    after page 2 slides 1105 onto page 2, and page 3 would skip it: the checkpoint must stay at the shared second."""
    for order_id in range(1101, 1106):
        shop.put(order_id, "processing", "2026-11-01T10:00:00", f"s{order_id}@example.com")
    shop.put(1106, "processing", "2026-11-01T10:01:00", "s1106@example.com")

    def edit_1101_after_page_2(query: dict[str, str]) -> None:
        if query["page"] == "2" and shop.orders[1101]["date_modified_gmt"].startswith("2026-11-01"):
            shop.put(1101, "completed", "2026-11-03T08:00:00", "s1101@example.com")

    shop.after_request = edit_1101_after_page_2
    hub = await make_hub([poller(shop)])
    orders = await hub.wait_items("/api/orders", 6)
    assert sorted(o["external_id"] for o in orders) == [str(i) for i in range(1101, 1107)]


async def test_a_walk_that_fails_midway_keeps_the_pages_it_read(make_hub: HubFactory, shop: FakeShop) -> None:
    """A shop that starts failing on the third page: the next poll goes on from the second page's last second, not
    from the start of the walk (which, with a long backlog, would read the same pages again on every try)."""
    for n in range(6):
        shop.put(1001 + n, "processing", f"2026-11-01T{10 + n}:00:00", f"w{n}@example.com")

    def fail_after_two_pages(_query: dict[str, str]) -> None:
        if len(shop.requests) == 2:
            shop.refuse_always = (500, {})

    shop.after_request = fail_after_two_pages
    hub = await make_hub([poller(shop)])

    async def failed_twice_more() -> bool:
        return len(shop.requests) >= 5

    await wait_for(failed_twice_more, what="two more polls of the failing shop")
    state = await load_state(hub.engine, "woo-pull", "orders")
    assert state == {"modified_after": "2026-11-01T12:00:00+00:00"}  # pages 1 and 2 (10:00-12:00) were published
    assert all(r["modified_after"] == "2026-11-01T11:59:59" for r in shop.requests[3:])

    shop.after_request, shop.refuse_always = None, None
    orders = await hub.wait_items("/api/orders", 6)
    assert sorted(o["external_id"] for o in orders) == [str(1001 + n) for n in range(6)]


async def test_a_poller_beside_the_shops_webhook_keeps_one_order(make_hub: HubFactory, shop: FakeShop) -> None:
    """Found by an audit: WooCommerce disables a webhook after 5 failed deliveries, so a poller is the natural
    backstop beside it; but orders are one per (connector, id), and every order the two both delivered was stored
    twice, with two leads and two `order.completed` (two surveys). `orders_of` makes the poller's orders the
    webhook connector's."""
    shop.put(101, "completed", "2026-11-01T10:00:00", "a@example.com")
    webhook = {"name": "woo", "type": "woocommerce", "secret": "wc_secret"}
    hub = await make_hub([webhook, poller(shop, orders_of="woo")])
    await hub.wait_items("/api/inquiries", 1)
    body = json.dumps(shop.orders[101]).encode()
    headers = {
        "Content-Type": "application/json",
        "X-WC-Webhook-Topic": "order.updated",
        "X-WC-Webhook-Delivery-ID": "d1",
        "X-WC-Webhook-Signature": hmac_sha256_b64(b"wc_secret", body),
    }
    async with await hub.post("/hooks/woo", data=body, headers=headers) as response:
        assert response.status == 202, await response.text()
    inquiries = await hub.wait_items("/api/inquiries", 2)
    (order,) = (await hub.api("/api/orders"))["items"]
    assert (order["connector"], order["external_id"], order["status"]) == ("woo", "101", "completed")
    assert {i["lead_id"] for i in inquiries} == {order["lead_id"]}
    assert len((await hub.api("/api/leads"))["items"]) == 1
    async with hub.engine.connect() as conn:
        types = list((await conn.execute(select(OutboxEvent.type))).scalars())
    assert types.count("order.completed") == 1 and types.count("order.created") == 1


def test_orders_of_must_name_a_woocommerce_webhook_with_the_same_statuses() -> None:

    def problems(*connectors: dict[str, Any]) -> str:
        with pytest.raises(ConfigError) as caught:
            config_from_dict({"connectors": list(connectors)}, env={})
        return str(caught.value)

    pull = poller(FakeShop(url="https://shop.example"), orders_of="woo")
    assert "orders_of: 'woo' is not a configured woocommerce connector" in problems(pull)
    form = {"name": "woo", "type": "form"}
    assert "orders_of: 'woo' is not a configured woocommerce connector" in problems(form, pull)
    hook = {"name": "woo", "type": "woocommerce", "secret": "s", "statuses": {"shipped": "fulfilled"}}
    assert "statuses must be those of 'woo'" in problems(hook, pull)
    config = config_from_dict({"connectors": [hook, pull | {"statuses": {"shipped": "fulfilled"}}]}, env={})
    assert [c.name for c in config.connectors] == ["woo", "woo-pull"]
