"""Connector `order`: any shop's order JSON, read through a configured field mapping; HMAC-signed or token-guarded."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import ClassVar, Literal

from aiohttp import web
from pydantic import Field, field_validator

from leadhub.connectors.base import HookError, accepted
from leadhub.connectors.shop_common import ShopWebhookConfig, check_status_map, checked_json
from leadhub.connectors.webhook import (
    ProviderWebhook,
    body_digest,
    key_part,
    raw_body,
    require_method,
    require_signature,
    require_token,
)
from leadhub.shop_payloads import MAPPED_FIELDS, PayloadError, read_mapped


class OrderConfig(ShopWebhookConfig):
    type: Literal["order"] = "order"
    auth: Literal["hmac", "token"] = "hmac"
    signature_header: str = Field("X-Signature", description="with auth: hmac, the header carrying the signature")
    signature_encoding: Literal["hex", "base64"] = "hex"
    signature_prefix: str = Field("", description='stripped from the header value first, e.g. "sha256="')
    token_header: str = Field("X-Leadhub-Token", description="with auth: token, the header (or ?token=)")
    id_header: str | None = Field(None, description="a header carrying the delivery id, e.g. X-Webhook-Id")
    fields: dict[str, str] = Field(default_factory=dict, description="leadhub field -> dotted path in their JSON")
    statuses: dict[str, str] = Field(default_factory=dict, description="their status -> leadhub status")

    @field_validator("fields")
    @classmethod
    def _fields_are_known(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(MAPPED_FIELDS))
        if unknown:
            raise ValueError(f"unknown order field(s) {', '.join(unknown)}; known: {', '.join(MAPPED_FIELDS)}")
        return value

    @field_validator("statuses")
    @classmethod
    def _statuses_are_known(cls, value: dict[str, str]) -> dict[str, str]:
        return check_status_map(value)


class OrderConnector(ProviderWebhook):
    """Authenticates the raw body, reads the mapped fields (400 naming a wrong one), publishes keyed by delivery."""

    type: ClassVar[str] = "order"
    channel: ClassVar[str] = "shop"
    Config: ClassVar[type[OrderConfig]] = OrderConfig
    config: OrderConfig

    async def handle(self, request: web.Request) -> web.StreamResponse:
        require_method(request, "POST")
        config = self.config
        if config.auth == "token":
            given = request.headers.get(config.token_header) or request.query.get("token")
            require_token(given, self.secrets, f"{config.token_header} or ?token=")
        body = await raw_body(request, int(config.max_body))
        if config.auth == "hmac":
            given = (request.headers.get(config.signature_header) or "").strip().removeprefix(config.signature_prefix)
            require_signature(given, lambda secret: self._sign(secret, body), self.secrets, config.signature_header)
        try:
            order = read_mapped(checked_json(body, "order body"), config.fields)
        except PayloadError as exc:
            raise HookError(400, "malformed", str(exc)) from None
        delivery = request.headers.get(config.id_header, "") if config.id_header else ""
        delivery = key_part(delivery or order.delivery_id or "", 200)
        key = delivery or "sha256:" + body_digest(body)
        meta = {"delivery_id": delivery}
        return accepted(await self.publish(key, body, request.headers.get("Content-Type", "application/json"), meta))

    def _sign(self, secret: bytes, body: bytes) -> str:
        digest = hmac.new(secret, body, hashlib.sha256)
        return (
            digest.hexdigest()
            if self.config.signature_encoding == "hex"
            else base64.b64encode(digest.digest()).decode()
        )
