"""Connector `woocommerce`: order webhooks signed with base64 HMAC-SHA256 of the raw body; the ping gets a 200."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from aiohttp import web
from pydantic import Field, field_validator

from leadhub.connectors.base import ConnectorContext, accepted
from leadhub.connectors.shop_common import (
    ShopWebhookConfig,
    check_status_map,
    checked_json,
    hmac_sha256_b64,
    wordpress_secret,
)
from leadhub.connectors.webhook import (
    ProviderWebhook,
    body_digest,
    key_part,
    raw_body,
    require_method,
    require_signature,
)
from leadhub.formdata import media_type
from leadhub.shop_payloads import WOOCOMMERCE_TOPICS

SIGNATURE_HEADER = "X-WC-Webhook-Signature"
# Sent once when a webhook is saved or activated: `webhook_id=12`, form-encoded and unsigned.
PING = re.compile(rb"^webhook_id=\d{1,20}$")


def _key(delivery: str, topic: str, body: bytes) -> str:
    """The delivery id with the digest of what it carries.

    WooCommerce makes the id as wp_hash(webhook id . time()), whole seconds: every delivery of a webhook within one
    second shares it (several order.updated per checkout, a batch of queued deliveries), and the id alone would answer
    the second order `duplicate` and lose it. A repeat of one delivery is the same bytes (WooCommerce encodes the body
    it signs), so it is still one key.
    """
    digest = "sha256:" + body_digest(topic, body)
    return f"{delivery}:{digest}" if delivery else digest


class WooCommerceConfig(ShopWebhookConfig):
    type: Literal["woocommerce"] = "woocommerce"
    statuses: dict[str, str] = Field(default_factory=dict, description="custom order status -> leadhub status")

    @field_validator("statuses")
    @classmethod
    def _statuses_are_known(cls, value: dict[str, str]) -> dict[str, str]:
        return check_status_map(value)


class WooCommerceConnector(ProviderWebhook):
    """Answers the ping, checks the signature on the raw body and the order's shape, publishes it keyed by delivery."""

    type: ClassVar[str] = "woocommerce"
    channel: ClassVar[str] = "shop"
    Config: ClassVar[type[WooCommerceConfig]] = WooCommerceConfig
    config: WooCommerceConfig

    def __init__(self, config: WooCommerceConfig, context: ConnectorContext) -> None:
        super().__init__(config, context)
        self.secrets = [wordpress_secret(s) for s in self.secrets]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        require_method(request, "POST")
        body = await raw_body(request, int(self.config.max_body))
        if self._is_ping(request, body):  # carries nothing but the webhook's id: answered whether signed or not
            return web.json_response({"ping": "ok"}, status=200)
        signature = request.headers.get(SIGNATURE_HEADER)
        require_signature(signature, lambda secret: hmac_sha256_b64(secret, body), self.secrets, SIGNATURE_HEADER)
        topic = request.headers.get("X-WC-Webhook-Topic", "").strip()[:100]
        checked_json(body, "WooCommerce webhook body", WOOCOMMERCE_TOPICS.get(topic))
        delivery = key_part(request.headers.get("X-WC-Webhook-Delivery-ID", ""), 200)
        meta = {
            "topic": topic,
            "delivery_id": delivery,
            "source": request.headers.get("X-WC-Webhook-Source", ""),
            "webhook_id": request.headers.get("X-WC-Webhook-ID", ""),
        }
        key = _key(delivery, topic, body)
        return accepted(await self.publish(key, body, request.headers.get("Content-Type", "application/json"), meta))

    @staticmethod
    def _is_ping(request: web.Request, body: bytes) -> bool:
        kind = media_type(request.headers.get("Content-Type", ""))
        return kind == "application/x-www-form-urlencoded" and PING.match(body.strip()) is not None
