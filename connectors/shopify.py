"""Connector `shopify`: order and refund webhooks, signed with base64 HMAC-SHA256 of the raw body."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

from aiohttp import web
from pydantic import Field, field_validator

from leadhub.connectors.base import ConnectorContext, HookError, Stop, accepted, read_body
from leadhub.connectors.shop_common import (
    SignedConfig,
    check_hmac_b64,
    checked_json,
    header,
    no_background_work,
    require_post,
)
from leadhub.durations import parse_duration
from leadhub.envelope import Envelope
from leadhub.shop_payloads import SHOPIFY_TOPICS

# Shopify sends the X-Shopify-* names; newer API versions also send them without the prefix.
HMAC_HEADERS = ("X-Shopify-Hmac-Sha256", "Shopify-Hmac-Sha256")
TOPIC_HEADERS = ("X-Shopify-Topic", "Shopify-Topic")
WEBHOOK_ID_HEADERS = ("X-Shopify-Webhook-Id", "Shopify-Webhook-Id")
SHOP_HEADERS = ("X-Shopify-Shop-Domain", "Shopify-Shop-Domain")
API_VERSION_HEADERS = ("X-Shopify-API-Version", "Shopify-API-Version")
TRIGGERED_AT_HEADERS = ("X-Shopify-Triggered-At", "Shopify-Triggered-At")
MAX_ID = 200


class ShopifyConfig(SignedConfig):
    type: Literal["shopify"] = "shopify"
    replay_window: timedelta | None = Field(
        None, description="refuse deliveries whose X-Shopify-Triggered-At is older; Shopify retries for up to 48h"
    )

    @field_validator("replay_window", mode="before")
    @classmethod
    def _window(cls, value: Any) -> timedelta | None:
        if value is None:
            return None
        window = parse_duration(value)
        if window.total_seconds() <= 0:
            raise ValueError("replay_window must be positive")
        return window


class ShopifyConnector:
    """Checks the signature on the raw body, checks the payload's shape, publishes it keyed by the webhook id."""

    type: ClassVar[str] = "shopify"
    channel: ClassVar[str] = "shop"
    Config: ClassVar[type[ShopifyConfig]] = ShopifyConfig

    def __init__(self, config: ShopifyConfig, context: ConnectorContext) -> None:
        self.config = config
        self.publish = context.publish
        self._secrets = config.secret_values()

    async def start(self) -> Stop:
        return await no_background_work()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        require_post(request)
        body = await read_body(request, int(self.config.max_body))
        check_hmac_b64(header(request, *HMAC_HEADERS), body, self._secrets, HMAC_HEADERS[0])
        self._check_replay_window(header(request, *TRIGGERED_AT_HEADERS))
        topic = (header(request, *TOPIC_HEADERS) or "").strip()[:100]
        checked_json(body, "Shopify webhook body", SHOPIFY_TOPICS.get(topic))  # unknown topics: stored as dropped
        webhook_id = (header(request, *WEBHOOK_ID_HEADERS) or "").strip()[:MAX_ID]
        # Without the id (never seen from Shopify) the body's hash still makes a resend a duplicate.
        key_id = webhook_id or "sha256:" + hashlib.sha256(topic.encode() + b"\n" + body).hexdigest()[:40]
        meta = {"topic": topic, "webhook_id": webhook_id}
        for name, headers in (("shop", SHOP_HEADERS), ("api_version", API_VERSION_HEADERS)):
            if value := header(request, *headers):
                meta[name] = value[:200]
        envelope = Envelope(
            key=f"shopify:{self.config.name}:{key_id}",
            channel=self.channel,
            connector=self.config.name,
            payload=body,
            content_type=request.headers.get("Content-Type", "application/json")[:200],
            meta=meta,
        )
        return accepted(await self.publish(envelope))

    def _check_replay_window(self, triggered_at: str | None) -> None:
        """With a `replay_window`, a signed delivery triggered longer ago than that is refused (a replayed capture)."""
        window = self.config.replay_window
        if window is None or not triggered_at:
            return
        try:
            when = datetime.fromisoformat(triggered_at.strip().replace("Z", "+00:00"))
        except ValueError:
            raise HookError(
                400, "malformed", f"X-Shopify-Triggered-At is not an ISO time: {triggered_at[:40]!r}"
            ) from None
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        if datetime.now(UTC) - when > window:
            raise HookError(401, "replayed", f"delivery triggered at {when.isoformat()} is outside the replay window")
