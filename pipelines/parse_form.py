"""Parse step for `form` envelopes: decode the body and pick the known fields, keeping all others."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import TypeAdapter

from leadhub.envelope import Envelope
from leadhub.form_keys import DEFAULT_DEDUPE_WINDOW, neighbour_body_keys
from leadhub.formdata import LEADHUB_FIELDS, FormDecodeError, decode_form, mapped_name
from leadhub.pipelines.errors import PermanentError
from leadhub.pipelines.model import Identity, InquiryDraft

KNOWN = LEADHUB_FIELDS
_DURATION = TypeAdapter(timedelta)  # the connector's options arrive as JSON: dedupe_window as ISO 8601 ("PT10M")
ALIASES = {
    "fio": "name",
    "full_name": "name",
    "fullname": "name",
    "your-name": "name",
    "tel": "phone",
    "telephone": "phone",
    "phone_number": "phone",
    "your-phone": "phone",
    "e-mail": "email",
    "mail": "email",
    "your-email": "email",
    "comment": "message",
    "comments": "message",
    "text": "message",
    "your-message": "message",
}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        return ", ".join(str(v) for v in value if v not in (None, ""))
    return str(value)


def parse_form(envelope: Envelope, options: dict[str, Any]) -> InquiryDraft:
    """Read the decoded fields through the connector's mapping, then the defaults and their capitalised forms."""
    try:
        form = decode_form(envelope.content_type, envelope.payload)
    except FormDecodeError as exc:
        raise PermanentError(f"form body cannot be decoded: {exc}") from exc
    mapping = {mapped_name(their): target for their, target in (options.get("fields") or {}).items()}
    known: dict[str, str] = {}
    extra: dict[str, Any] = {}
    attribution: dict[str, str] = {}
    for raw_name, value in form.fields.items():
        target = mapping.get(mapped_name(raw_name)) or _default_target(raw_name)
        if raw_name == "token" or raw_name == options.get("honeypot"):
            continue
        if target in KNOWN and target not in known and (text := _text(value)):
            known[target] = text
        elif raw_name.lower().startswith("utm_") and (text := _text(value)):
            attribution[raw_name.lower()] = text[:300]
        else:
            extra[raw_name] = value
    if form.files:
        extra["_files"] = [
            {
                "field": f.field,
                "filename": f.filename,
                "content_type": f.content_type,
                "size": f.size,
                "sha256": f.sha256,
            }
            for f in form.files
        ]
    draft = InquiryDraft(
        envelope=envelope,
        identity=Identity(
            name=known.get("name"),
            email=known.get("email"),
            phone_raw=known.get("phone"),
            company=known.get("company"),
        ),
        message=known.get("message"),
        fields=extra,
        attribution=attribution,
    )
    if envelope.meta.get("spam"):
        draft.dropped = f"spam: {envelope.meta['spam']}"
    draft.repeat_keys = neighbour_body_keys(envelope.connector, envelope.key)
    if draft.repeat_keys:
        window = options.get("dedupe_window")
        draft.repeat_window = DEFAULT_DEDUPE_WINDOW if window is None else _DURATION.validate_python(window)
    return draft


def _default_target(raw_name: str) -> str:
    lowered = mapped_name(raw_name)
    return lowered if lowered in KNOWN else ALIASES.get(lowered, raw_name)
