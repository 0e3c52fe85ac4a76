"""Connector `mango`: Mango Office VPBX events (events/call, events/summary), `sign` = sha256(key + json + salt)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, ClassVar, Literal
from urllib.parse import unquote_to_bytes

from aiohttp import web
from pydantic import SecretStr

from leadhub.connectors.base import HookError, accepted
from leadhub.connectors.webhook import (
    ProviderWebhook,
    WebhookConfig,
    body_digest,
    form_fields,
    key_part,
    raw_body,
    require_method,
    require_signature,
)
from leadhub.json_errors import json_error_text, loads

KINDS = {"events/call": "call", "events/summary": "summary"}
API_KEY_FIELD = b"vpbx_api_key"


class MangoConfig(WebhookConfig):
    """`api_key` is the VPBX API key (Unique code of your PBX); `secret` is its salt (Key for creating a signature)."""

    type: Literal["mango"] = "mango"
    api_key: SecretStr


def mango_sign(api_key: bytes, payload_json: str, salt: bytes) -> str:
    return hashlib.sha256(api_key + payload_json.encode() + salt).hexdigest()


def event_kind(tail: str, event: dict[str, Any]) -> str:
    """`call` or `summary` from the path Mango appended; from the fields when the URL has no path."""
    if tail:
        return KINDS.get(tail.strip("/"), tail.strip("/")[:60] or "unknown")
    if "call_state" in event:
        return "call"
    return "summary" if "entry_result" in event else "unknown"


class MangoConnector(ProviderWebhook):
    """Checks the API key and the sign on the form fields as received, then publishes one key per event."""

    type: ClassVar[str] = "mango"
    channel: ClassVar[str] = "phone"
    Config: ClassVar[type[MangoConfig]] = MangoConfig

    def __init__(self, config: MangoConfig, context: Any) -> None:
        super().__init__(config, context)
        self.api_key = config.api_key.get_secret_value().encode()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        require_method(request, "POST")
        body = await raw_body(request, int(self.config.max_body))
        form = form_fields(body, "Mango event body", request.headers.get("Content-Type", ""))
        given_key, payload_json = form.get("vpbx_api_key", ""), form.get("json")
        if not hmac.compare_digest(given_key.encode(), self.api_key):
            raise HookError(401, "bad_signature", "vpbx_api_key is missing or is not this connector's api_key")
        if payload_json is None:
            raise HookError(400, "malformed", "a Mango event must carry the form field `json`")
        require_signature(
            form.get("sign"), lambda salt: mango_sign(self.api_key, payload_json, salt), self.secrets, "form field sign"
        )
        event = _json_object(payload_json)
        kind = event_kind(request.match_info.get("tail", ""), event)
        self.check_replay(_number(event.get("timestamp") if kind == "call" else event.get("end_time")))
        key = f"{key_part(kind, 60)}:{_key(kind, event, payload_json)}"
        content_type = request.headers.get("Content-Type", "application/x-www-form-urlencoded")
        return accepted(await self.publish(key, without_api_key(body), content_type, {"kind": kind}))


def without_api_key(body: bytes) -> bytes:
    """The urlencoded body less its `vpbx_api_key` field, the rest byte for byte: the key is the PBX's credential,
    and what is published is kept with the inquiry and shown whole by dead letters; the parser reads only `json`."""
    return b"&".join(pair for pair in body.split(b"&") if _field_name(pair) != API_KEY_FIELD)


def _field_name(pair: bytes) -> bytes:
    return unquote_to_bytes(pair.partition(b"=")[0].replace(b"+", b" "))


def _json_object(text: str) -> dict[str, Any]:
    try:
        event = loads(text)
    except json.JSONDecodeError as exc:
        raise HookError(400, "malformed", f"form field json is not JSON: {exc.msg} at column {exc.colno}") from None
    except ValueError as exc:
        raise HookError(400, "malformed", f"form field json is not JSON: {json_error_text(exc)}") from None
    if not isinstance(event, dict):
        raise HookError(400, "malformed", f"form field json must be an object, not {type(event).__name__}")
    return event


def _number(value: Any) -> float | None:
    """A JSON number as it is: check_replay reads a whole number too large for a float as infinite."""
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _key(kind: str, event: dict[str, Any], payload_json: str) -> str:
    """Every leg of a call 'appears' once per entry (one start); other states per call leg and sequence number."""
    entry, call_id, seq = event.get("entry_id"), event.get("call_id"), event.get("seq")
    if kind == "call" and event.get("call_state") == "Appeared" and isinstance(entry, str) and entry:
        return f"{key_part(entry)}:appeared"
    if kind == "call" and isinstance(call_id, str) and call_id and isinstance(seq, int | str):
        return f"{key_part(call_id)}:{key_part(seq, 20)}"
    if kind == "summary" and isinstance(entry, str) and entry:
        return key_part(entry)
    return f"sha256:{body_digest(payload_json)}"
