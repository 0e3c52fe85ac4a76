"""Connector `shopify`: order and refund webhooks, signed with base64 HMAC-SHA256 of the raw body."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import ClassVar, Literal

from aiohttp import web
from pydantic import Field

from leadhub.connectors.base import BodyLimit, HookError, accepted
from leadhub.connectors.shop_common import SHOP_MAX_BODY, checked_json, header, hmac_sha256_b64
from leadhub.connectors.webhook import (
    ProviderWebhook,
    WebhookConfig,
    body_digest,
    key_part,
    raw_body,
    require_method,
    require_signature,
)
from leadhub.shop_payloads import SHOPIFY_TOPICS

# Shopify sends the X-Shopify-* names; newer API versions also send them without the prefix.
HMAC_HEADERS = ("X-Shopify-Hmac-Sha256", "Shopify-Hmac-Sha256")
TOPIC_HEADERS = ("X-Shopify-Topic", "Shopify-Topic")
WEBHOOK_ID_HEADERS = ("X-Shopify-Webhook-Id", "Shopify-Webhook-Id")
# shopify.dev "Ignore duplicate webhooks": the same event id on several deliveries marks a duplicate; a duplicate
# delivery of an event may come with a webhook id of its own.
EVENT_ID_HEADERS = ("X-Shopify-Event-Id", "Shopify-Event-Id")
SHOP_HEADERS = ("X-Shopify-Shop-Domain", "Shopify-Shop-Domain")
API_VERSION_HEADERS = ("X-Shopify-API-Version", "Shopify-API-Version")
TRIGGERED_AT_HEADERS = ("X-Shopify-Triggered-At", "Shopify-Triggered-At")


class ShopifyConfig(WebhookConfig):
    type: Literal["shopify"] = "shopify"
    max_body: BodyLimit = SHOP_MAX_BODY
    # Off by default: Shopify retries a failed delivery for up to 48 hours with its original trigger time.
    replay_window: timedelta | None = Field(None, description="refuse deliveries whose X-Shopify-Triggered-At is older")


class ShopifyConnector(ProviderWebhook):
    """Checks the signature on the raw body, then the payload's shape; publishes keyed by the event (or webhook) id."""

    type: ClassVar[str] = "shopify"
    channel: ClassVar[str] = "shop"
    Config: ClassVar[type[ShopifyConfig]] = ShopifyConfig
    config: ShopifyConfig

    async def handle(self, request: web.Request) -> web.StreamResponse:
        require_method(request, "POST")
        body = await raw_body(request, int(self.config.max_body))
        signature = header(request, *HMAC_HEADERS)
        require_signature(signature, lambda secret: hmac_sha256_b64(secret, body), self.secrets, HMAC_HEADERS[0])
        self.check_replay(self._triggered_at(request))
        topic = (header(request, *TOPIC_HEADERS) or "").strip()[:100]
        checked_json(body, "Shopify webhook body", SHOPIFY_TOPICS.get(topic))  # unknown topics: stored as dropped
        webhook_id = key_part(header(request, *WEBHOOK_ID_HEADERS) or "", 200)
        event_id = key_part(header(request, *EVENT_ID_HEADERS) or "", 200)
        meta = {
            "topic": topic,
            "webhook_id": webhook_id,
            "event_id": event_id,
            "shop": header(request, *SHOP_HEADERS) or "",
            "api_version": header(request, *API_VERSION_HEADERS) or "",
        }
        key = self._key(topic, event_id, webhook_id, body)
        return accepted(await self.publish(key, body, request.headers.get("Content-Type", "application/json"), meta))

    @staticmethod
    def _key(topic: str, event_id: str, webhook_id: str, body: bytes) -> str:
        """The event id with its topic (one event, one delivery per topic), else the webhook id of API versions
        without event ids; without either (never seen from Shopify) the body's hash still makes a resend a duplicate.
        """
        if event_id:
            return f"event:{key_part(topic, 100)}:{event_id}"
        return webhook_id or "sha256:" + body_digest(topic, body)

    @staticmethod
    def _triggered_at(request: web.Request) -> datetime | None:
        value = header(request, *TRIGGERED_AT_HEADERS)
        if not value:
            return None
        try:
            when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise HookError(400, "malformed", f"X-Shopify-Triggered-At is not an ISO time: {value[:40]!r}") from None
        return when if when.tzinfo else when.replace(tzinfo=UTC)
