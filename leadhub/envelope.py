"""The Envelope: one inbound item as received, and how it travels as a NATS message.

The body of the NATS message is the payload exactly as received (no base64, no
re-encoding); everything else travels in headers, so a 25 MB email costs 25 MB.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from leadhub.compact_json import compact_encoder
from leadhub.ids import id_for_key
from leadhub.json_errors import JSON_ERRORS, json_error_text

CHANNELS = ("email", "phone", "chat", "form", "shop")

H_KEY = "Leadhub-Key"
H_CHANNEL = "Leadhub-Channel"
H_CONNECTOR = "Leadhub-Connector"
H_RECEIVED = "Leadhub-Received-At"
H_CONTENT_TYPE = "Leadhub-Content-Type"
H_META = "Leadhub-Meta"
H_MSG_ID = "Nats-Msg-Id"
# What the store's columns hold (store/models.py: inquiry.key, .connector, .content_type); longer is not an envelope.
MAX_KEY = 400
MAX_CONNECTOR = 64
MAX_CONTENT_TYPE = 200

_meta_json = compact_encoder(ensure_ascii=False, allow_nan=True)  # json.dumps builds an encoder per call


class EnvelopeError(ValueError):
    """A queue message that is not a well-formed envelope."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """One item from the outside world, keyed for idempotency, before any interpretation."""

    key: str
    channel: str
    connector: str
    payload: bytes
    content_type: str = "application/octet-stream"
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    meta: Mapping[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """The id the stored inquiry will have."""
        return id_for_key(self.key)

    @property
    def subject(self) -> str:
        return f"inbound.{self.channel}.{self.connector}"

    def headers(self, msg_id: str | None = None) -> dict[str, str]:
        """NATS headers; `Nats-Msg-Id` is the key unless a replay needs a fresh one."""
        headers = {
            H_MSG_ID: msg_id or self.key,
            H_KEY: self.key,
            H_CHANNEL: self.channel,
            H_CONNECTOR: self.connector,
            H_RECEIVED: self.received_at.isoformat(),
            H_CONTENT_TYPE: self.content_type,
        }
        if self.meta:
            headers[H_META] = _meta_json(dict(self.meta))
        return headers

    def check(self, content_type_name: str = H_CONTENT_TYPE) -> None:
        """Raise EnvelopeError naming what the pipeline's `from_message` would refuse in this envelope's message.

        A webhook calls it before publishing: what the pipeline cannot take is then a 400 for its sender, not a
        202 followed by a dead letter that no replay can store. The received time and meta are not read back: their
        headers are this envelope's own isoformat and JSON, and every accepted webhook pays for this check.
        A key or content type the queue would change is refused too: the id answered is that of the key sent.
        The errors call the content type `content_type_name`: a webhook's sender sent it as Content-Type.
        """
        identifying = {  # the headers `_check_headers` reads, without encoding the meta (a webhook's hot path)
            H_KEY: self.key,
            H_CHANNEL: self.channel,
            H_CONNECTOR: self.connector,
            H_RECEIVED: "set",  # a datetime: its isoformat is never empty
            H_CONTENT_TYPE: self.content_type,
        }
        _check_headers(identifying, {H_CONTENT_TYPE: content_type_name})
        _check_arrives_as_sent(self.key, self.content_type, content_type_name)

    @classmethod
    def from_message(cls, headers: Mapping[str, str] | None, payload: bytes) -> Envelope:
        """Rebuild an envelope from a queue message; raises EnvelopeError naming what is wrong."""
        headers = headers or {}
        _check_headers(headers)
        try:
            received_at = datetime.fromisoformat(headers[H_RECEIVED])
        except ValueError as exc:
            raise EnvelopeError(f"{H_RECEIVED} is not an ISO timestamp: {exc}") from exc
        meta: dict[str, str] = {}
        if raw_meta := headers.get(H_META):
            try:
                meta = json.loads(raw_meta)
            except JSON_ERRORS as exc:
                raise EnvelopeError(f"{H_META} is not JSON: {json_error_text(exc)}") from exc
            if not isinstance(meta, dict):
                raise EnvelopeError(f"{H_META} must be a JSON object")
        return cls(
            key=headers[H_KEY],
            channel=headers[H_CHANNEL],
            connector=headers[H_CONNECTOR],
            payload=payload,
            content_type=headers.get(H_CONTENT_TYPE, "application/octet-stream"),
            received_at=received_at,
            meta=meta,
        )


def _check_headers(headers: Mapping[str, str], shown: Mapping[str, str] | None = None) -> None:
    """EnvelopeError unless the identifying headers are present, the channel known, and each fits its column;
    `shown` names a header as its sender knows it."""
    shown = shown or {}
    missing = [h for h in (H_KEY, H_CHANNEL, H_CONNECTOR, H_RECEIVED) if not headers.get(h)]
    if missing:
        raise EnvelopeError(f"message lacks header(s) {', '.join(missing)}")
    if headers[H_CHANNEL] not in CHANNELS:
        raise EnvelopeError(f"{H_CHANNEL} {headers[H_CHANNEL][:50]!r} is not one of {', '.join(CHANNELS)}")
    for name, limit in ((H_KEY, MAX_KEY), (H_CONNECTOR, MAX_CONNECTOR), (H_CONTENT_TYPE, MAX_CONTENT_TYPE)):
        if len(headers.get(name, "")) > limit:
            raise EnvelopeError(f"{shown.get(name, name)} is longer than {limit} characters ({len(headers[name])})")
        if "\x00" in headers.get(name, ""):  # PostgreSQL refuses NUL in text: no store could take it
            raise EnvelopeError(f"{shown.get(name, name)} holds a NUL character")


def _check_arrives_as_sent(key: str, content_type: str, content_type_name: str) -> None:
    """EnvelopeError when the queue would change the key or content type on the way: NATS header values are trimmed
    and lose CR/LF (hub/nats_frames.py, as nats-py), so a stored key would give another id than the one answered."""
    for name, value in ((H_KEY, key), (content_type_name, content_type)):
        if "\r" in value or "\n" in value or value != value.strip():
            raise EnvelopeError(
                f"{name} {value[:50]!r} would not arrive as sent: "
                "it starts or ends with whitespace or holds a line break"
            )
