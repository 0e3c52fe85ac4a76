"""Connector `telephony`: any PBX that can post call events (UIS, MegaFon, ...), read through a field mapping."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime
from typing import Any, ClassVar, Literal, Self
from urllib.parse import urlencode

from aiohttp import web
from pydantic import Field, field_validator, model_validator

from leadhub.connectors.base import HookError, accepted
from leadhub.connectors.webhook import (
    ProviderWebhook,
    WebhookConfig,
    body_digest,
    form_fields,
    json_object,
    key_part,
    matches_any,
    query_fields,
    raw_body,
    require_method,
    require_token,
)
from leadhub.formdata import media_type

OUTCOMES = ("start", "missed", "callback", "answered", "outbound", "progress")
FIELDS = ("phone", "call_id", "event", "status", "time", "name", "email")
TOKEN_HEADER = "X-Leadhub-Token"  # noqa: S105 - a header name, not a secret


class TelephonyConfig(WebhookConfig):
    """A field mapping, what each event/status value means, and either an HMAC header or a URL token."""

    type: Literal["telephony"] = "telephony"
    auth: Literal["hmac", "token"] = "hmac"
    signature_header: str = Field("X-Signature", description="hmac: the header with HMAC-SHA256 of the raw body")
    fields: dict[str, str] = Field(
        default_factory=dict, description="leadhub field (phone, call_id, event, status, time, name) -> their field"
    )
    events: dict[str, str] = Field(
        default_factory=dict, description="their event or status value -> start|missed|callback|answered|..."
    )

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        if wrong := sorted(set(value) - set(FIELDS)):
            raise ValueError(f"unknown leadhub field(s) {', '.join(wrong)}; map any of {', '.join(FIELDS)}")
        return value

    @field_validator("events")
    @classmethod
    def _known_outcomes(cls, value: dict[str, str]) -> dict[str, str]:
        if wrong := {k: v for k, v in value.items() if v not in OUTCOMES}:
            raise ValueError(f"unknown outcome(s) in {wrong}; use one of {', '.join(OUTCOMES)}")
        return value

    @model_validator(mode="after")
    def _needs_phone(self) -> Self:
        if "phone" not in self.fields:
            raise ValueError("fields.phone is required: the field that holds the caller's number")
        return self


def lookup(data: dict[str, Any], path: str | None) -> Any:
    """`a.b` reads data["a"]["b"]; None when any step is missing or not an object."""
    if not path:
        return None
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def signature_forms(secret: bytes, body: bytes) -> tuple[str, ...]:
    """HMAC-SHA256 of the body as PBXs send it: hex, `sha256=` hex, or base64."""
    digest = hmac.new(secret, body, hashlib.sha256)
    hexed = digest.hexdigest()
    return hexed, f"sha256={hexed}", base64.b64encode(digest.digest()).decode()


def decode_payload(content_type: str, body: bytes) -> dict[str, Any]:
    """A JSON object or a urlencoded form; 400 naming the problem."""
    kind = media_type(content_type)
    if kind == "application/x-www-form-urlencoded":
        return form_fields(body, "PBX event body", content_type)
    return json_object(body, "a call event")


def sent_at(value: Any) -> float | None:
    """A unix time or an ISO-8601 time with a zone; None when it is neither (the window is then not applied)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value  # check_replay reads a whole number too large for a float as infinite
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            digits = value.strip()
            # isascii: str.isdigit() also takes '²', which float() refuses, and '٣', which float() reads as 3
            return float(digits) if digits.isascii() and digits.isdigit() else None
        return moment.timestamp() if moment.tzinfo else None
    return None


class TelephonyConnector(ProviderWebhook):
    """Authenticates (HMAC over the raw body, or a token), decodes, keys by call id and event, publishes."""

    type: ClassVar[str] = "telephony"
    channel: ClassVar[str] = "phone"
    Config: ClassVar[type[TelephonyConfig]] = TelephonyConfig
    config: TelephonyConfig

    async def handle(self, request: web.Request) -> web.StreamResponse:
        config = self.config
        require_method(request, *(("POST", "GET") if config.auth == "token" else ("POST",)))
        if config.auth == "token":
            given = request.headers.get(TOKEN_HEADER) or request.query.get("token")
            require_token(given, self.secrets, f"the URL as ?token= or the {TOKEN_HEADER} header")
        body = await raw_body(request, int(config.max_body))
        if config.auth == "hmac":
            given = request.headers.get(config.signature_header)
            if not given:
                raise HookError(401, "bad_signature", f"missing {config.signature_header}: the request is not signed")
            if not any(
                matches_any(given.strip(), lambda s, i=i: signature_forms(s, body)[i], self.secrets) for i in range(3)
            ):
                raise HookError(
                    401, "bad_signature", f"{config.signature_header} does not match HMAC-SHA256 of the body"
                )
        content_type = request.headers.get("Content-Type", "application/json")
        if request.method == "GET":
            params = query_fields(request, "the URL's query")
            body, content_type = urlencode(params).encode(), "application/x-www-form-urlencoded"
        data = decode_payload(content_type, body)
        if config.auth == "hmac":
            self.check_replay(sent_at(lookup(data, config.fields.get("time"))))
        call_id = lookup(data, config.fields.get("call_id"))
        # Event and status both name the delivery: MegaFon sends type=INCOMING and later type=INCOMING&status=missed.
        parts = [lookup(data, config.fields.get(name)) for name in ("event", "status")]
        event = ":".join(key_part(p, 60) for p in parts if isinstance(p, int | str) and str(p).strip()) or "event"
        if isinstance(call_id, int | str) and str(call_id).strip():
            key = f"{key_part(call_id)}:{event}"
        else:
            key = f"sha256:{body_digest(body)}"
        return accepted(await self.publish(key, body, content_type))
