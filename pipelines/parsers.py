"""The one place parse steps are registered: connector type -> function(envelope, options) -> draft."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from leadhub.envelope import Envelope
from leadhub.pipelines.model import InquiryDraft
from leadhub.pipelines.parse_email import parse_email
from leadhub.pipelines.parse_form import parse_form
from leadhub.pipelines.parse_jivo import parse_jivo
from leadhub.pipelines.parse_mango import parse_mango
from leadhub.pipelines.parse_order import parse_order
from leadhub.pipelines.parse_shopify import parse_shopify
from leadhub.pipelines.parse_sipuni import parse_sipuni
from leadhub.pipelines.parse_telegram import parse_telegram
from leadhub.pipelines.parse_telephony import parse_telephony
from leadhub.pipelines.parse_tilda import parse_tilda
from leadhub.pipelines.parse_twilio import parse_twilio
from leadhub.pipelines.parse_woocommerce import parse_woocommerce
from leadhub.pipelines.parse_zadarma import parse_zadarma

Parser = Callable[[Envelope, dict[str, Any]], InquiryDraft]

PARSERS: dict[str, Parser] = {
    "form": parse_form,
    "order": parse_order,
    "shopify": parse_shopify,
    "tilda": parse_tilda,
    "woocommerce": parse_woocommerce,
    "woocommerce_poll": parse_woocommerce,
    "twilio": parse_twilio,
    "zadarma": parse_zadarma,
    "mango": parse_mango,
    "sipuni": parse_sipuni,
    "telephony": parse_telephony,
    "telegram": parse_telegram,
    "jivo": parse_jivo,
    "imap": parse_email,
}
