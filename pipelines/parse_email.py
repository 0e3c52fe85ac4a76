"""Parse step for `imap` envelopes: a raw message becomes an inquiry draft, or a dropped one with the reason."""

from __future__ import annotations

import re
from typing import Any

import structlog

from leadhub.envelope import Envelope
from leadhub.pipelines.email_bounces import complained_recipients, failed_recipients
from leadhub.pipelines.email_filters import drop_reason
from leadhub.pipelines.email_parse import Address, ParsedEmail, parse_message
from leadhub.pipelines.email_phones import find_phones
from leadhub.pipelines.errors import PermanentError
from leadhub.pipelines.model import Identity, InquiryDraft

log = structlog.get_logger("leadhub.pipeline.email")

MB = 1024 * 1024
DEFAULT_MAX_BYTES = 25 * MB
HEAD_LIMIT = 256 * 1024  # where the headers of a too large message are looked for
MAX_ADDRESSES = 100  # per header, kept in `fields` (a mail to a whole list must not bloat the row)
MAX_ATTACHMENTS = 200
MAX_TEXT = 64 * 1024  # characters of body kept on the inquiry and lead; the raw message keeps the rest
_NO_REPLY = re.compile(
    r"^(no[-_.]?reply|do[-_.]?not[-_.]?reply|donotreply|noreply|mailer|forms?|form-?mailer|webform|wordpress|"
    r"notifications?|robot|system|daemon)([-_.+].*)?@",
    re.I,
)


def parse_email(envelope: Envelope, options: dict[str, Any]) -> InquiryDraft:
    """Read the message; PermanentError (dead letter, raw bytes kept) if it cannot be read at all."""
    if "unreadable" in envelope.meta:
        return _unreadable(envelope)
    limit = int(options.get("max_message_bytes") or DEFAULT_MAX_BYTES)
    size = _declared_size(envelope)
    if size > limit or "too_large" in envelope.meta:
        return _too_large(envelope, size)
    try:
        parsed = parse_message(envelope.payload, phones=False)
        return _draft(envelope, parsed, options)
    except Exception as exc:
        log.warning("email cannot be parsed", key=envelope.key, error=type(exc).__name__)
        raise PermanentError(f"message cannot be parsed: {type(exc).__name__}: {exc}") from exc


def _too_large(envelope: Envelope, size: int) -> InquiryDraft:
    """Dropped, its raw bytes kept as the payload; sender and subject read from the headers for the record."""
    draft = InquiryDraft(envelope=envelope, dropped=f"too large: {size} bytes", fields={"size": size})
    end = envelope.payload.find(b"\r\n\r\n", 0, HEAD_LIMIT)
    end = end if end >= 0 else envelope.payload.find(b"\n\n", 0, HEAD_LIMIT)
    try:
        parsed = parse_message(envelope.payload[: end if end >= 0 else HEAD_LIMIT], phones=False)
    except Exception:  # the headers are only a courtesy here; the drop stands either way
        log.warning("email headers of a too large message cannot be read", key=envelope.key)
        return draft
    contact = _contact(parsed)
    draft.identity = Identity(name=contact.name or None, email=contact.email or None)
    draft.title = parsed.subject[:300] or None
    draft.message_id = parsed.message_id
    return draft


def _unreadable(envelope: Envelope) -> InquiryDraft:
    """The connector's placeholder for a message the server would not deliver: dropped, the answer as the reason."""
    meta = envelope.meta
    reason = f"unreadable: the server could not deliver message UID {meta.get('uid')}: {meta['unreadable']}"
    return InquiryDraft(envelope=envelope, dropped=reason[:200])


def _declared_size(envelope: Envelope) -> int:
    """The message's full size: the connector says so for a message it truncated."""
    try:
        return max(int(envelope.meta.get("too_large") or 0), len(envelope.payload))
    except (TypeError, ValueError):
        return len(envelope.payload)


def _draft(envelope: Envelope, parsed: ParsedEmail, options: dict[str, Any]) -> InquiryDraft:
    contact = _contact(parsed)
    fields: dict[str, Any] = {
        "from": _addr(parsed.sender),
        "to": [_addr(a) for a in parsed.to[:MAX_ADDRESSES]],
        "cc": [_addr(a) for a in parsed.cc[:MAX_ADDRESSES]],
        "reply_to": [_addr(a) for a in parsed.reply_to[:MAX_ADDRESSES]],
        "date": parsed.date.isoformat() if parsed.date else None,
        "attachments": [
            {"filename": a.filename, "content_type": a.content_type, "size": a.size, "sha256": a.sha256}
            for a in parsed.attachments[:MAX_ATTACHMENTS]
        ],
    }
    if parsed.text_from_html:
        fields["text_from_html"] = True
    # The most specific first: the message replied to, then the thread from its newest end.
    refs = list(dict.fromkeys(parsed.in_reply_to + parsed.references[::-1]))
    draft = InquiryDraft(
        envelope=envelope,
        identity=Identity(
            name=contact.name or None,
            email=contact.email or None,
        ),
        message=parsed.text[:MAX_TEXT] or None,
        title=parsed.subject[:300] or None,
        fields=fields,
        message_id=parsed.message_id,
        thread_refs=refs,
    )
    draft.dropped = drop_reason(parsed, options.get("own_addresses") or ())
    if not draft.dropped:
        _add_phones(draft, parsed, options.get("default_region"))
    if draft.dropped and draft.dropped.startswith("bounce") and (bounced := failed_recipients(parsed)):
        fields["bounce"] = bounced  # the store suppresses the undeliverable ones
    if draft.dropped and draft.dropped.startswith("complaint") and (complained := complained_recipients(parsed)):
        fields["complaint"] = complained  # the store suppresses them: they marked our mail as spam
    return draft


def _add_phones(draft: InquiryDraft, parsed: ParsedEmail, region: str | None) -> None:
    """Phone numbers in the text, kept on the inquiry (`fields.phones`) for a person to read; never an identifier.

    The text holds quoted replies and forwarded signatures: a customer replying under our manager's signature
    would be given the manager's phone, and every such customer merged into one contact.
    """
    parsed.phones = find_phones(parsed.text, region)
    if parsed.phones:
        draft.fields["phones"] = parsed.phones[:10]


def _contact(parsed: ParsedEmail) -> Address:
    """Who wrote: From, or Reply-To when From is a no-reply or form-mailer address or names no address."""
    sender = parsed.sender
    reply = next((a for a in parsed.reply_to if a.email), None)
    if reply and ("@" not in sender.email or _NO_REPLY.match(sender.email)):
        return reply
    return sender


def _addr(address: Address) -> dict[str, str]:
    return {"email": address.email, "name": address.name}
