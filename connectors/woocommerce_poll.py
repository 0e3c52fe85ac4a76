"""Connector `woocommerce_poll`: pulls orders modified since the checkpoint from the WooCommerce REST API (v3).

For shops that cannot push webhooks. Each poll walks `GET /wp-json/wc/v3/orders?modified_after=...` page by page,
publishes every order (keyed by id and modification time, so a re-read is a duplicate), and only then moves the
checkpoint in `connector_state`; a crash mid-way re-reads the same orders instead of losing them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

import aiohttp
import structlog
from pydantic import AnyHttpUrl, Field, SecretStr, field_validator

from leadhub.connectors.base import ConnectorConfig, ConnectorContext, Stop
from leadhub.connectors.shop_common import check_status_map
from leadhub.durations import parse_duration
from leadhub.envelope import Envelope
from leadhub.store.connector_state import load_state, save_state

log = structlog.get_logger("leadhub.connectors.woocommerce_poll")
ORDERS_PATH = "/wp-json/wc/v3/orders"
STATE_KEY = "orders"
# Re-read one second before the checkpoint: WooCommerce times have whole seconds, and re-reads are duplicates.
OVERLAP = timedelta(seconds=1)
MAX_PAGES = 1000
STOP_GRACE = 2.0  # seconds a running poll gets to finish when the hub stops


class PollError(Exception):
    """The shop answered something other than a page of orders; the message says what."""


class WooCommercePollConfig(ConnectorConfig):
    type: Literal["woocommerce_poll"] = "woocommerce_poll"
    url: AnyHttpUrl = Field(description="the shop's base URL, e.g. https://shop.example.com")
    consumer_key: SecretStr
    consumer_secret: SecretStr
    auth: Literal["basic", "query"] = Field("basic", description="HTTP Basic, or consumer_key/secret in the query")
    interval: timedelta = timedelta(minutes=5)
    per_page: int = Field(50, ge=1, le=100)
    initial_lookback: timedelta = Field(timedelta(days=1), description="how far back the very first poll reads")
    timeout: timedelta = timedelta(seconds=30)
    statuses: dict[str, str] = Field(default_factory=dict, description="custom order status -> leadhub status")

    @field_validator("interval", "initial_lookback", "timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta:
        duration = parse_duration(value)
        if duration.total_seconds() <= 0:
            raise ValueError("must be positive")
        return duration

    @field_validator("statuses")
    @classmethod
    def _statuses_are_known(cls, value: dict[str, str]) -> dict[str, str]:
        return check_status_map(value)


def _gmt(value: Any, order_id: Any) -> datetime:
    if not isinstance(value, str):
        raise PollError(f"order {order_id}: date_modified_gmt is missing or not a string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise PollError(f"order {order_id}: date_modified_gmt {value[:40]!r} is not an ISO time") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


class WooCommercePollConnector:
    """Polls on an interval until stopped; reports each poll's outcome under /readyz."""

    type: ClassVar[str] = "woocommerce_poll"
    channel: ClassVar[str] = "shop"
    Config: ClassVar[type[WooCommercePollConfig]] = WooCommercePollConfig

    def __init__(self, config: WooCommercePollConfig, context: ConnectorContext) -> None:
        self.config = config
        self.context = context
        self.base_url = str(config.url).rstrip("/")
        self._stopping = asyncio.Event()

    async def start(self) -> Stop:
        task = asyncio.create_task(self._run(), name=f"woocommerce-poll:{self.config.name}")

        async def stop() -> None:
            self._stopping.set()
            try:  # a poll cut short keeps its checkpoint and is simply read again next time
                await asyncio.wait_for(asyncio.shield(task), STOP_GRACE)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        return stop

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.timeout.total_seconds())
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self._stopping.is_set():
                try:
                    published = await self.poll_once(session)
                except Exception as exc:  # the shop or the queue is away: report, keep the checkpoint, retry
                    error = self._redact(f"{type(exc).__name__}: {str(exc)[:300]}")
                    log.warning("woocommerce poll failed", connector=self.config.name, error=error)
                    self.context.report(self.config.name, {"ok": False, "error": error})
                else:
                    status = {"ok": True, "published": published, "polled_at": datetime.now(UTC).isoformat()}
                    self.context.report(self.config.name, status)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.config.interval.total_seconds())

    def _redact(self, text: str) -> str:
        """With `auth: query` the keys are in the URL, and client errors quote URLs: never log or report them."""
        for secret in (self.config.consumer_key, self.config.consumer_secret):
            text = text.replace(secret.get_secret_value(), "***")
        return text

    async def poll_once(self, session: aiohttp.ClientSession) -> int:
        """Publish every order modified since the checkpoint, then advance it; returns how many were published."""
        state = await load_state(self.context.engine, self.config.name, STATE_KEY) or {}
        if checkpoint := state.get("modified_after"):
            since = datetime.fromisoformat(checkpoint)
        else:
            since = datetime.now(UTC) - self.config.initial_lookback
        newest, published = since, 0
        for page in range(1, MAX_PAGES + 1):
            orders, total_pages = await self._page(session, since - OVERLAP, page)
            for order in orders:
                try:
                    modified = await self._publish(order)
                except PollError as exc:  # one broken order must not hold the checkpoint back for ever
                    log.warning("woocommerce order skipped", connector=self.config.name, error=str(exc))
                    continue
                newest = max(newest, modified)
                published += 1
            if page >= total_pages or len(orders) < self.config.per_page:
                break
        if newest > since:
            await save_state(self.context.engine, self.config.name, STATE_KEY, {"modified_after": newest.isoformat()})
        return published

    async def _page(self, session: aiohttp.ClientSession, since: datetime, page: int) -> tuple[list[Any], int]:
        params = {
            "modified_after": since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            "dates_are_gmt": "true",
            "orderby": "modified",
            "order": "asc",
            "per_page": str(self.config.per_page),
            "page": str(page),
        }
        headers = {"Accept": "application/json"}
        if self.config.auth == "basic":
            key, secret = self.config.consumer_key.get_secret_value(), self.config.consumer_secret.get_secret_value()
            headers["Authorization"] = "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()
        else:
            params["consumer_key"] = self.config.consumer_key.get_secret_value()
            params["consumer_secret"] = self.config.consumer_secret.get_secret_value()
        async with session.get(self.base_url + ORDERS_PATH, params=params, headers=headers) as response:
            body = await response.read()
            if response.status != 200:
                raise PollError(f"GET {ORDERS_PATH} page {page}: HTTP {response.status}: {body[:200]!r}")
            try:
                orders = json.loads(body)
            except ValueError:
                raise PollError(f"GET {ORDERS_PATH} page {page}: the answer is not JSON") from None
            total_pages = response.headers.get("X-WP-TotalPages", "")
        if not isinstance(orders, list):
            raise PollError(f"GET {ORDERS_PATH} page {page}: expected a list of orders, got {type(orders).__name__}")
        return orders, int(total_pages) if total_pages.isdigit() else page

    async def _publish(self, order: Any) -> datetime:
        if not isinstance(order, dict) or not isinstance(order.get("id"), int):
            raise PollError("an order in the answer has no numeric id")
        modified = _gmt(order.get("date_modified_gmt"), order["id"])
        envelope = Envelope(
            key=f"woocommerce_poll:{self.config.name}:{order['id']}:{modified.strftime('%Y%m%dT%H%M%S')}",
            channel=self.channel,
            connector=self.config.name,
            payload=json.dumps(order, ensure_ascii=False, separators=(",", ":")).encode(),
            content_type="application/json",
            meta={"topic": "order.updated", "source": self.base_url},
        )
        await self.context.publish(envelope)
        return modified
