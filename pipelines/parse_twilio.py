"""Parse step for `twilio` envelopes: a voice webhook or status callback read into a call event."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from leadhub.envelope import Envelope
from leadhub.pipelines.calls import CallEvent, Outcome, call_draft
from leadhub.pipelines.errors import PermanentError
from leadhub.pipelines.model import InquiryDraft

MISSED = {"no-answer", "busy", "canceled", "failed"}
STARTING = {"queued", "initiated", "ringing"}
DETAILS = ("CallSid", "CallStatus", "DialCallStatus", "Direction", "To", "CallDuration", "ForwardedFrom", "Timestamp")


def _outcome(form: dict[str, str]) -> tuple[str, Outcome]:
    """The event name and what it means; a `<Dial action>` callback's DialCallStatus wins over CallStatus."""
    status = (form.get("DialCallStatus") or form.get("CallStatus") or "").strip().lower()
    event = f"call {status or '(no status)'}"
    outbound = form.get("Direction", "inbound").startswith("outbound")
    if outbound:
        return event, Outcome.OUTBOUND if status == "completed" else Outcome.PROGRESS
    if status in MISSED:
        return event, Outcome.MISSED
    if status in STARTING:
        return event, Outcome.START
    if status in {"completed", "answered"}:
        return event, Outcome.ANSWERED
    if status == "in-progress":
        return event, Outcome.PROGRESS
    return event, Outcome.UNKNOWN


def parse_twilio(envelope: Envelope, options: dict[str, Any]) -> InquiryDraft:
    if "bodySHA256" in envelope.meta.get("url", "") or ":json:" in envelope.key:
        return call_draft(envelope, CallEvent(event="json body", outcome=Outcome.UNKNOWN))
    try:
        form = dict(parse_qsl(envelope.payload.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError as exc:
        raise PermanentError(f"Twilio form body is not UTF-8: {exc}") from exc
    if "CallSid" not in form:
        kind = "message" if form.get("MessageSid") or form.get("SmsSid") else "no CallSid"
        return call_draft(envelope, CallEvent(event=kind, outcome=Outcome.UNKNOWN))
    event, outcome = _outcome(form)
    outbound = outcome is Outcome.OUTBOUND or form.get("Direction", "").startswith("outbound")
    return call_draft(
        envelope,
        CallEvent(
            event=event,
            outcome=outcome,
            phone=form.get("To" if outbound else "From") or form.get("Called" if outbound else "Caller"),
            name=form.get("CallerName") if not outbound else None,
            details={name: form.get(name) for name in DETAILS} | {"direction": form.get("Direction")},
        ),
    )
