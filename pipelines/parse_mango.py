"""Parse step for `mango` envelopes: events/call and events/summary read into call events."""

from __future__ import annotations

from typing import Any

from leadhub.envelope import Envelope
from leadhub.formdata import FormDecodeError, urlencoded_pairs
from leadhub.json_errors import JSON_ERRORS, json_error_text, loads
from leadhub.pipelines.calls import CallEvent, Outcome, call_draft, text
from leadhub.pipelines.errors import PermanentError
from leadhub.pipelines.model import InquiryDraft

INBOUND, OUTBOUND = 1, 2


def _party(event: dict[str, Any], side: str) -> dict[str, Any]:
    value = event.get(side)
    return value if isinstance(value, dict) else {}


def _call(event: dict[str, Any]) -> CallEvent:
    state = text(event.get("call_state")) or "(no call_state)"
    caller = _party(event, "from")
    inbound_start = state == "Appeared" and not caller.get("extension")
    return CallEvent(
        event=f"call {state}",
        outcome=Outcome.START if inbound_start else Outcome.PROGRESS,
        phone=text(caller.get("number")),
        details={"call_id": text(event.get("call_id")), "entry_id": text(event.get("entry_id"))},
    )


def _summary(event: dict[str, Any]) -> CallEvent:
    direction, result = event.get("call_direction"), event.get("entry_result")
    details = {
        "entry_id": text(event.get("entry_id")),
        "line_number": text(event.get("line_number")),
        "talk_time": text(event.get("talk_time")),
        "end_time": text(event.get("end_time")),
        "disconnect_reason": text(event.get("disconnect_reason")),
    }
    if direction == OUTBOUND:
        return CallEvent("summary outbound", Outcome.OUTBOUND, text(_party(event, "to").get("number")), details=details)
    if direction != INBOUND:
        return CallEvent(f"summary direction {direction}", Outcome.PROGRESS, details=details)
    outcome = Outcome.ANSWERED if result == 1 else Outcome.MISSED
    return CallEvent(
        f"summary inbound result {result}", outcome, text(_party(event, "from").get("number")), details=details
    )


def parse_mango(envelope: Envelope, options: dict[str, Any]) -> InquiryDraft:
    try:
        form = dict(urlencoded_pairs(envelope.content_type, envelope.payload, "Mango event body"))
        event = loads(form.get("json", ""))
    except FormDecodeError as exc:
        raise PermanentError(f"Mango event body cannot be read: {exc}") from exc
    except JSON_ERRORS as exc:
        raise PermanentError(f"Mango event body cannot be read: {json_error_text(exc)}") from exc
    if not isinstance(event, dict):
        raise PermanentError("Mango event json is not an object")
    kind = envelope.meta.get("kind", "unknown")
    if kind == "call":
        call = _call(event)
    elif kind == "summary":
        call = _summary(event)
    else:
        call = CallEvent(event=kind, outcome=Outcome.UNKNOWN)
    return call_draft(envelope, call)
