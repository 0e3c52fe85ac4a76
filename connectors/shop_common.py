"""What the shop connectors add to the shared webhook mechanics: their config base, HMAC-SHA256 (base64), 400s."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Any

from aiohttp import web
from pydantic import ByteSize, Field

from leadhub.connectors.base import BodyLimit, HookError
from leadhub.connectors.webhook import WebhookConfig
from leadhub.shop_payloads import PayloadError, json_object, validate
from leadhub.store.orders import ORDER_STATUSES

SHOP_MAX_BODY = ByteSize(2 * 1024 * 1024)  # a large order (hundreds of line items) stays well under this


class ShopWebhookConfig(WebhookConfig):
    """`secret` / `secrets: [new, old]` and a body limit; these providers sign no timestamp to hold a window against."""

    max_body: BodyLimit = SHOP_MAX_BODY
    replay_window: None = Field(None, description="not used: this provider sends no signed timestamp")


def header(request: web.Request, *names: str) -> str | None:
    """The first of `names` present (providers renamed headers; both spellings arrive)."""
    for name in names:
        if value := request.headers.get(name):
            return value
    return None


def hmac_sha256_b64(secret: bytes, body: bytes) -> str:
    """Shopify's and WooCommerce's scheme: base64 of the raw HMAC-SHA256 digest of the body."""
    return base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode()


# wp_specialchars_decode($s, ENT_QUOTES) decodes exactly these (with strtr: one pass, longest match first).
_WP_ENTITIES = {
    "&#039;": "'", "&#x27;": "'", "&quot;": '"', "&#034;": '"', "&#x22;": '"',
    "&lt;": "<", "&#060;": "<", "&gt;": ">", "&#062;": ">", "&amp;": "&", "&#038;": "&", "&#x26;": "&",
}  # fmt: skip
_WP_ENTITY = re.compile("|".join(re.escape(e) for e in sorted(_WP_ENTITIES, key=len, reverse=True)))


def wordpress_secret(secret: bytes) -> bytes:
    """WooCommerce signs with `wp_specialchars_decode($secret, ENT_QUOTES)`: `&amp;` in a secret means `&`."""
    return _WP_ENTITY.sub(lambda m: _WP_ENTITIES[m.group(0)], secret.decode()).encode()


def checked_json(body: bytes, what: str, model: Any = None) -> dict[str, Any]:
    """The body as a JSON object, optionally checked against a payload model; 400 naming the problem."""
    try:
        data = json_object(body, what)
        if model is not None:
            validate(model, data, what)
    except PayloadError as exc:
        raise HookError(400, "malformed", str(exc)) from None
    return data


def check_status_map(value: dict[str, str]) -> dict[str, str]:
    """`statuses: {their-status: leadhub-status}`; every target must be one of leadhub's statuses."""
    wrong = {k: v for k, v in value.items() if v not in ORDER_STATUSES}
    if wrong:
        raise ValueError(f"unknown leadhub status in {wrong}; use one of {', '.join(ORDER_STATUSES)}")
    return {k.strip().lower().removeprefix("wc-"): v for k, v in value.items()}
