"""Connector `woocommerce`: order webhooks signed with base64 HMAC-SHA256 of the raw body; the ping gets a 200."""

from __future__ import annotations

import hashlib
import re
from typing import ClassVar, Literal

from aiohttp import web
from pydantic import Field, field_validator

from leadhub.connectors.base import ConnectorContext, Stop, accepted, read_body
from leadhub.connectors.shop_common import (
    SignedConfig,
    check_hmac_b64,
    check_status_map,
    checked_json,
    no_background_work,
    require_post,
    wordpress_secret,
)
from leadhub.envelope import Envelope
from leadhub.formdata import media_type
from leadhub.shop_payloads import WOOCOMMERCE_TOPICS

SIGNATURE_HEADER = "X-WC-Webhook-Signature"
# Sent once when a webhook is saved or activated: `webhook_id=12`, form-encoded and unsigned.
PING = re.compile(rb"^webhook_id=\d{1,20}$")
MAX_ID = 200


class WooCommerceConfig(SignedConfig):
    type: Literal["woocommerce"] = "woocommerce"
    statuses: dict[str, str] = Field(default_factory=dict, description="custom order status -> leadhub status")

    @field_validator("statuses")
    @classmethod
    def _statuses_are_known(cls, value: dict[str, str]) -> dict[str, str]:
        return check_status_map(value)


class WooCommerceConnector:
    """Answers the ping, checks the signature on the raw body and the order's shape, publishes keyed by delivery id."""

    type: ClassVar[str] = "woocommerce"
    channel: ClassVar[str] = "shop"
    Config: ClassVar[type[WooCommerceConfig]] = WooCommerceConfig

    def __init__(self, config: WooCommerceConfig, context: ConnectorContext) -> None:
        self.config = config
        self.publish = context.publish
        self._secrets = [wordpress_secret(s) for s in config.secret_values()]

    async def start(self) -> Stop:
        return await no_background_work()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        require_post(request)
        body = await read_body(request, int(self.config.max_body))
        if self._is_ping(request, body):  # carries nothing but the webhook's id: answered whether signed or not
            return web.json_response({"ping": "ok"}, status=200)
        check_hmac_b64(request.headers.get(SIGNATURE_HEADER), body, self._secrets, SIGNATURE_HEADER)
        topic = request.headers.get("X-WC-Webhook-Topic", "").strip()[:100]
        checked_json(body, "WooCommerce webhook body", WOOCOMMERCE_TOPICS.get(topic))
        delivery = request.headers.get("X-WC-Webhook-Delivery-ID", "").strip()[:MAX_ID]
        key_id = delivery or "sha256:" + hashlib.sha256(topic.encode() + b"\n" + body).hexdigest()[:40]
        meta = {"topic": topic, "delivery_id": delivery}
        for name, header in (("source", "X-WC-Webhook-Source"), ("webhook_id", "X-WC-Webhook-ID")):
            if value := request.headers.get(header):
                meta[name] = value[:200]
        envelope = Envelope(
            key=f"woocommerce:{self.config.name}:{key_id}",
            channel=self.channel,
            connector=self.config.name,
            payload=body,
            content_type=request.headers.get("Content-Type", "application/json")[:200],
            meta=meta,
        )
        return accepted(await self.publish(envelope))

    @staticmethod
    def _is_ping(request: web.Request, body: bytes) -> bool:
        kind = media_type(request.headers.get("Content-Type", ""))
        return kind == "application/x-www-form-urlencoded" and PING.match(body.strip()) is not None
