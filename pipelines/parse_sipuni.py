"""Parse step for `sipuni` envelopes: call start / end / answer events read into call events."""

from __future__ import annotations

import re
from typing import Any

from leadhub.envelope import Envelope
from leadhub.formdata import FormDecodeError, urlencoded_pairs
from leadhub.pipelines.calls import CallEvent, Outcome, call_draft
from leadhub.pipelines.errors import PermanentError
from leadhub.pipelines.model import InquiryDraft

EXTERNAL = "1"
NOT_ANSWERED = {"NOANSWER", "BUSY", "CANCEL", "CONGESTION", "CHANUNAVAIL"}
DETAILS = ("call_id", "status", "src_type", "dst_type", "pbxdstnum", "treeName", "timestamp", "call_start_timestamp")
_ID_SUFFIX = re.compile(r"_id\d+$")


def _number(value: str | None) -> str | None:
    """`998783337125_id265648` -> `998783337125`: Sipuni appends the internal id to some numbers."""
    return _ID_SUFFIX.sub("", value.strip()) if value else None


def _call(params: dict[str, str]) -> CallEvent:
    event = params.get("event", "").strip()  # as the connector keys it: " 2" is the end event there and here
    inbound = params.get("src_type") == EXTERNAL
    outbound = params.get("dst_type") == EXTERNAL and params.get("src_type") not in (None, EXTERNAL)
    caller = _number(params.get("src_num")) if inbound else None
    details = {name: params.get(name) for name in DETAILS}
    if event == "1":
        if inbound:
            return CallEvent("start", Outcome.START, caller, details=details)
        callee = _number(params.get("dst_num")) if outbound else None
        return CallEvent("start outbound", Outcome.OUTBOUND if outbound else Outcome.PROGRESS, callee, details=details)
    if event == "2":
        return _end(params.get("status", "").strip().upper(), inbound, caller, details)
    if event in ("3", "4"):
        return CallEvent("answer" if event == "3" else "end2", Outcome.PROGRESS, details=details)
    return CallEvent(f"event {event}", Outcome.UNKNOWN, details=details)


def _end(status: str, inbound: bool, caller: str | None, details: dict[str, Any]) -> CallEvent:
    """A missed inbound call often arrives only as this event (no start): it alone makes the callback lead."""
    if inbound and status in NOT_ANSWERED:
        return CallEvent(f"end {status}", Outcome.MISSED, caller, details=details)
    if inbound and status == "ANSWER":
        return CallEvent("end ANSWER", Outcome.ANSWERED, caller, details=details)
    return CallEvent(f"end {status or '(no status)'}", Outcome.PROGRESS, details=details)


def parse_sipuni(envelope: Envelope, options: dict[str, Any]) -> InquiryDraft:
    try:
        params = dict(urlencoded_pairs(envelope.content_type, envelope.payload, "Sipuni event"))
    except FormDecodeError as exc:
        raise PermanentError(str(exc)) from exc
    return call_draft(envelope, _call(params))
