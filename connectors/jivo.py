"""Connector `jivo`: Jivo webhooks (chat_finished, offline_message, call_event), authenticated by a token in the URL."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from aiohttp import web

from leadhub.connectors.base import HookError, accepted
from leadhub.connectors.webhook import (
    ProviderWebhook,
    WebhookConfig,
    body_digest,
    json_object,
    key_part,
    raw_body,
    require_method,
    require_token,
)

OBJECT_FIELDS = ("visitor", "call", "chat", "session", "page")


class JivoConfig(WebhookConfig):
    """`secret` is a token you invent and put in the webhook URL given to Jivo: `...?token=<secret>`."""

    type: Literal["jivo"] = "jivo"
    replay_window: None = None  # Jivo signs nothing


class JivoConnector(ProviderWebhook):
    """Checks `?token=`, requires a JSON event with `event_name`, keys it by chat (or offline message) and event."""

    type: ClassVar[str] = "jivo"
    channel: ClassVar[str] = "chat"
    Config: ClassVar[type[JivoConfig]] = JivoConfig

    async def handle(self, request: web.Request) -> web.StreamResponse:
        require_method(request, "POST")
        require_token(request.query.get("token"), self.secrets, "the URL as ?token=")
        body = await raw_body(request, int(self.config.max_body))
        event = _event(body)
        name = event["event_name"]
        call = event.get("call") or {}
        channel = "phone" if name == "call_event" else "chat"
        content_type = request.headers.get("Content-Type", "application/json")
        key = f"{key_part(name, 60)}:{_key(name, event, call, body)}"
        result = await self.publish(key, body, content_type, {"event": name[:60]}, channel=channel)
        # Jivo's docs ask webhook receivers to answer {"result": "ok"}; the hub's id and duplicate flag stay.
        return accepted(result, provider_fields=b'"result":"ok",')


def _event(body: bytes) -> dict[str, Any]:
    event = json_object(body, "a Jivo event")
    if not isinstance(event.get("event_name"), str) or not event["event_name"].strip():
        raise HookError(400, "malformed", "a Jivo event must carry event_name as a non-empty string")
    wrong = [name for name in OBJECT_FIELDS if name in event and not isinstance(event[name], dict | None)]
    if wrong:
        raise HookError(400, "malformed", f"{', '.join(wrong)} must be JSON object(s)")
    return event


def _key(name: str, event: dict[str, Any], call: dict[str, Any], body: bytes) -> str:
    """Jivo sends no delivery id: the chat (or offline message) id names the item; a call by chat and call type.

    A callback request reported at its start and again at its end is therefore one inquiry.
    """
    chat_id = event.get("chat_id")
    has_chat = isinstance(chat_id, int | str) and not isinstance(chat_id, bool) and str(chat_id).strip()
    if name == "offline_message" and isinstance(event.get("offline_message_id"), int | str):
        return key_part(event["offline_message_id"])
    if name == "chat_finished" and has_chat:
        return key_part(chat_id)
    if name == "call_event" and has_chat:
        return f"{key_part(chat_id)}:{key_part(call.get('type') or 'call', 40)}"
    return f"sha256:{body_digest(body)}"
