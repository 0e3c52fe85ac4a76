"""Parse step for `jivo` envelopes: chats and offline messages are chat leads, a callback request a phone lead."""

from __future__ import annotations

from typing import Any

from leadhub.envelope import Envelope
from leadhub.json_errors import JSON_ERRORS, json_error_text, loads
from leadhub.pipelines.calls import CallEvent, Outcome, call_draft, text
from leadhub.pipelines.errors import PermanentError
from leadhub.pipelines.model import Identity, InquiryDraft

IGNORED = ("chat_accepted", "chat_assigned", "chat_updated", "client_updated")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _attribution(event: dict[str, Any]) -> dict[str, str]:
    utm = _dict(_dict(event.get("session")).get("utm_json"))
    return {f"utm_{k}": str(v)[:300] for k, v in utm.items() if isinstance(v, str | int) and str(v) not in ("", "...")}


def _chat_text(event: dict[str, Any]) -> str | None:
    """What the visitor wrote: their messages of a finished chat, or the offline message."""
    if message := text(event.get("message")):
        return message
    messages = _dict(event.get("chat")).get("messages")
    if not isinstance(messages, list):
        return None
    lines = [text(m.get("message")) for m in messages if isinstance(m, dict) and m.get("type") == "visitor"]
    return "\n".join(line for line in lines if line) or None


def _details(event: dict[str, Any]) -> dict[str, Any]:
    details = {"jivo_event": event.get("event_name"), "jivo_chat_id": text(event.get("chat_id"))}
    details["page_url"] = text(_dict(event.get("page")).get("url"))
    return {k: v for k, v in details.items() if v}


def _chat(envelope: Envelope, event: dict[str, Any], visitor: dict[str, Any]) -> InquiryDraft:
    name = text(visitor.get("name"))
    return InquiryDraft(
        envelope=envelope,
        identity=Identity(name=name, email=text(visitor.get("email")), phone_raw=text(visitor.get("phone"))),
        message=_chat_text(event),
        title=f"Jivo {'offline message' if event['event_name'] == 'offline_message' else 'chat'}: {name or 'visitor'}",
        fields=_details(event),
        attribution=_attribution(event),
    )


def _call(envelope: Envelope, event: dict[str, Any], visitor: dict[str, Any]) -> InquiryDraft:
    call = _dict(event.get("call"))
    kind, status = text(call.get("type")) or "call", text(call.get("status")) or "?"
    draft = call_draft(
        envelope,
        CallEvent(
            event=f"call_event {kind} {status}",
            outcome=Outcome.CALLBACK if kind == "callback" else Outcome.PROGRESS,
            phone=text(call.get("phone")) or text(visitor.get("phone")),
            name=text(visitor.get("name")),
            email=text(visitor.get("email")),
            details=_details(event) | {"call_status": status, "record_url": text(call.get("record_url"))},
        ),
    )
    draft.attribution = _attribution(event)
    return draft


def parse_jivo(envelope: Envelope, options: dict[str, Any]) -> InquiryDraft:
    try:
        event = loads(envelope.payload)
    except JSON_ERRORS as exc:
        raise PermanentError(f"Jivo event is not JSON: {json_error_text(exc)}") from exc
    if not isinstance(event, dict) or not isinstance(event.get("event_name"), str):
        raise PermanentError("Jivo event is not a JSON object with event_name")
    name, visitor = event["event_name"], _dict(event.get("visitor"))
    if name in ("chat_finished", "offline_message"):
        return _chat(envelope, event, visitor)
    if name == "call_event":
        return _call(envelope, event, visitor)
    draft = InquiryDraft(envelope=envelope)
    draft.dropped = f"unhandled event: {name}" if name in IGNORED else f"unknown event: {name}"[:200]
    return draft
