"""Connector `zadarma`: PBX call notifications (NOTIFY_*), checked with the `Signature` header; answers `?zd_echo=`."""

from __future__ import annotations

import base64
import re
from typing import ClassVar, Literal

from aiohttp import web

from leadhub.connectors.base import HookError, accepted
from leadhub.connectors.webhook import (
    METHOD_NOT_ALLOWED,
    ProviderWebhook,
    WebhookConfig,
    body_digest,
    form_fields,
    hmac_hex,
    key_part,
    matches_any,
    raw_body,
    require_method,
)

SIGNATURE_HEADER = "Signature"
ECHO = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")

# Which fields, concatenated, each event signs (official PHP SDK, lib/Webhook/Notify*.php getSignatureString).
SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    "NOTIFY_START": ("caller_id", "called_did", "call_start"),
    "NOTIFY_INTERNAL": ("caller_id", "called_did", "call_start"),
    "NOTIFY_IVR": ("caller_id", "called_did", "call_start"),
    "NOTIFY_END": ("caller_id", "called_did", "call_start"),
    "NOTIFY_ANSWER": ("caller_id", "destination", "call_start"),
    "NOTIFY_OUT_START": ("internal", "destination", "call_start"),
    "NOTIFY_OUT_END": ("internal", "destination", "call_start"),
    "NOTIFY_RECORD": ("pbx_call_id", "call_id_with_rec"),
}
RECIPES = tuple(dict.fromkeys(SIGNED_FIELDS.values()))


class ZadarmaConfig(WebhookConfig):
    """`secret` is the API secret (my.zadarma.com → Settings → API); Zadarma signs only when a key exists."""

    type: Literal["zadarma"] = "zadarma"


def zadarma_signature(secret: bytes, signature_string: str) -> str:
    """base64 of the lower-case HEX HMAC-SHA1 (PHP's hash_hmac default), not of the raw digest."""
    return base64.b64encode(hmac_hex(secret, signature_string.encode(), "sha1").encode()).decode()


def signature_string(form: dict[str, str], fields: tuple[str, ...]) -> str:
    return "".join(form.get(name, "") for name in fields)


class ZadarmaConnector(ProviderWebhook):
    """Verifies the event's signature string, publishes one key per call and event; echoes the URL check."""

    type: ClassVar[str] = "zadarma"
    channel: ClassVar[str] = "phone"
    Config: ClassVar[type[ZadarmaConfig]] = ZadarmaConfig

    async def handle(self, request: web.Request) -> web.StreamResponse:
        require_method(request, "POST", "GET")
        if request.method == "GET":
            return self._echo(request)
        body = await raw_body(request, int(self.config.max_body))
        content_type = request.headers.get("Content-Type", "application/x-www-form-urlencoded")
        form = form_fields(body, "Zadarma notification body", content_type)
        event = form.get("event", "").strip()
        if not event:
            raise HookError(400, "malformed", "a Zadarma notification must carry `event`; none in the form body")
        self._verify(request.headers.get(SIGNATURE_HEADER), event, form)
        call_id = form.get("pbx_call_id") or f"sha256:{body_digest(body)}"
        key = f"{key_part(call_id)}:{key_part(event, 60)}"
        return accepted(await self.publish(key, body, content_type, {"event": event[:100]}))

    def _echo(self, request: web.Request) -> web.Response:
        """Zadarma checks a URL when it is saved: `GET ?zd_echo=X` must answer X."""
        echo = request.query.get("zd_echo")
        if echo is None:
            raise HookError(
                405, METHOD_NOT_ALLOWED, "GET is only for Zadarma's ?zd_echo= URL check", headers={"Allow": "POST"}
            )
        if not ECHO.match(echo):
            raise HookError(400, "malformed", "zd_echo must be 1-128 letters, digits, '.', '_' or '-'")
        return web.Response(text=echo, content_type="text/plain")

    def _verify(self, given: str | None, event: str, form: dict[str, str]) -> None:
        """An unknown event is accepted only if it is signed like one of the known events (it is then dropped)."""
        if not given:
            raise HookError(401, "bad_signature", f"missing {SIGNATURE_HEADER} header: set an API key in Zadarma")
        recipes = (SIGNED_FIELDS[event],) if event in SIGNED_FIELDS else RECIPES
        for fields in recipes:
            text = signature_string(form, fields)
            if matches_any(given.strip(), lambda secret, t=text: zadarma_signature(secret, t), self.secrets):
                return
        raise HookError(
            401,
            "bad_signature",
            f"{SIGNATURE_HEADER} does not match the {event[:60]} fields signed with the API secret",
        )
