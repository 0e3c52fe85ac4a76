"""One request to the WooCommerce REST v3 orders list, and errors that say what went wrong and how long to wait."""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from leadhub.connectors.failure_reason import CredentialsRefused
from leadhub.json_errors import JSON_ERRORS, json_error_text

ORDERS_PATH = "/wp-json/wc/v3/orders"
# What a refusal usually means, so that a revoked key or a wrong URL reads as such in the log and /readyz.
REFUSALS = {
    401: "the shop refused the consumer key/secret (revoked, or read access missing)",
    403: "the consumer key has no permission to read orders",
    404: "no WooCommerce REST API at this URL (wrong url:, or pretty permalinks off)",
    429: "rate limited by the shop",
}
KEY_REFUSED = frozenset({401, 403})  # a person has to fix the key: `auth`, not the shop failing
EXCERPT_CHARS = 200  # of an error answer's body, in the log, /readyz and `connectors check`
_HEAD = re.compile(r"<(head|script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[!/?a-zA-Z][^<>]*>")


class PollError(Exception):
    """The shop answered something other than a page of orders; `retry_after` is the wait it asked for, if any."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status  # the shop's HTTP status; None when it answered 200 with something else


class KeyRefused(PollError, CredentialsRefused):
    """The shop refused the consumer key/secret (401), or the key may not read orders (403)."""


@dataclass(frozen=True, slots=True)
class Page:
    """A page of orders and the shop's clock when it answered (its `Date` header), if it said."""

    orders: list[Any]
    shop_time: datetime | None


def http_date(value: str | None) -> datetime | None:
    """An HTTP date header in UTC, or None when absent or unreadable."""
    try:
        when = parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() alone takes '²', which float() refuses
        return float(value)
    when = http_date(value)
    return None if when is None else max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def modified_time(order: Any) -> datetime | None:
    """An order's `date_modified_gmt` in UTC, or None when the item is not an order with a readable one."""
    value = order.get("date_modified_gmt") if isinstance(order, dict) else None
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def body_excerpt(body: bytes, limit: int = EXCERPT_CHARS) -> str:
    """An error answer's body as one short line a person reads: a shop or its proxy often answers an HTML page,
    whose bytes repr (`b'<!DOCTYPE HTML>\\n<html ...`) said nothing in the room it had."""
    text = body[: limit * 8].decode("utf-8", "replace")
    if text.lstrip().startswith("<"):  # an HTML page: its words; its <title> repeats the heading
        text = html.unescape(_TAG.sub(" ", _HEAD.sub(" ", text)))
    text = " ".join(text.split())
    text = "".join(c if c.isprintable() else "?" for c in text)
    return (text[: limit - 1] + "…" if len(text) > limit else text) or "(no body)"


class OrdersApi:
    """Reads pages of orders modified after a time, oldest modification first, with the connector's credentials."""

    def __init__(self, base_url: str, key: str, secret: str, auth: str, per_page: int) -> None:
        self.base_url = base_url
        self.key, self.secret, self.auth = key, secret, auth
        self.per_page = per_page

    async def page(self, session: aiohttp.ClientSession, after: datetime, page: int) -> Page:
        """The orders of `page` for `modified_after=after`; PollError for any answer that is not such a list."""
        params = {
            "modified_after": after.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            "dates_are_gmt": "true",
            "orderby": "modified",
            "order": "asc",
            "per_page": str(self.per_page),
            "page": str(page),
        }
        headers = {"Accept": "application/json"}
        if self.auth == "basic":
            headers["Authorization"] = "Basic " + base64.b64encode(f"{self.key}:{self.secret}".encode()).decode()
        else:
            params["consumer_key"], params["consumer_secret"] = self.key, self.secret
        async with session.get(self.base_url + ORDERS_PATH, params=params, headers=headers) as response:
            body = await response.read()
            shop_time = http_date(response.headers.get("Date"))
            if response.status != 200:
                meaning = REFUSALS.get(response.status, "")
                raise (KeyRefused if response.status in KEY_REFUSED else PollError)(
                    f"GET {ORDERS_PATH} page {page}: HTTP {response.status}{': ' + meaning if meaning else ''}: "
                    f"{body_excerpt(body)}",
                    retry_after(response.headers.get("Retry-After")),
                    response.status,
                )
        try:
            orders = json.loads(body)
        except JSON_ERRORS as exc:  # RecursionError too: a page nested deeper than the parser's stack
            raise PollError(f"GET {ORDERS_PATH} page {page}: the answer is not JSON: {json_error_text(exc)}") from None
        if not isinstance(orders, list):
            raise PollError(f"GET {ORDERS_PATH} page {page}: expected a list of orders, got {type(orders).__name__}")
        return Page(orders, shop_time)
