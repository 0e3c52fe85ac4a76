"""Connector `twilio`: voice webhooks and status callbacks, signed in `X-Twilio-Signature` (HMAC-SHA1, URL + params)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from email.utils import parsedate_to_datetime
from typing import ClassVar, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from aiohttp import web

from leadhub.connectors.base import HookError, accepted
from leadhub.connectors.webhook import (
    ProviderWebhook,
    WebhookConfig,
    body_digest,
    form_pairs,
    key_part,
    matches_any,
    raw_body,
    require_method,
)

SIGNATURE_HEADER = "X-Twilio-Signature"
IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"
DEFAULT_PORTS = {"https": 443, "http": 80}


class TwilioConfig(WebhookConfig):
    """`secret` is the account's Auth Token (Console → Account info)."""

    type: Literal["twilio"] = "twilio"


def twilio_signature(token: bytes, url: str, params: Iterable[tuple[str, str]]) -> str:
    """base64(HMAC-SHA1(url + name+value of every param sorted by name, then value; repeats de-duplicated))."""
    message = url + "".join(name + value for name, value in sorted(set(params)))
    return base64.b64encode(hmac.new(token, message.encode(), hashlib.sha1).digest()).decode()


def url_variants(url: str) -> list[str]:
    """The URL as given, plus with and without the default port: Twilio's SDK accepts either."""
    parts = urlsplit(url)
    default = DEFAULT_PORTS.get(parts.scheme)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:  # a port out of range in a Host header: only the URL as given can match
        return [url]
    if not default or not host or port not in (None, default):
        return [url]
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    host = f"[{host}]" if ":" in host else host
    bare = urlunsplit(parts._replace(netloc=f"{prefix}{host}"))
    ported = urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}"))
    return [url, bare if port else ported]


def signature_valid(
    signature: str, token_list: list[bytes], url: str, body: bytes, params: list[tuple[str, str]]
) -> bool:
    """True when `signature` matches the URL (with or without the default port) and params under one token.

    A JSON body is signed through the URL: Twilio adds `bodySHA256=<hex sha256(body)>` to the query and
    signs the URL alone, so the hash must also match the body.
    """
    query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    if "bodySHA256" in query:
        if not hmac.compare_digest(query["bodySHA256"].encode(), hashlib.sha256(body).hexdigest().encode()):
            return False
        params = []
    matched = False
    for variant in url_variants(url):
        matched |= matches_any(signature, lambda token, v=variant: twilio_signature(token, v, params), token_list)
    return matched


class TwilioConnector(ProviderWebhook):
    """Rebuilds the URL Twilio called, verifies the signature over it and the params, publishes one key per status."""

    type: ClassVar[str] = "twilio"
    channel: ClassVar[str] = "phone"
    Config: ClassVar[type[TwilioConfig]] = TwilioConfig

    def requested_url(self, request: web.Request) -> str:
        """`LEADHUB_PUBLIC_URL` + `/hooks/<name>[/tail]` + query behind a proxy, else the URL this server saw."""
        if not self.context.public_url:
            try:
                return str(request.url)
            except (ValueError, UnicodeError):  # yarl refuses the Host header: a port out of range, bad bytes
                raise HookError(400, "malformed", "the Host header is not a valid host[:port]") from None
        url = self.context.public_url.rstrip("/") + f"/hooks/{self.config.name}"
        if tail := request.match_info.get("tail"):
            url += "/" + tail
        if query := request.rel_url.raw_query_string:
            url += "?" + query
        return url

    async def handle(self, request: web.Request) -> web.StreamResponse:
        require_method(request, "POST")
        body = await raw_body(request, int(self.config.max_body))
        content_type = request.headers.get("Content-Type", "")
        url = self.requested_url(request)
        is_json = "bodySHA256" in request.rel_url.query
        params: list[tuple[str, str]] = []
        if not is_json:
            params = form_pairs(body, "Twilio form body", content_type)  # 400 for a body that is not a form
        signature = request.headers.get(SIGNATURE_HEADER)
        if not signature:
            raise HookError(401, "bad_signature", f"missing {SIGNATURE_HEADER}: the request is not signed")
        if not signature_valid(signature.strip(), self.secrets, url, body, params):
            raise HookError(
                401,
                "bad_signature",
                f"{SIGNATURE_HEADER} does not match {url} and the parameters signed with the Auth Token "
                "(behind a proxy, set LEADHUB_PUBLIC_URL to the URL configured in Twilio)",
            )
        if is_json:  # no CallSid to read before parsing: Twilio's per-request idempotency token, else the body
            token = request.headers.get(IDEMPOTENCY_HEADER, "").strip()
            key = f"json:{key_part(token)}" if token else f"json:{body_digest(body)}"
            return accepted(await self.publish(key, body, content_type or "application/json", {"url": url}))
        form = dict(params)
        self.check_replay(_timestamp(form.get("Timestamp")))
        key = _key(form, body)
        return accepted(await self.publish(key, body, content_type or "application/x-www-form-urlencoded"))


def _timestamp(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None  # an unreadable timestamp is not a reason to refuse a signed delivery


def _key(form: dict[str, str], body: bytes) -> str:
    """CallSid + status: every status callback of a call is its own delivery; a resend of one is a duplicate."""
    if call_sid := form.get("CallSid"):
        dial = form.get("DialCallStatus")
        status = f"dial-{dial}" if dial else form.get("CallStatus") or "unknown"
        return f"{key_part(call_sid)}:{key_part(status, 40)}"
    if other := form.get("MessageSid") or form.get("SmsSid"):
        return f"message:{key_part(other)}"
    raise HookError(400, "malformed", "a Twilio voice webhook must carry CallSid; none in the form body")
