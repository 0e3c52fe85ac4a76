"""Parse step for the generic `order` connector: the mapped fields become an order draft."""

from __future__ import annotations

from typing import Any

from leadhub.envelope import Envelope
from leadhub.pipelines.errors import PermanentError
from leadhub.pipelines.model import Identity, InquiryDraft
from leadhub.pipelines.orders import OrderDraft, compact, money, order_summary
from leadhub.shop_payloads import PayloadError, json_object, read_mapped
from leadhub.store.orders import ORDER_STATUSES


def mapped_status(provider_status: str | None, statuses: dict[str, str]) -> str | None:
    """The configured mapping first, then leadhub's own names; None (keep the order's status) otherwise."""
    if not provider_status:
        return None
    status = provider_status.strip().lower()
    return statuses.get(status) or (status if status in ORDER_STATUSES else None)


def parse_order(envelope: Envelope, options: dict[str, Any]) -> InquiryDraft:
    try:
        data = read_mapped(json_object(envelope.payload, "order body"), options.get("fields") or {})
    except PayloadError as exc:
        raise PermanentError(str(exc)) from None
    address = data.address if isinstance(data.address, dict) else ({"line1": data.address} if data.address else {})
    order = OrderDraft(
        external_id=str(data.external_id)[:200],
        status=mapped_status(data.status, options.get("statuses") or {}),
        provider_status=data.status,
        number=str(data.number) if data.number is not None else None,
        total=money(data.total, "total"),
        currency=data.currency,
        items=[
            compact({"name": i.name, "sku": i.sku, "quantity": i.quantity, "price": money(i.price, "price")})
            for i in data.items
        ],
        customer=compact({"name": data.name, "email": data.email, "phone": data.phone, "address": address}),
        placed_at=data.placed_at,
        updated_at=data.updated_at,
    )
    return InquiryDraft(
        envelope=envelope,
        identity=Identity(name=data.name, email=data.email, phone_raw=data.phone),
        title=f"Order #{order.number or order.external_id}",
        message=order_summary(order),
        fields=compact({"order_id": order.external_id, "delivery_id": envelope.meta.get("delivery_id")}),
        order=order,
    )
