"""Typed objects that flow through the intake pipeline; steps take and return these, never dicts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from leadhub.envelope import Envelope


@dataclass(slots=True)
class Identity:
    """What an inquiry says about who sent it, before and after normalization."""

    name: str | None = None
    email: str | None = None
    phone: str | None = None
    phone_raw: str | None = None
    # The digits of `phone_raw` when it is no valid number (pipelines/normalize.py `phone_digits`): still the caller.
    phone_digits: str | None = None
    company: str | None = None
    # A chat account (`telegram:<user id>`) and a shop's own customer id, both identifiers of the person.
    messenger: str | None = None
    customer_id: str | None = None


@dataclass(slots=True)
class InquiryDraft:
    """An envelope read into fields; `dropped` says why it must not become a lead."""

    envelope: Envelope
    identity: Identity = field(default_factory=Identity)
    message: str | None = None
    title: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    attribution: dict[str, str] = field(default_factory=dict)
    dropped: str | None = None
    # Labels for the lead, e.g. "callback_requested" for a missed call or a callback form.
    tags: list[str] = field(default_factory=list)
    # False for an inquiry that belongs on the contact but is not a new lead (an answered call).
    opens_lead: bool = True
    # Email threading: this item's Message-ID and the ids it replies to (In-Reply-To, References).
    message_id: str | None = None
    thread_refs: list[str] = field(default_factory=list)
    # A shop order read from the payload (an OrderDraft from the shop parsers), or None.
    order: Any = None
    # Keys a copy of the same submission may be stored under (a form body hashed into a neighbouring dedupe
    # bucket): one of them received less than `repeat_window` apart makes this a duplicate.
    repeat_keys: tuple[str, ...] = ()
    repeat_window: timedelta = timedelta(0)

    @property
    def key(self) -> str:
        return self.envelope.key

    @property
    def received_at(self) -> datetime:
        return self.envelope.received_at


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A configured connector as the pipeline sees it: its type and options (e.g. a field mapping)."""

    type: str
    options: dict[str, Any] = field(default_factory=dict)
