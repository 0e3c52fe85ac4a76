"""Connector `tilda`: Tilda form and cart webhooks (form-encoded, unsigned: the secret is a token in the URL)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar, Literal

from aiohttp import web
from pydantic import Field

from leadhub.connectors.base import ConnectorContext, HookError, Stop, accepted, read_body
from leadhub.connectors.shop_common import SignedConfig, check_token, checked_json, no_background_work, require_post
from leadhub.envelope import Envelope
from leadhub.formdata import FormDecodeError, UnsupportedContentType, decode_form
from leadhub.shop_payloads import TildaPayment

TOKEN_PARAM = "token"  # noqa: S105 - the query parameter's name
MAX_ID = 200


class TildaConfig(SignedConfig):
    type: Literal["tilda"] = "tilda"
    fields: dict[str, str] = Field(
        default_factory=dict, description="their field name -> leadhub field (name, phone, email, message, company)"
    )
    currency: str | None = Field(None, description="the shop's currency; Tilda's cart JSON does not always carry one")


class TildaConnector:
    """Checks the URL token, answers Tilda's `test=test` with 200, publishes a submission keyed by its `tranid`."""

    type: ClassVar[str] = "tilda"
    channel: ClassVar[str] = "shop"
    Config: ClassVar[type[TildaConfig]] = TildaConfig

    def __init__(self, config: TildaConfig, context: ConnectorContext) -> None:
        self.config = config
        self.publish = context.publish
        self._tokens = config.secret_values()

    async def start(self) -> Stop:
        return await no_background_work()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        require_post(request)
        check_token(request.query.get(TOKEN_PARAM), self._tokens, f"the webhook URL (?{TOKEN_PARAM}=...)")
        body = await read_body(request, int(self.config.max_body))
        content_type = request.headers.get("Content-Type", "")
        fields = self._fields(content_type, body)
        if fields.get("test") == "test" and len(fields) == 1:
            return web.Response(status=200, text="ok")  # sent once when the URL is saved in Tilda
        is_cart = "payment" in fields
        if is_cart:
            payment = fields["payment"]
            if isinstance(payment, dict):  # a JSON-format webhook nests it instead of encoding it
                payment = json.dumps(payment)
            if not isinstance(payment, str):
                raise HookError(400, "malformed", "payment must be a JSON object or a string holding one")
            checked_json(payment.encode(), "Tilda payment", TildaPayment)
        tranid = str(fields.get("tranid") or "").strip()[:MAX_ID]
        key_id = tranid or "sha256:" + hashlib.sha256(body).hexdigest()[:40]
        meta = {"remote_ip": request.remote or "unknown"}
        if formid := fields.get("formid"):
            meta["formid"] = str(formid)[:200]
        envelope = Envelope(
            key=f"tilda:{self.config.name}:{key_id}",
            channel="shop" if is_cart else "form",
            connector=self.config.name,
            payload=body,
            content_type=content_type[:200],
            meta=meta,
        )
        return accepted(await self.publish(envelope))

    @staticmethod
    def _fields(content_type: str, body: bytes) -> dict[str, Any]:
        try:
            return decode_form(content_type, body).fields
        except UnsupportedContentType as exc:
            raise HookError(415, "content_type", str(exc)) from None
        except FormDecodeError as exc:
            raise HookError(400, "malformed", str(exc)) from None
