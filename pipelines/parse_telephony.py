"""Parse step for `telephony` envelopes: the connector's field mapping and event table read into a call event."""

from __future__ import annotations

from typing import Any

from leadhub.envelope import Envelope
from leadhub.formdata import FormDecodeError, media_type, urlencoded_pairs
from leadhub.json_errors import JSON_ERRORS, json_error_text, loads
from leadhub.pipelines.calls import CallEvent, Outcome, call_draft, text
from leadhub.pipelines.errors import PermanentError
from leadhub.pipelines.model import InquiryDraft


def _lookup(data: dict[str, Any], path: str | None) -> Any:
    value: Any = data
    for part in (path or "").split(".") if path else []:
        value = value.get(part) if isinstance(value, dict) else None
    return value if path else None


def _decode(envelope: Envelope) -> dict[str, Any]:
    try:
        if media_type(envelope.content_type) == "application/x-www-form-urlencoded":
            return dict(urlencoded_pairs(envelope.content_type, envelope.payload, "PBX event body"))
        data = loads(envelope.payload)
    except FormDecodeError as exc:
        raise PermanentError(f"PBX event cannot be decoded: {exc}") from exc
    except JSON_ERRORS as exc:
        raise PermanentError(f"PBX event cannot be decoded: {json_error_text(exc)}") from exc
    if not isinstance(data, dict):
        raise PermanentError("PBX event is not a JSON object")
    return data


def parse_telephony(envelope: Envelope, options: dict[str, Any]) -> InquiryDraft:
    data = _decode(envelope)
    mapping: dict[str, str] = options.get("fields") or {}
    events: dict[str, str] = options.get("events") or {}
    values = {name: text(_lookup(data, path)) for name, path in mapping.items()}
    status, event = values.get("status"), values.get("event")
    meaning = events.get(status or "") or events.get(event or "")
    label = " ".join(v for v in (event, status) if v) or "(no event)"
    outcome = Outcome(meaning) if meaning else Outcome.UNKNOWN
    details = {"call_id": values.get("call_id"), "call_time": values.get("time"), "status": status}
    return call_draft(
        envelope,
        CallEvent(
            event=label,
            outcome=outcome,
            phone=values.get("phone"),
            name=values.get("name"),
            email=values.get("email"),
            details=details,
        ),
    )
