"""Typed shapes of shop payloads (Shopify, WooCommerce, Tilda cart, generic order), checked the same way at the edge
(a 400 naming the field) and in the pipeline (read into an order)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from leadhub.json_errors import encoding_note, json_error_text, json_kind, loads, read_in

T = TypeVar("T", bound=BaseModel)
_TYPE_TAGS = {"int", "str", "float", "bool", "decimal", "datetime", "none", "dict", "list"}


class PayloadError(ValueError):
    """A payload that is not the shape its provider documents; the message names the field."""


def _utc(value: datetime | None) -> datetime | None:
    """Naive times are UTC (WooCommerce `*_gmt` fields carry no offset)."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


# The largest amount an order may carry, exclusive, in absolute value: the pipeline (`pipelines.orders.money`) stores
# nothing from here on, so the edge refuses it too (a 202 would end in a dead letter no replay could store).
MAX_AMOUNT = Decimal("1e15")


def amount_problem(amount: Decimal) -> str | None:
    """Why the store takes no such amount, or None when it does: one rule for the edge and the pipeline."""
    if not amount.is_finite() or abs(amount) >= MAX_AMOUNT:
        return "must be a finite number less than 10^15 in absolute value"
    return None


def _in_range(amount: Decimal) -> Decimal:
    if problem := amount_problem(amount):
        raise PydanticCustomError("amount_out_of_range", problem)
    return amount


Money = Annotated[Decimal, Field(allow_inf_nan=False, max_digits=24), AfterValidator(_in_range)]
Time = Annotated[datetime | None, AfterValidator(_utc)]


def _number_or_text(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PydanticCustomError("id_type", "must be a number or a string, not {kind}", {"kind": json_kind(value)})
    return value


def _whole_number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PydanticCustomError("id_type", "must be a whole number, not {kind}", {"kind": json_kind(value)})
    return value


# A provider's id for something: a number or text (a list or an object is neither; "Input should be a valid
# integer" misled when text is taken as well).
Id = Annotated[int | str, BeforeValidator(_number_or_text)]
# An id the provider documents as a number (Shopify's and WooCommerce's orders and refunds): text is refused, "1" too.
NumericId = Annotated[int, BeforeValidator(_whole_number)]


class Lax(BaseModel):
    """Providers add fields every version: read the ones we use, ignore the rest."""

    model_config = ConfigDict(extra="ignore", frozen=True, coerce_numbers_to_str=True)


def validate(model: type[T], data: Any, what: str) -> T:
    """`model` from decoded JSON; PayloadError naming the first wrong field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        # Union members appear in the location as type names (`id.int`, `products.0.TildaProduct`); people only need
        # the field path.
        tags = _TYPE_TAGS | {member.__name__ for member in Lax.__subclasses__()}
        parts = [str(p) for p in first["loc"] if isinstance(p, int) or (p not in tags and "[" not in str(p))]
        where = ".".join(parts) or "body"
        raise PayloadError(f"{what}: {where}: {first['msg']}") from None


def json_object(body: bytes, what: str) -> dict[str, Any]:
    """The body as a JSON object; PayloadError saying what is wrong with it."""
    try:
        data = loads(body)
    except UnicodeDecodeError as exc:
        problem = f"{what} is not {read_in(body)} JSON: invalid byte at {exc.start}{encoding_note(body)}"
        raise PayloadError(problem) from None
    except json.JSONDecodeError as exc:
        where = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        raise PayloadError(f"{what} is malformed JSON{encoding_note(body)}: {where}") from None
    except ValueError as exc:
        raise PayloadError(f"{what} is malformed JSON: {json_error_text(exc)}") from None
    if not isinstance(data, dict):
        raise PayloadError(f"{what} must be a JSON object, not {type(data).__name__}")
    return data


# --- Shopify (REST Admin API order and refund resources) ---


class ShopifyAddress(Lax):
    name: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    address1: str | None = None
    address2: str | None = None
    city: str | None = None
    province: str | None = None
    zip: str | None = None
    country: str | None = None
    country_code: str | None = None
    phone: str | None = None


class ShopifyCustomer(Lax):
    id: Id | None = None
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None


class ShopifyLineItem(Lax):
    title: str | None = None
    name: str | None = None
    sku: str | None = None
    quantity: int = 1
    price: Money | None = None
    product_id: Id | None = None
    variant_id: Id | None = None


class ShopifyOrder(Lax):
    id: NumericId
    name: str | None = None
    order_number: Id | None = None
    email: str | None = None
    contact_email: str | None = None
    phone: str | None = None
    created_at: Time = None
    updated_at: Time = None
    cancelled_at: Time = None
    closed_at: Time = None
    total_price: Money | None = None
    currency: str | None = None
    financial_status: str | None = None
    fulfillment_status: str | None = None
    line_items: list[ShopifyLineItem] = Field(default_factory=list)
    customer: ShopifyCustomer | None = None
    billing_address: ShopifyAddress | None = None
    shipping_address: ShopifyAddress | None = None
    note: str | None = None


class ShopifyRefundTransaction(Lax):
    amount: Money | None = None
    currency: str | None = None
    kind: str | None = None


class ShopifyRefund(Lax):
    id: NumericId
    order_id: NumericId
    created_at: Time = None
    processed_at: Time = None
    note: str | None = None
    transactions: list[ShopifyRefundTransaction] = Field(default_factory=list)

    @field_validator("transactions")
    @classmethod
    def _sum_in_range(cls, value: list[ShopifyRefundTransaction]) -> list[ShopifyRefundTransaction]:
        total = refunded(value)
        if total is not None and (problem := amount_problem(total)):
            raise PydanticCustomError("amount_out_of_range", f"the refunded sum {problem}")
        return value


def refunded(transactions: list[ShopifyRefundTransaction]) -> Decimal | None:
    """What a refund's `refund` transactions (a kind left out is one) return in all, as the pipeline stores it; None
    without any."""
    amounts = [t.amount for t in transactions if t.amount is not None and (t.kind or "refund") == "refund"]
    return sum(amounts, Decimal(0)) if amounts else None


# --- WooCommerce (REST API v3 order resource; webhooks send the same object) ---


class WooAddress(Lax):
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    address_1: str | None = None
    address_2: str | None = None
    city: str | None = None
    state: str | None = None
    postcode: str | None = None
    country: str | None = None
    email: str | None = None
    phone: str | None = None


class WooLineItem(Lax):
    name: str | None = None
    sku: str | None = None
    quantity: int = 1
    price: Money | None = None
    total: Money | None = None
    product_id: Id | None = None
    variation_id: Id | None = None


class WooOrder(Lax):
    id: NumericId
    number: Id | None = None
    status: str
    customer_id: Id | None = None  # 0 for a guest checkout
    currency: str | None = None
    total: Money | None = None
    customer_note: str | None = None
    date_created_gmt: Time = None
    date_modified_gmt: Time = None
    date_paid_gmt: Time = None
    date_completed_gmt: Time = None
    billing: WooAddress | None = None
    shipping: WooAddress | None = None
    line_items: list[WooLineItem] = Field(default_factory=list)


# --- Tilda (the `payment` JSON string of a cart form) ---


class TildaProduct(Lax):
    name: str | None = None
    quantity: int = 1
    amount: Money | None = None
    price: Money | None = None
    sku: str | None = None


class TildaPayment(Lax):
    orderid: Id | None = None
    amount: Money | None = None
    currency: str | None = None
    # Older carts send products as text lines ("Product - 1x1500 = 1500").
    products: list[TildaProduct | str] = Field(default_factory=list)
    sys: str | None = None
    systranid: Id | None = None
    promocode: str | None = None


# --- generic `order` connector: the configured field paths, read into one shape ---


class MappedItem(Lax):
    name: str | None = None
    sku: str | None = None
    quantity: int = 1
    price: Money | None = None


class MappedOrder(Lax):
    external_id: Id
    number: Id | None = None
    status: str | None = None
    total: Money | None = None
    currency: str | None = None
    email: str | None = None
    phone: str | None = None
    name: str | None = None
    address: dict[str, Any] | str | None = None
    items: list[MappedItem] = Field(default_factory=list)
    placed_at: Time = None
    updated_at: Time = None
    delivery_id: Id | None = None


MAPPED_FIELDS = tuple(MappedOrder.model_fields)


def pick(data: Any, path: str) -> Any:
    """The value at a dotted path (`customer.email`, `items.0.name`), or None where it is absent."""
    value = data
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        # isascii: str.isdigit() also takes '²', which int() refuses
        elif isinstance(value, list) and part.isascii() and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def read_mapped(data: dict[str, Any], fields: dict[str, str]) -> MappedOrder:
    """A generic order: each leadhub field read from the configured path (default: the same name)."""
    picked = {name: pick(data, fields.get(name, name)) for name in MAPPED_FIELDS}
    return validate(MappedOrder, {k: v for k, v in picked.items() if v is not None}, "order")


SHOPIFY_TOPICS: dict[str, type[Lax]] = {
    "orders/create": ShopifyOrder,
    "orders/updated": ShopifyOrder,
    "orders/paid": ShopifyOrder,
    "orders/fulfilled": ShopifyOrder,
    "orders/cancelled": ShopifyOrder,
    "refunds/create": ShopifyRefund,
}
WOOCOMMERCE_TOPICS: dict[str, type[Lax]] = {"order.created": WooOrder, "order.updated": WooOrder}
