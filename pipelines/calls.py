"""One rule for every PBX: a missed inbound call or a callback request is a lead; an answered call is history."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from leadhub.envelope import Envelope
from leadhub.pipelines.model import Identity, InquiryDraft
from leadhub.pipelines.normalize import normalize_phone

CALLBACK_TAG = "callback_requested"


class Outcome(StrEnum):
    """What a provider's call event means for leadhub."""

    START = "start"  # an inbound call began; kept on the contact so a call whose end never arrives is not lost
    MISSED = "missed"  # inbound, not answered (no answer, busy, cancelled, failed)
    CALLBACK = "callback"  # the customer asked to be called back
    ANSWERED = "answered"  # inbound, talked
    OUTBOUND = "outbound"  # a call the team made
    PROGRESS = "progress"  # a mid-call event (ringing an extension, a recording ready): stored, not an inquiry
    UNKNOWN = "unknown"  # an event type this connector does not know


OPENS_LEAD = {Outcome.MISSED, Outcome.CALLBACK}
TITLES = {
    Outcome.START: "Incoming call",
    Outcome.MISSED: "Missed call",
    Outcome.CALLBACK: "Callback request",
    Outcome.ANSWERED: "Answered call",
    Outcome.OUTBOUND: "Outbound call",
}


@dataclass(slots=True)
class CallEvent:
    """A provider's call event read into the few things that matter; `details` keeps the rest for the inquiry."""

    event: str
    outcome: Outcome
    phone: str | None = None  # the customer's number (caller on inbound, callee on outbound)
    name: str | None = None
    email: str | None = None
    message: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def pbx_number(value: str | None) -> str | None:
    """PBXs send international numbers without the plus (`79001234567`); give them one so no region is guessed.

    A national number with a trunk prefix (`89001234567`) or a short local one is left for the region to read.
    Trunk prefix 8 makes 11 digits, so a longer number starting with 8 is international too (China `86...`,
    Japan `81...`, Korea `82...`), except one dialled through the `8 10` international prefix (the region reads it).
    Digits that look international but are no valid number so read are left to the region too: national numbers
    of 11 digits without a trunk prefix (China's `13812345678`, Brazil's `11987654321`) became invalid `+1...`.
    """
    if not value:
        return None
    digits = value.strip()
    if not digits.isdigit():
        return digits
    international = (len(digits) >= 11 and not digits.startswith(("8", "0"))) or (
        len(digits) >= 12 and digits.startswith("8") and not digits.startswith("810")
    )
    if international and normalize_phone("+" + digits, None) is not None:
        return "+" + digits
    return digits


def hidden_number(value: str | None) -> bool:
    """A withheld caller id as PBXs send it: a word (`anonymous`, `Restricted`, `unknown`) or only zeros (`0`)."""
    digits = {c for c in value or "" if c.isdigit()}
    return bool(value and value.strip()) and digits <= {"0"}


def call_draft(envelope: Envelope, call: CallEvent) -> InquiryDraft:
    """The draft for a call event: a lead tagged `callback_requested`, an inquiry without a lead, or dropped."""
    fields = {"call_event": call.event, "call_outcome": str(call.outcome)}
    fields |= {k: v for k, v in call.details.items() if v not in (None, "")}
    phone = call.phone
    if hidden_number(phone):
        # Nobody can call a withheld number back: it is no contact's phone, and a missed call from it opens no lead.
        fields["caller_hidden"] = str(phone).strip()[:40]
        phone = None
    draft = InquiryDraft(
        envelope=envelope,
        identity=Identity(name=call.name or None, email=call.email or None, phone_raw=pbx_number(phone)),
        message=call.message,
        title=TITLES.get(call.outcome),
        fields=fields,
    )
    if call.outcome is Outcome.UNKNOWN:
        draft.dropped = f"unknown event: {call.event}"[:200]
    elif call.outcome is Outcome.PROGRESS:
        draft.dropped = f"call progress: {call.event}"[:200]
    elif call.outcome in OPENS_LEAD and "caller_hidden" in fields and not call.email:
        draft.dropped = f"{call.event}: the caller's number is hidden ({fields['caller_hidden']})"[:200]
    elif not (phone or "").strip() and not call.email:
        # No caller id at all (an empty or absent field): as unreachable as a withheld one. A lead would be an empty
        # contact and a callback task nobody can do, one per call.
        draft.opens_lead = False
        draft.dropped = f"{call.event}: a call without the customer's number"[:200]
    elif call.outcome in OPENS_LEAD:
        draft.tags = [CALLBACK_TAG]
    else:
        draft.opens_lead = False
    if draft.title and (phone or "caller_hidden" in fields):
        draft.title = f"{draft.title}: {phone or 'hidden number'}"
    return draft


def text(value: Any) -> str | None:
    """A scalar from a payload as text; None for missing, empty, or nested values."""
    if value is None or isinstance(value, dict | list) or value == "":
        return None
    return str(value)
