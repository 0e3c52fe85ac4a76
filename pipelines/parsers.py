"""The one place parse steps are registered: connector type -> function(envelope, options) -> draft."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from leadhub.envelope import Envelope
from leadhub.pipelines.model import InquiryDraft
from leadhub.pipelines.parse_form import parse_form
from leadhub.pipelines.parse_order import parse_order
from leadhub.pipelines.parse_shopify import parse_shopify
from leadhub.pipelines.parse_tilda import parse_tilda
from leadhub.pipelines.parse_woocommerce import parse_woocommerce

Parser = Callable[[Envelope, dict[str, Any]], InquiryDraft]

PARSERS: dict[str, Parser] = {
    "form": parse_form,
    "order": parse_order,
    "shopify": parse_shopify,
    "tilda": parse_tilda,
    "woocommerce": parse_woocommerce,
    "woocommerce_poll": parse_woocommerce,
}
