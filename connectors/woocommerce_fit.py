"""An order too big for the queue, cut down to what the pipeline reads, so that it is stored instead of failing every
poll at the same place (and holding back every order after it) for ever.

Plugins pile `meta_data` onto orders and their line items; an order of a few hundred items with such meta can pass
nats-server's default `max_payload` of 1 MB. That goes first; then everything the pipeline does not read; then the
line items. The envelope says `too_large: <bytes of the full order>` so that the cut is visible.
"""

from __future__ import annotations

import json
from typing import Any

HEADER_ROOM = 64 * 1024  # the queue's max_payload covers the envelope's headers (key, meta) too
ORDER_KEYS = (
    "id", "number", "status", "currency", "total", "customer_id", "customer_note",
    "date_created_gmt", "date_modified_gmt", "billing", "shipping", "line_items",
)  # fmt: skip
ITEM_KEYS = ("name", "sku", "quantity", "price", "total", "product_id")


def encoded(item: Any) -> bytes:
    return json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode()


def fitted(item: Any, queue_limit: int | None) -> tuple[bytes, int | None]:
    """The item's JSON, or a smaller order under the queue's limit; the second value is the full size if cut."""
    payload = encoded(item)
    if not queue_limit or len(payload) <= queue_limit - HEADER_ROOM:
        return payload, None
    limit = max(queue_limit - HEADER_ROOM, 1024)
    if not isinstance(item, dict):  # not an order at all: the pipeline dead-letters what is left
        return encoded({"unreadable_item_bytes": len(payload)}), len(payload)
    for cut in (_without_meta, _only_what_is_read, _without_line_items, _bare):
        item = cut(item)
        smaller = encoded(item)
        if len(smaller) <= limit:
            return smaller, len(payload)
    return smaller, len(payload)


def shallow(item: Any) -> Any:
    """An item json.loads read but json.dumps cannot write (nested nearly as deep as the parser's stack allows, and
    written from deeper down), cut as an oversized order is; one still too deep, or no order, is a note the pipeline
    dead-letters. Failing instead would fail every poll at this order, holding back every order after it."""
    if isinstance(item, dict):
        for cut in (_without_meta, _only_what_is_read, _bare):
            item = cut(item)
            try:
                encoded(item)
            except RecursionError:
                continue
            return item
    return {"unreadable_item": "nested too deeply to write as JSON"}


def _without_meta(order: dict[str, Any]) -> dict[str, Any]:
    items = [
        {k: v for k, v in i.items() if k != "meta_data"} if isinstance(i, dict) else i
        for i in order.get("line_items") or []
    ]
    return {k: v for k, v in order.items() if k not in ("meta_data", "_links")} | {"line_items": items}


def _only_what_is_read(order: dict[str, Any]) -> dict[str, Any]:
    items = [{k: i[k] for k in ITEM_KEYS if k in i} for i in order.get("line_items") or [] if isinstance(i, dict)]
    return {k: order[k] for k in ORDER_KEYS if k in order} | {"line_items": items}


def _without_line_items(order: dict[str, Any]) -> dict[str, Any]:
    return order | {"line_items": []}


def _bare(order: dict[str, Any]) -> dict[str, Any]:
    return {k: order[k] for k in ("id", "number", "status", "date_modified_gmt") if k in order}
