"""Links a rule's email may carry: the survey page for an order and the one-click unsubscribe."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from leadhub.triggers.tokens import sign

SURVEY_VALID_FOR = timedelta(days=30)
UNSUBSCRIBE_VALID_FOR = timedelta(days=365 * 2)
LOCAL_URL = "http://127.0.0.1:8080"  # the default HTTP address; callers pass where their daemon listens


def survey_token(key: bytes, order: Any, contact: Any, now: datetime) -> str:
    payload = {"o": order.id, "c": getattr(contact, "id", None), "l": getattr(order, "lead_id", None)}
    return sign(key, "survey", payload, now + SURVEY_VALID_FOR)


def unsubscribe_token(key: bytes, address: str, now: datetime) -> str:
    return sign(key, "unsubscribe", {"e": address.strip().lower()}, now + UNSUBSCRIBE_VALID_FOR)


def link_context(key: bytes, public_url: str | None, context: dict[str, Any], to: str | None, now: datetime) -> dict:
    """`survey_url` (when the event has an order) and `unsubscribe_url` (for `to`) for email templates."""
    base = (public_url or LOCAL_URL).rstrip("/")
    order = context.get("order")
    survey = f"{base}/s/{survey_token(key, order, context.get('contact'), now)}" if order is not None else None
    unsubscribe = f"{base}/u/{unsubscribe_token(key, to, now)}" if to else None
    return {"survey_url": survey, "unsubscribe_url": unsubscribe}
