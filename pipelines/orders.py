"""The typed order a shop parser reads from a payload, and the small readers the shop parsers share."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from leadhub.pipelines.errors import PermanentError
from leadhub.shop_payloads import amount_problem
from leadhub.store.orders import ORDER_STATUSES


@dataclass(slots=True)
class OrderDraft:
    """One order as a provider describes it, with the status already mapped to leadhub's set.

    `partial` marks a payload that only reports a status change (a Shopify refund): the store
    then keeps the order's items, totals and customer as they are.
    """

    external_id: str
    status: str | None  # None: a provider status the mapping does not know; the order keeps its status
    provider_status: str | None = None
    number: str | None = None
    total: str | None = None
    currency: str | None = None
    items: list[dict[str, Any]] = field(default_factory=list)
    customer: dict[str, Any] = field(default_factory=dict)
    placed_at: datetime | None = None
    updated_at: datetime | None = None
    partial: bool = False
    # The connector whose order this is when not the envelope's own: a poller beside the shop's webhook (`orders_of`).
    source: str | None = None

    def __post_init__(self) -> None:
        # The store looks orders up by this exact text: make it what the column can hold.
        self.external_id = self.external_id.replace("\x00", "").strip()[:200]
        if self.status is not None and self.status not in ORDER_STATUSES:
            raise PermanentError(f"order status {self.status!r} is not one of {', '.join(ORDER_STATUSES)}")
        if not self.external_id:
            raise PermanentError("order has no id")


def money(value: Any, what: str) -> str | None:
    """A decimal amount as canonical text (`"403.00"`); PermanentError naming `what` when it is not a number."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise PermanentError(f"{what} must be a number, not {type(value).__name__}")
    try:
        amount = Decimal(str(value).strip().replace(",", "."))
    except InvalidOperation:
        raise PermanentError(f"{what} is not a number: {str(value)[:40]!r}") from None
    if amount_problem(amount):
        # Its magnitude, not its digits: the log masks a long digit run as a phone number (hub/logging.py).
        shown = f"{Decimal(f'{amount:.6g}').normalize():g}" if amount.is_finite() else str(value)[:40]
        raise PermanentError(f"{what} is out of range: {shown!r}; an amount must be below 1e15")
    if amount.as_tuple().exponent > -2:  # type: ignore[operator]
        amount = amount.quantize(Decimal("0.01"))
    return str(amount)


def timestamp(value: Any, what: str, *, naive_is_utc: bool = True) -> datetime | None:
    """An ISO-8601 time as an aware UTC datetime; naive times are taken as UTC (WooCommerce `*_gmt`)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PermanentError(f"{what} must be an ISO-8601 string, not {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise PermanentError(f"{what} is not an ISO-8601 time: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        if not naive_is_utc:
            return None
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def text(value: Any, limit: int = 200) -> str | None:
    """A scalar as trimmed text, or None; lists and objects are not text."""
    if value is None or isinstance(value, bool | dict | list):
        return None
    result = str(value).strip()
    return result[:limit] or None


def obj(value: Any, what: str) -> dict[str, Any]:
    """A JSON object or an empty one for null; PermanentError naming `what` for anything else."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PermanentError(f"{what} must be an object, not {type(value).__name__}")
    return value


def array(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PermanentError(f"{what} must be a list, not {type(value).__name__}")
    return value


def full_name(*parts: Any) -> str | None:
    return " ".join(p for p in (text(x) for x in parts) if p) or None


def compact(mapping: dict[str, Any]) -> dict[str, Any]:
    """Without empty values, so stored customers and items stay small and comparable."""
    return {k: v for k, v in mapping.items() if v not in (None, "", [], {})}


def order_summary(order: OrderDraft) -> str:
    """A one-line description for the inquiry and lead message: `Order #1001: 403.00 USD, paid`."""
    label = f"Order #{order.number or order.external_id}"
    amount = " ".join(x for x in (order.total, order.currency) if x)
    status = order.status or order.provider_status or "unknown status"
    return f"{label}: {amount}, {status}" if amount else f"{label}: {status}"
