"""Parse step for `zadarma` envelopes: NOTIFY_* call notifications read into call events."""

from __future__ import annotations

from typing import Any

from leadhub.envelope import Envelope
from leadhub.formdata import FormDecodeError, urlencoded_pairs
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
        form = dict(urlencoded_pairs(envelope.content_type, envelope.payload, "Zadarma form body"))
    except FormDecodeError as exc:
        raise PermanentError(str(exc)) from exc
    event = form.get("event", "").strip() or "(no event)"
    outcome = _outcome(event, form)
    phone = form.get("destination") if event.startswith("NOTIFY_OUT") else form.get("caller_id")
    details = {name: form.get(name) for name in DETAILS}
    return call_draft(envelope, CallEvent(event=event, outcome=outcome, phone=phone, details=details))
