"""Parse step for `woocommerce` webhooks and `woocommerce_poll` envelopes: a REST v3 order becomes an order draft."""

from __future__ import annotations

import html
from typing import Any

from leadhub.envelope import Envelope
from leadhub.pipelines.errors import PermanentError
from leadhub.pipelines.model import Identity, InquiryDraft
from leadhub.pipelines.orders import OrderDraft, compact, full_name, money, order_summary
from leadhub.shop_payloads import WOOCOMMERCE_TOPICS, PayloadError, WooAddress, WooOrder, json_object, validate

# WooCommerce core statuses -> leadhub's; a connector's `statuses` adds or overrides (plugins add their own).
STATUS_MAP = {
    "pending": "new",
    "on-hold": "new",
    "checkout-draft": "new",
    "processing": "paid",
    "completed": "completed",
    "cancelled": "cancelled",
    "failed": "cancelled",
    "trash": "cancelled",
    "refunded": "refunded",
}


def woocommerce_status(provider_status: str, overrides: dict[str, str] | None = None) -> str | None:
    """leadhub's status for a WooCommerce status, or None for one neither the defaults nor the config know."""
    status = provider_status.strip().lower().removeprefix("wc-")
    return (overrides or {}).get(status) or STATUS_MAP.get(status)


def parse_woocommerce(envelope: Envelope, options: dict[str, Any]) -> InquiryDraft:
    topic = envelope.meta.get("topic", "")  # the poller sets "order.updated"; a webhook without one is dropped
    try:
        data = json_object(envelope.payload, "WooCommerce body")
        if topic not in WOOCOMMERCE_TOPICS:
            draft = InquiryDraft(envelope=envelope, fields={"topic": topic})
            draft.dropped = f"unknown topic: {topic[:100] or '(none)'}"
            return draft
        order = validate(WooOrder, data, "order")
    except PayloadError as exc:
        raise PermanentError(str(exc)) from None
    draft = _draft(envelope, topic, order, options.get("statuses") or {})
    draft.order.source = options.get("orders_of")  # type: ignore[union-attr]  # a poller beside the shop's webhook
    return draft


def _address(address: WooAddress | None) -> dict[str, Any]:
    if address is None:
        return {}
    return compact(
        {
            "name": full_name(address.first_name, address.last_name),
            "company": address.company,
            "line1": address.address_1,
            "line2": address.address_2,
            "city": address.city,
            "region": address.state,
            "postcode": address.postcode,
            "country": address.country,
        }
    )


def _draft(envelope: Envelope, topic: str, data: WooOrder, overrides: dict[str, str]) -> InquiryDraft:
    billing = data.billing or WooAddress()
    name = full_name(billing.first_name, billing.last_name)
    order = OrderDraft(
        external_id=str(data.id),
        status=woocommerce_status(data.status, overrides),
        provider_status=data.status,
        number=str(data.number) if data.number not in (None, "") else str(data.id),
        total=money(data.total, "total"),
        currency=data.currency,
        items=[
            compact(
                {
                    "name": html.unescape(item.name) if item.name else None,
                    "sku": item.sku,
                    "quantity": item.quantity,
                    "price": money(item.price, "price"),
                    "total": money(item.total, "total"),
                    "product_id": str(item.product_id) if item.product_id else None,
                }
            )
            for item in data.line_items
        ],
        customer=compact(
            {
                "name": name,
                "email": billing.email,
                "phone": billing.phone,
                "address": _address(data.shipping) or _address(billing),
            }
        ),
        placed_at=data.date_created_gmt,
        updated_at=data.date_modified_gmt,
    )
    return InquiryDraft(
        envelope=envelope,
        identity=Identity(
            name=name,
            email=billing.email,
            phone_raw=billing.phone,
            company=billing.company or None,
            customer_id=str(data.customer_id) if str(data.customer_id or 0) != "0" else None,
        ),
        title=f"WooCommerce order #{order.number}",
        message="\n".join(x for x in (order_summary(order), data.customer_note) if x),
        fields=compact({"topic": topic, "source": envelope.meta.get("source"), "order_id": order.external_id}),
        order=order,
    )
