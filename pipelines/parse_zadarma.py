"""Parse step for `zadarma` envelopes: NOTIFY_* call notifications read into call events."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from leadhub.envelope import Envelope
from leadhub.pipelines.calls import CallEvent, Outcome, call_draft
from leadhub.pipelines.errors import PermanentError
from leadhub.pipelines.model import InquiryDraft

PROGRESS = {"NOTIFY_INTERNAL", "NOTIFY_ANSWER", "NOTIFY_IVR", "NOTIFY_RECORD", "NOTIFY_OUT_START"}
DETAILS = ("pbx_call_id", "call_start", "called_did", "destination", "internal", "duration", "disposition")


def _outcome(event: str, form: dict[str, str]) -> Outcome:
    if event == "NOTIFY_START":
        return Outcome.START
    if event == "NOTIFY_END":
        return Outcome.ANSWERED if form.get("disposition", "").strip().lower() == "answered" else Outcome.MISSED
    if event == "NOTIFY_OUT_END":
        return Outcome.OUTBOUND
    return Outcome.PROGRESS if event in PROGRESS else Outcome.UNKNOWN


def parse_zadarma(envelope: Envelope, options: dict[str, Any]) -> InquiryDraft:
    try:
        form = dict(parse_qsl(envelope.payload.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError as exc:
        raise PermanentError(f"Zadarma form body is not UTF-8: {exc}") from exc
    event = form.get("event", "").strip() or "(no event)"
    outcome = _outcome(event, form)
    phone = form.get("destination") if event.startswith("NOTIFY_OUT") else form.get("caller_id")
    details = {name: form.get(name) for name in DETAILS}
    return call_draft(envelope, CallEvent(event=event, outcome=outcome, phone=phone, details=details))
