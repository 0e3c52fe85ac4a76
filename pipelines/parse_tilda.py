"""Parse step for `tilda` envelopes: a form submission as a form inquiry, a cart submission with its order."""

from __future__ import annotations

import json
from typing import Any

from leadhub.envelope import Envelope
from leadhub.pipelines.errors import PermanentError
from leadhub.pipelines.model import InquiryDraft
from leadhub.pipelines.orders import OrderDraft, compact, money, order_summary
from leadhub.pipelines.parse_form import parse_form
from leadhub.shop_payloads import PayloadError, TildaPayment, TildaProduct, json_object, validate


def parse_tilda(envelope: Envelope, options: dict[str, Any]) -> InquiryDraft:
    """Fields as a web form (Name, Email, Phone, custom names via `fields`); the `payment` JSON becomes the order."""
    draft = parse_form(envelope, options)
    raw_payment = draft.fields.pop("payment", None)
    if raw_payment is None:
        return draft
    if isinstance(raw_payment, dict):  # a JSON-format webhook nests it instead of encoding it
        raw_payment = json.dumps(raw_payment)
    if not isinstance(raw_payment, str):
        raise PermanentError("payment must be a JSON object or a string holding one")
    try:
        payment = validate(TildaPayment, json_object(raw_payment.encode(), "Tilda payment"), "payment")
    except PayloadError as exc:
        raise PermanentError(str(exc)) from None
    tranid = draft.fields.get("tranid")
    external_id = str(payment.orderid or tranid or envelope.key.rsplit(":", 1)[-1])
    identity = draft.identity
    paid = _paid_online(payment)
    order = OrderDraft(
        external_id=external_id,
        status="paid" if paid else "new",
        provider_status=f"paid via {payment.sys}" if paid and payment.sys else None,
        number=str(payment.orderid) if payment.orderid else None,
        total=money(payment.amount, "payment.amount"),
        currency=payment.currency or options.get("currency"),
        items=[_item(product) for product in payment.products],
        customer=compact({"name": identity.name, "email": identity.email, "phone": identity.phone_raw}),
        placed_at=envelope.received_at,
    )
    draft.order = order
    draft.title = f"Tilda order #{order.number or order.external_id}"
    draft.message = "\n".join(x for x in (order_summary(order), draft.message) if x)
    draft.fields["payment"] = json.loads(raw_payment)  # kept readable, not as an escaped string
    return draft


def _paid_online(payment: TildaPayment) -> bool:
    """A payment system's transaction id means the cart was paid online; otherwise it awaits payment.

    A cart without one (cash, on delivery) still carries the fields: `"sys": "none", "systranid": "0"`.
    """
    transaction = str(payment.systranid if payment.systranid is not None else "").strip()
    system = (payment.sys or "").strip().lower()
    return transaction not in ("", "0") and system != "none"


def _item(product: TildaProduct | str) -> dict[str, Any]:
    if isinstance(product, str):
        return {"name": product[:300]}
    price = product.price if product.price is not None else product.amount
    return compact(
        {
            "name": product.name,
            "sku": product.sku,
            "quantity": product.quantity,
            "price": money(price, "price"),
            "total": money(product.amount, "amount"),
        }
    )
