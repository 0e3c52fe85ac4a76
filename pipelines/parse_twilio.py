"""Parse step for `twilio` envelopes: a voice webhook or status callback read into a call event."""

from __future__ import annotations

from typing import Any

from leadhub.envelope import Envelope
from leadhub.formdata import FormDecodeError, urlencoded_pairs
from leadhub.pipelines.calls import CallEvent, Outcome, call_draft
from leadhub.pipelines.errors import PermanentError
from leadhub.pipelines.model import InquiryDraft

MISSED = {"no-answer", "busy", "canceled", "failed"}
STARTING = {"queued", "initiated", "ringing"}
DETAILS = (
    "CallSid",
    "ParentCallSid",
    "CallStatus",
    "DialCallStatus",
    "Direction",
    "To",
    "CallDuration",
    "ForwardedFrom",
    "Timestamp",
)
# A `<Dial>`'s leg to the number it rings (the callbacks of `<Number statusCallback>`): part of the caller's call,
# its From is the caller and its To the team's phone.
DIAL_LEG = "outbound-dial"
# Withheld caller ids as Twilio has sent them in From: the words spelled on a phone keypad.
WITHHELD = {
    "+266696687": "ANONYMOUS",
    "+7378742833": "RESTRICTED",
    "+2562533": "BLOCKED",
    "+8656696": "UNKNOWN",
    "+86282452253": "UNAVAILABLE",
}


def _outbound(form: dict[str, str]) -> bool:
    """A call the team made (`outbound-api`); a `<Dial>` leg of an incoming call is not one."""
    direction = form.get("Direction", "inbound").strip().lower()
    return direction.startswith("outbound") and direction != DIAL_LEG


def _outcome(form: dict[str, str]) -> tuple[str, Outcome]:
    """The event name and what it means; a `<Dial action>` callback's DialCallStatus wins over CallStatus."""
    status = (form.get("DialCallStatus") or form.get("CallStatus") or "").strip().lower()
    event = f"call {status or '(no status)'}"
    if _outbound(form):
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


def _customer(form: dict[str, str], outbound: bool) -> str | None:
    """The callee of the team's own call; else the caller, a keypad-spelled withheld id read as the word."""
    if outbound:
        return form.get("To") or form.get("Called")
    caller = form.get("From") or form.get("Caller")
    return WITHHELD.get(caller.strip(), caller) if caller else caller


def parse_twilio(envelope: Envelope, options: dict[str, Any]) -> InquiryDraft:
    if "bodySHA256" in envelope.meta.get("url", "") or ":json:" in envelope.key:
        return call_draft(envelope, CallEvent(event="json body", outcome=Outcome.UNKNOWN))
    try:
        form = dict(urlencoded_pairs(envelope.content_type, envelope.payload, "Twilio form body"))
    except FormDecodeError as exc:
        raise PermanentError(str(exc)) from exc
    if "CallSid" not in form:
        kind = "message" if form.get("MessageSid") or form.get("SmsSid") else "no CallSid"
        return call_draft(envelope, CallEvent(event=kind, outcome=Outcome.UNKNOWN))
    event, outcome = _outcome(form)
    outbound = _outbound(form)
    return call_draft(
        envelope,
        CallEvent(
            event=event,
            outcome=outcome,
            phone=_customer(form, outbound),
            name=form.get("CallerName") if not outbound else None,
            details={name: form.get(name) for name in DETAILS} | {"direction": form.get("Direction")},
        ),
    )
