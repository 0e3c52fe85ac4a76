"""Connector `tilda`: Tilda form and cart webhooks (form-encoded, unsigned: the secret is a token in the URL)."""

from __future__ import annotations

import json
from typing import ClassVar, Literal

from aiohttp import web
from pydantic import Field, field_validator

from leadhub.connectors.base import HookError, accepted
from leadhub.connectors.shop_common import ShopWebhookConfig, checked_json
from leadhub.connectors.webhook import ProviderWebhook, body_digest, key_part, raw_body, require_method, require_token
from leadhub.formdata import (
    NO_VALUE,
    FormData,
    FormDecodeError,
    UnsupportedContentType,
    checked_field_mapping,
    decode_form,
    has_a_value,
)
from leadhub.shop_payloads import TildaPayment

TOKEN_PARAM = "token"  # noqa: S105 - the query parameter's name


class TildaConfig(ShopWebhookConfig):
    type: Literal["tilda"] = "tilda"
    fields: dict[str, str] = Field(
        default_factory=dict, description="their field name -> leadhub field (name, phone, email, message, company)"
    )
    currency: str | None = Field(None, description="the shop's currency; Tilda's cart JSON does not always carry one")

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        return checked_field_mapping(value)


class TildaConnector(ProviderWebhook):
    """Checks the URL token, answers Tilda's `test=test` with 200, publishes a submission keyed by its `tranid`."""

    type: ClassVar[str] = "tilda"
    channel: ClassVar[str] = "shop"
    Config: ClassVar[type[TildaConfig]] = TildaConfig
    config: TildaConfig

    async def handle(self, request: web.Request) -> web.StreamResponse:
        require_method(request, "POST")
        require_token(request.query.get(TOKEN_PARAM), self.secrets, f"the webhook URL as ?{TOKEN_PARAM}=")
        body = await raw_body(request, int(self.config.max_body))
        content_type = request.headers.get("Content-Type", "")
        form = self._form(content_type, body)
        fields = form.fields
        if fields.get("test") == "test" and len(fields) == 1:
            return web.Response(status=200, text="ok")  # sent once when the URL is saved in Tilda
        if not has_a_value(form):
            raise HookError(400, "empty", NO_VALUE)
        is_cart = "payment" in fields
        if is_cart:
            payment = fields["payment"]
            if isinstance(payment, dict):  # a JSON-format webhook nests it instead of encoding it
                payment = json.dumps(payment)
            if not isinstance(payment, str):
                raise HookError(400, "malformed", "payment must be a JSON object or a string holding one")
            checked_json(payment.encode(), "Tilda payment", TildaPayment)
        tranid = key_part(fields.get("tranid") or "", 200) if isinstance(fields.get("tranid"), str | int) else ""
        meta = {"remote_ip": request.remote or "unknown", "formid": str(fields.get("formid") or "")}
        key = tranid or "sha256:" + body_digest(body)
        channel = "shop" if is_cart else "form"
        return accepted(await self.publish(key, body, content_type, meta, channel=channel))

    @staticmethod
    def _form(content_type: str, body: bytes) -> FormData:
        try:
            return decode_form(content_type, body)
        except UnsupportedContentType as exc:
            raise HookError(415, "content_type", str(exc)) from None
        except FormDecodeError as exc:
            raise HookError(400, "malformed", str(exc)) from None
