"""Connector `woocommerce_poll`: pulls orders modified since the checkpoint from the WooCommerce REST API (v3).

For shops that cannot push webhooks. Each poll reads `GET /wp-json/wc/v3/orders?modified_after=...` oldest
modification first, publishes every order (keyed by id, modification time and content, so a re-read is a duplicate), and
only then moves the checkpoint in `connector_state`, after each page; a crash or a failed request mid-way re-reads
that page's orders instead of losing them, and the next poll goes on from there rather than from the walk's start.

The next page is asked for from the last modification time seen (keyset), not as `page=2` of the first query: an
order edited during the walk moves to the end of the list, and with page numbers the order after it would slide
onto a page already read and be skipped for good. Only a full page of one second (a bulk edit) is paged by number.
One replica at a time polls a shop (a lease, store/leases.py), checked before each checkpoint a walk saves: a walk
that outlives its lease stops there, since another replica may already walk from the same checkpoint. Failures back
off, and a 429's Retry-After holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

import aiohttp
import structlog
from pydantic import AnyHttpUrl, Field, SecretStr, field_validator

from leadhub.connectors.base import CheckResult, ConnectorConfig, ConnectorContext, Stop
from leadhub.connectors.failure_reason import failure_reason, in_store
from leadhub.connectors.shop_common import check_status_map
from leadhub.connectors.woocommerce_api import OrdersApi, PollError, modified_time
from leadhub.connectors.woocommerce_fit import encoded, fitted, shallow
from leadhub.durations import parse_duration
from leadhub.envelope import Envelope
from leadhub.error_text import brief
from leadhub.store.connector_state import load_state, save_state
from leadhub.store.leases import Lease, try_lease
from leadhub.url_redaction import redact_urls

log = structlog.get_logger("leadhub.connectors.woocommerce_poll")
STATE_KEY = "orders"
# Re-read one second before the checkpoint: WooCommerce times have whole seconds, and re-reads are duplicates.
OVERLAP = timedelta(seconds=1)
MAX_PAGES = 1000  # requests in one poll; the next poll goes on from the checkpoint reached
STOP_GRACE = 2.0  # seconds a running poll gets to finish when the hub stops
LEASE_RETRY = 5.0  # seconds between a standby replica's attempts to take the shop's lease
MAX_BACKOFF = 900.0  # failing polls back off to at most this (or the interval, if longer)
MAX_RETRY_AFTER = 3600.0  # a Retry-After beyond this is taken as this: a bogus header must not park the poller


def next_delay(interval: float, failures: int, retry_after: float | None = None) -> float:
    """Seconds until the next poll: the interval, doubled per failure in a row up to the cap, and never less than
    what the shop asked for with Retry-After."""
    if failures == 0:
        return interval
    delay = min(interval * 2 ** min(failures - 1, 30), max(interval, MAX_BACKOFF))
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


class LeaseLost(Exception):
    """The shop's lease ended during a walk: the walk stops without saving its checkpoint."""


def _read_before(cursor: datetime, held: datetime | None, shop_started: datetime | None) -> datetime:
    """The checkpoint a walk has earned: its cursor, but not past an order that moved while a query was paged by
    number (the next poll reads that second again), nor past the shop's clock: an order dated in the future (an
    import, a clock jump) is re-read instead."""
    return min(t for t in (cursor, held, shop_started) if t is not None)


def _order_id(order: dict[str, Any]) -> int | None:
    """The order's numeric id; None for anything else a broken answer may hold there (a list cannot be a key)."""
    order_id = order.get("id")
    return order_id if isinstance(order_id, int) and not isinstance(order_id, bool) else None


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
    orders_of: str | None = Field(
        None,
        description="the `woocommerce` webhook connector of the same shop: the orders read are its orders, not copies",
    )

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


def _orders_api(config: WooCommercePollConfig, per_page: int) -> OrdersApi:
    secrets = config.consumer_key.get_secret_value(), config.consumer_secret.get_secret_value()
    return OrdersApi(str(config.url).rstrip("/"), *secrets, config.auth, per_page)


class WooCommercePollConnector:
    """Polls on an interval until stopped; reports each poll's outcome under /readyz."""

    type: ClassVar[str] = "woocommerce_poll"
    channel: ClassVar[str] = "shop"
    Config: ClassVar[type[WooCommercePollConfig]] = WooCommercePollConfig

    def __init__(self, config: WooCommercePollConfig, context: ConnectorContext) -> None:
        self.config = config
        self.context = context
        self.base_url = str(config.url).rstrip("/")
        self.api = _orders_api(config, config.per_page)
        self._stopping = asyncio.Event()

    @classmethod
    async def check(cls, config: WooCommercePollConfig) -> list[CheckResult]:
        """One read of the orders API with the connector's key, as a poll does (`leadhub connectors check`)."""
        api = _orders_api(config, per_page=1)
        base_url = api.base_url
        timeout = aiohttp.ClientTimeout(total=config.timeout.total_seconds())
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                page = await api.page(session, datetime.now(UTC) - timedelta(days=1), 1)
        except Exception as exc:  # the query may hold the key and secret (auth: query): never in the text
            return [CheckResult(False, redact_urls(f"{base_url}: {brief(exc)}"))]
        recent = "an order was modified in the last day" if page.orders else "no order was modified in the last day"
        return [CheckResult(True, f"{base_url}: the orders API answers with the key; {recent}")]

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
                lease = await self._take_lease()
                if lease is None:
                    continue
                try:
                    await self._poll_while_held(session, lease)
                finally:
                    await lease.release()

    async def _take_lease(self) -> Lease | None:
        """The shop's lease, or None after a pause when another replica holds it or the store is away."""
        try:
            lease = await try_lease(self.context.engine, f"woocommerce_poll:{self.config.name}")
        except Exception as exc:  # the store is away: nothing could be checkpointed, so nothing is read
            error = f"cannot take the poller's lease: {brief(exc)}"
            log.warning("woocommerce lease failed", connector=self.config.name, reason="store", error=error)
            self.context.failed(self.config.name, "store")
            self.context.report(self.config.name, {"ok": False, "error": error})
            await self._pause(LEASE_RETRY)
            return None
        if lease is None:
            self.context.report(self.config.name, {"ok": True, "standby": "another replica polls this shop"})
            await self._pause(min(self.config.interval.total_seconds(), LEASE_RETRY))
        return lease

    async def _poll_while_held(self, session: aiohttp.ClientSession, lease: Lease) -> None:
        """Poll on the interval (backing off while polls fail) until stopped or the lease is lost."""
        failures = 0
        interval = self.config.interval.total_seconds()
        while not self._stopping.is_set():
            try:
                published = await self.poll_once(session, lease)
            except LeaseLost:
                self._lease_lost()
                return
            except Exception as exc:  # the shop or the queue is away: report, keep the checkpoint, retry later
                failures += 1
                delay = next_delay(interval, failures, exc.retry_after if isinstance(exc, PollError) else None)
                error = self._redact(f"{type(exc).__name__}: {str(exc)[:300]}")
                reason = failure_reason(exc)
                log.warning(
                    "woocommerce poll failed", connector=self.config.name, reason=reason, error=error, retry_in=delay
                )
                self.context.failed(self.config.name, reason)
                self.context.report(self.config.name, {"ok": False, "error": error, "failures": failures})
            else:
                failures, delay = 0, interval
                status = {"ok": True, "published": published, "polled_at": datetime.now(UTC).isoformat()}
                self.context.report(self.config.name, status)
            await self._pause(delay)
            if not self._stopping.is_set() and not await lease.alive():
                self._lease_lost()
                return

    def _lease_lost(self) -> None:
        log.warning("woocommerce poller lease lost; polling stops here", connector=self.config.name, reason="store")
        self.context.failed(self.config.name, "store")

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _redact(self, text: str) -> str:
        """With `auth: query` the keys are in the URL, and client errors quote URLs: never log or report them."""
        for secret in (self.config.consumer_key, self.config.consumer_secret):
            text = text.replace(secret.get_secret_value(), "***")
        return text

    async def poll_once(self, session: aiohttp.ClientSession, lease: Lease | None = None) -> int:
        """Publish every order modified since the checkpoint, advancing it page by page while `lease` is held;
        returns how many."""
        async with in_store():
            state = await load_state(self.context.engine, self.config.name, STATE_KEY) or {}
        if checkpoint := state.get("modified_after"):
            since = datetime.fromisoformat(checkpoint)
        else:
            since = datetime.now(UTC) - self.config.initial_lookback
        saved = since

        async def advance(reached: datetime) -> None:
            """Keep what is read: a walk that fails on page 500 goes on from page 499 next time, not from 1."""
            nonlocal saved
            if reached > saved:
                if lease is not None and not await lease.alive():
                    raise LeaseLost(lease.name)
                async with in_store():
                    value = {"modified_after": reached.isoformat()}
                    await save_state(self.context.engine, self.config.name, STATE_KEY, value)
                saved = reached

        return await self._walk(session, since.replace(microsecond=0), advance)  # shop times: whole seconds

    async def _walk(
        self, session: aiohttp.ClientSession, start: datetime, advance: Callable[[datetime], Awaitable[None]]
    ) -> int:
        """Publish the orders modified from `start` on, passing `advance` each time before which all were read."""
        cursor = newest = start
        published, page, shop_started, held = 0, 1, None, None
        paged: dict[int | None, datetime] = {}  # orders on earlier pages of a page-numbered query, at their time then
        for _ in range(MAX_PAGES):
            answer = await self.api.page(session, cursor - OVERLAP, page)
            orders, shop_started = answer.orders, shop_started or answer.shop_time
            for order in orders:
                await self._publish(order)
            published += len(orders)
            timed = [(_order_id(order), t) for order in orders if (t := modified_time(order)) is not None]
            for order_id, modified in timed:  # edited since its page was read: later pages may have slid past one
                if order_id in paged and modified > paged[order_id]:
                    held = min(held or paged[order_id], paged[order_id])
            times = [t for _, t in timed]
            newest = max([newest, *times])
            if len(orders) < self.config.per_page:  # the rest of the list was on this page
                cursor = newest
                break
            if times and times == sorted(times) and times[-1] > cursor:
                cursor, page = times[-1], 1  # the next query starts at this page's last second (which it re-reads)
                await advance(_read_before(cursor, held, shop_started))
            else:  # a full page of one second (or an unsorted answer): the next page of the same query
                paged.update((order_id, modified) for order_id, modified in timed if order_id is not None)
                page += 1
        await advance(_read_before(cursor, held, shop_started))
        return published

    async def _publish(self, order: Any) -> None:
        """Publish one order; one the shop sent broken still goes on, keyed by its content, for the pipeline to
        dead-letter with the reason (it must neither stop the poll nor vanish into a log line)."""
        meta: dict[str, Any] = {"topic": "order.updated", "source": self.base_url}
        modified = modified_time(order)  # read before any cut below (None for anything but a dict)
        order_id = _order_id(order) if modified is not None else None
        try:
            payload, full_size = fitted(order, self.context.max_payload())
        except RecursionError:  # json.loads read it; json.dumps, from deeper in the stack, cannot write it
            order = shallow(order)
            payload, full_size = fitted(order, self.context.max_payload())
            meta["too_deep"] = True
        # The JSON written, unless cut to fit: a re-read of the same order is a duplicate, and an order modified again
        # within the second it was read in (shop times are whole seconds) is another item, not lost as a duplicate.
        digest = hashlib.sha256(payload if full_size is None else encoded(order)).hexdigest()[:32]
        if modified is not None and order_id is not None:
            item = f"{order_id}:{modified.strftime('%Y%m%dT%H%M%S')}:{digest}"
        else:
            item = "malformed:" + digest
            log.warning("woocommerce order without a numeric id or a modification time", connector=self.config.name)
        if full_size is not None:
            meta["too_large"] = full_size
            log.warning("woocommerce order cut to fit the queue", connector=self.config.name, key=item, size=full_size)
        if "too_deep" in meta:
            log.warning("woocommerce order nested too deeply: cut", connector=self.config.name, key=item)
        envelope = Envelope(
            key=f"woocommerce_poll:{self.config.name}:{item}",
            channel=self.channel,
            connector=self.config.name,
            payload=payload,
            content_type="application/json",
            meta=meta,
        )
        await self.context.publish(envelope)
