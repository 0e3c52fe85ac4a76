"""Connector `order`: any shop's order JSON, read through a configured field mapping; HMAC-signed or token-guarded."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import ClassVar, Literal

from aiohttp import web
from pydantic import Field, field_validator

from leadhub.connectors.base import ConnectorContext, HookError, Stop, accepted, read_body
from leadhub.connectors.shop_common import (
    SignedConfig,
    check_status_map,
    check_token,
    checked_json,
    no_background_work,
    require_post,
)
from leadhub.envelope import Envelope
from leadhub.shop_payloads import MAPPED_FIELDS, PayloadError, read_mapped

MAX_ID = 200


class OrderConfig(SignedConfig):
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


class OrderConnector:
    """Authenticates the raw body, reads the mapped fields (400 naming a wrong one), publishes keyed by delivery."""

    type: ClassVar[str] = "order"
    channel: ClassVar[str] = "shop"
    Config: ClassVar[type[OrderConfig]] = OrderConfig

    def __init__(self, config: OrderConfig, context: ConnectorContext) -> None:
        self.config = config
        self.publish = context.publish
        self._secrets = config.secret_values()

    async def start(self) -> Stop:
        return await no_background_work()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        require_post(request)
        if self.config.auth == "token":
            given = request.headers.get(self.config.token_header) or request.query.get("token")
            check_token(given, self._secrets, f"{self.config.token_header} or ?token=")
        body = await read_body(request, int(self.config.max_body))
        if self.config.auth == "hmac":
            self._check_signature(request.headers.get(self.config.signature_header), body)
        data = checked_json(body, "order body")
        try:
            order = read_mapped(data, self.config.fields)
        except PayloadError as exc:
            raise HookError(400, "malformed", str(exc)) from None
        delivery = (request.headers.get(self.config.id_header, "") if self.config.id_header else "").strip()
        delivery = delivery or str(order.delivery_id or "")
        key_id = delivery[:MAX_ID] or "sha256:" + hashlib.sha256(body).hexdigest()[:40]
        envelope = Envelope(
            key=f"order:{self.config.name}:{key_id}",
            channel=self.channel,
            connector=self.config.name,
            payload=body,
            content_type=request.headers.get("Content-Type", "application/json")[:200],
            meta={"delivery_id": delivery[:MAX_ID]},
        )
        return accepted(await self.publish(envelope))

    def _check_signature(self, given: str | None, body: bytes) -> None:
        name = self.config.signature_header
        if not given:
            raise HookError(401, "bad_signature", f"missing {name} header: the request is not signed")
        candidate = given.strip().removeprefix(self.config.signature_prefix).encode()
        matched = False
        for secret in self._secrets:
            digest = hmac.new(secret, body, hashlib.sha256)
            expected = (
                digest.hexdigest()
                if self.config.signature_encoding == "hex"
                else base64.b64encode(digest.digest()).decode()
            )
            matched |= hmac.compare_digest(candidate, expected.encode())
        if not matched:
            raise HookError(401, "bad_signature", f"{name} does not match the body signed with the connector secret")
