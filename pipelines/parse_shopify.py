"""Parse step for `shopify` envelopes: an order topic or a refund becomes an order draft with leadhub's status."""

from __future__ import annotations

from typing import Any

from leadhub.envelope import Envelope
from leadhub.pipelines.errors import PermanentError
from leadhub.pipelines.model import Identity, InquiryDraft
from leadhub.pipelines.orders import OrderDraft, compact, full_name, money, order_summary
from leadhub.shop_payloads import (
    SHOPIFY_TOPICS,
    PayloadError,
    ShopifyAddress,
    ShopifyOrder,
    ShopifyRefund,
    json_object,
    refunded,
    validate,
)

REFUND_TOPIC = "refunds/create"


def shopify_status(order: ShopifyOrder) -> str:
    """leadhub's status from the order's financial and fulfillment status (see docs/providers/shopify.md)."""
    financial = (order.financial_status or "").lower()
    fulfillment = (order.fulfillment_status or "").lower()
    if financial in ("refunded", "partially_refunded"):
        return "refunded"
    if order.cancelled_at or financial == "voided":
        return "cancelled"
    if fulfillment == "fulfilled":
        return "completed" if order.closed_at else "fulfilled"
    if financial == "paid":
        return "paid"
    return "new"  # pending, authorized, partially_paid, unpaid, expired


def parse_shopify(envelope: Envelope, options: dict[str, Any]) -> InquiryDraft:
    topic = envelope.meta.get("topic", "")
    try:
        data = json_object(envelope.payload, "Shopify webhook body")
        if topic not in SHOPIFY_TOPICS:
            draft = InquiryDraft(envelope=envelope, fields={"topic": topic})
            draft.dropped = f"unknown topic: {topic[:100] or '(none)'}"
            return draft
        if topic == REFUND_TOPIC:
            return _refund(envelope, validate(ShopifyRefund, data, "refund"))
        return _order(envelope, topic, validate(ShopifyOrder, data, "order"))
    except PayloadError as exc:
        raise PermanentError(str(exc)) from None


def _address(address: ShopifyAddress | None) -> dict[str, Any]:
    if address is None:
        return {}
    return compact(
        {
            "name": address.name or full_name(address.first_name, address.last_name),
            "company": address.company,
            "line1": address.address1,
            "line2": address.address2,
            "city": address.city,
            "region": address.province,
            "postcode": address.zip,
            "country": address.country_code or address.country,
        }
    )


def _order(envelope: Envelope, topic: str, data: ShopifyOrder) -> InquiryDraft:
    customer = data.customer
    billing, shipping = data.billing_address, data.shipping_address
    name = (customer and full_name(customer.first_name, customer.last_name)) or (billing and billing.name)
    email = data.email or data.contact_email or (customer and customer.email)
    phone = data.phone or (customer and customer.phone) or (billing and billing.phone) or (shipping and shipping.phone)
    order = OrderDraft(
        external_id=str(data.id),
        status=shopify_status(data),
        provider_status="/".join(
            x for x in (data.financial_status, data.fulfillment_status, "cancelled" if data.cancelled_at else None) if x
        )
        or None,
        number=(data.name or "").lstrip("#") or (str(data.order_number) if data.order_number else None),
        total=money(data.total_price, "total_price"),
        currency=data.currency,
        items=[
            compact(
                {
                    "name": item.name or item.title,
                    "sku": item.sku,
                    "quantity": item.quantity,
                    "price": money(item.price, "price"),
                    "product_id": str(item.product_id) if item.product_id else None,
                }
            )
            for item in data.line_items
        ],
        customer=compact(
            {"name": name, "email": email, "phone": phone, "address": _address(shipping) or _address(billing)}
        ),
        placed_at=data.created_at,
        updated_at=data.updated_at,
    )
    return InquiryDraft(
        envelope=envelope,
        identity=Identity(
            name=name,
            email=email,
            phone_raw=phone,
            company=billing.company if billing else None,
            customer_id=str(customer.id) if customer and customer.id else None,
        ),
        title=f"Shopify order #{order.number or order.external_id}",
        message="\n".join(x for x in (order_summary(order), data.note) if x),
        fields=compact({"topic": topic, "shop": envelope.meta.get("shop"), "order_id": order.external_id}),
        order=order,
    )


def _refund(envelope: Envelope, refund: ShopifyRefund) -> InquiryDraft:
    """A refund names only its order: a partial update that moves the order to `refunded`."""
    total = refunded(refund.transactions)
    order = OrderDraft(
        external_id=str(refund.order_id),
        status="refunded",
        provider_status="refund",
        updated_at=refund.created_at or refund.processed_at,
        partial=True,
    )
    draft = InquiryDraft(
        envelope=envelope,
        title=f"Shopify refund for order {order.external_id}",
        message=refund.note,
        fields=compact(
            {
                "topic": REFUND_TOPIC,
                "shop": envelope.meta.get("shop"),
                "order_id": order.external_id,
                "refund_id": str(refund.id),
                "refund_amount": money(total, "refund amount"),
            }
        ),
        order=order,
    )
    draft.opens_lead = False  # a refund is news about an order, never a new sale
    return draft
