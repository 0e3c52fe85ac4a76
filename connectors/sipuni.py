"""Connector `sipuni`: Sipuni call events (GET query or POST form); unsigned, so a token in the URL authenticates."""

from __future__ import annotations

from typing import ClassVar, Literal
from urllib.parse import urlencode

from aiohttp import web

from leadhub.connectors.base import HookError, accepted
from leadhub.connectors.webhook import (
    ProviderWebhook,
    WebhookConfig,
    form_fields,
    key_part,
    query_fields,
    raw_body,
    require_method,
    require_token,
)
from leadhub.formdata import URLENCODED_TYPES, declared_charset

FORM_TYPE = URLENCODED_TYPES[0]
# Sipuni's `event`: 1 call start, 2 hang-up (end), 3 answered, 4 secondary hang-up. Start is delivered twice,
# so the key is per call and event kind, never per delivery: the second start is a duplicate.
EVENT_NAMES = {"1": "start", "2": "end", "3": "answer", "4": "end2"}


class SipuniConfig(WebhookConfig):
    """`secret` is a token you invent and put in the URL given to Sipuni: `...?token=<secret>`."""

    type: Literal["sipuni"] = "sipuni"
    replay_window: None = None  # Sipuni signs nothing, so a timestamp proves nothing


class SipuniConnector(ProviderWebhook):
    """Checks `?token=` in constant time; publishes the parameters (token removed) keyed by call and event."""

    type: ClassVar[str] = "sipuni"
    channel: ClassVar[str] = "phone"
    Config: ClassVar[type[SipuniConfig]] = SipuniConfig

    async def handle(self, request: web.Request) -> web.StreamResponse:
        require_method(request, "POST", "GET")
        require_token(request.query.get("token"), self.secrets, "the URL as ?token=")
        params = query_fields(request, "the URL's query")
        body = b""
        if request.method == "POST":
            body = await raw_body(request, int(self.config.max_body))
            params |= form_fields(body, "Sipuni event body", request.headers.get("Content-Type", ""))
        call_id, event = params.get("call_id", "").strip(), params.get("event", "").strip()
        if not call_id or not event:
            missing = " and ".join(name for name, value in (("call_id", call_id), ("event", event)) if not value)
            raise HookError(400, "malformed", f"a Sipuni call event must carry {missing}")
        name = EVENT_NAMES.get(event, f"event-{key_part(event, 20)}")
        # The body as received when it holds everything; a GET's query (without the token) otherwise.
        only_token = set(request.query) <= {"token"}
        if request.method == "POST" and only_token:  # with the charset it was read in, if it declared one
            charset = declared_charset(request.headers.get("Content-Type", ""))
            payload, content_type = body, f"{FORM_TYPE}; charset={charset}" if charset else FORM_TYPE
        else:
            payload, content_type = urlencode(params).encode(), FORM_TYPE  # urlencode writes UTF-8
        result = await self.publish(f"{key_part(call_id)}:{name}", payload, content_type)
        # Sipuni's docs: the URL answers JSON with `success` (true when processed), or Sipuni may stop sending events.
        return accepted(result, provider_fields=b'"success":true,')
