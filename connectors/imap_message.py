"""A fetched message as an Envelope, keyed by the message itself so a re-read is always a duplicate.

Why not `imap:<connector>:<folder>:<uidvalidity>:<uid>`: UIDs are only stable while UIDVALIDITY is. When a
server rebuilds a folder (restore, migration, delete and re-create) every message gets a new UID, and a UID key
would turn the whole folder into new inquiries. The key is therefore
  `imap:<connector>:mid:<sha256(Message-ID, Date)[:32]>` when the message has a Message-ID and a Date,
  `imap:<connector>:mid:<sha256(Message-ID, From, Subject, sha256(body))[:32]>` when it has a Message-ID but
  no Date, else `imap:<connector>:raw:<sha256(raw bytes)[:32]>`.
Message-ID plus Date survives servers that rewrite headers or re-encode bodies on migration; the raw-bytes hash
is exact for the few messages without an id. Some mailers (broken PHP mailers, web-form plugins, JIRA) write one
Message-ID on every message and no Date: keyed by the Message-ID alone, each of their messages after the first
was dropped as a duplicate of it. For those, From, Subject and the body (line endings and trailing whitespace
normalised) tell the messages apart, and a migration, which adds trace headers, re-folds headers and may turn
CRLF into LF, leaves them as they were. The same message filed in two watched folders of one mailbox is one
inquiry, which is what a sales team wants. Folder, UID and UIDVALIDITY travel in `meta`.

A message the server refuses to deliver (connectors/imap_folder.py gives up after a few attempts) has no bytes
to key by; its placeholder is keyed by its place, `imap:<connector>:unreadable:<sha256(folder, UIDVALIDITY,
UID)[:32]>`, so a re-read of the placeholder is a duplicate too.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

from leadhub.envelope import Envelope

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FOLD = re.compile(rb"\r?\n[ \t]+")
_SPACE = re.compile(rb"\s+")
_LINE_END = re.compile(rb"\r\n?")
# Of a truncated message's first 64 KB (imap_session.HEAD_BYTES), the body bytes that key it when it has no Date:
# well inside the part a copy with some KB more headers, or with LF where the other has CRLF, still holds.
TRUNCATED_BODY_BYTES = 16 * 1024


def header_block(raw: bytes) -> bytes:
    """The message's header section (everything before the first empty line), unfolded."""
    match = _HEADER_END.search(raw)
    head = raw[: match.start()] if match else raw
    return _FOLD.sub(b" ", head)


def header_value(head: bytes, name: bytes) -> bytes | None:
    """The first value of header `name` in an unfolded header block, whitespace collapsed; None if absent."""
    match = _header_pattern(name).search(head)
    if match is None:
        return None
    value = _SPACE.sub(b" ", match.group(1)).strip()
    return value or None


@lru_cache(maxsize=16)
def _header_pattern(name: bytes) -> re.Pattern[bytes]:
    return re.compile(rb"^" + re.escape(name) + rb"[ \t]*:(.*)$", re.IGNORECASE | re.MULTILINE)


def message_key(connector: str, raw: bytes, *, body_limit: int | None = None) -> str:
    """The envelope key (ASCII, no spaces: safe as a NATS header value and as `inquiry.key`).

    `body_limit` caps the body bytes (after normalising) that key a message without Date: a truncated message's
    body is cut where its first bytes end, and that place moves when a migration adds headers."""
    head = header_block(raw)
    message_id = header_value(head, b"Message-ID")
    if message_id:
        return f"imap:{connector}:mid:{_message_id_digest(raw, head, message_id, body_limit)}"
    return f"imap:{connector}:raw:{hashlib.sha256(raw).hexdigest()[:32]}"


def _message_id_digest(raw: bytes, head: bytes, message_id: bytes, body_limit: int | None) -> str:
    date = header_value(head, b"Date")
    if date:  # exactly as before: inquiries stored by earlier releases stay duplicates when read again
        return hashlib.sha256(message_id + b"\0" + date).hexdigest()[:32]
    parts = (
        message_id,
        b"no-date",  # hashed in a form of its own: never one of the keys above
        header_value(head, b"From") or b"",
        header_value(head, b"Subject") or b"",
        body_digest(raw, body_limit).encode(),
    )
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:32]


def body_digest(raw: bytes, limit: int | None = None) -> str:
    """sha256 of the body with CRLF/CR turned into LF and trailing whitespace cut (an mbox export adds a line)."""
    match = _HEADER_END.search(raw)
    body = _LINE_END.sub(b"\n", raw[match.end() :]) if match else b""
    if limit is not None:
        body = body[:limit]
    return hashlib.sha256(body.rstrip()).hexdigest()


def truncated_key(connector: str, head: bytes, size: int) -> str:
    """The key of a message over the size limit, from its first bytes (the Message-ID lives in the headers)."""
    key = message_key(connector, head, body_limit=TRUNCATED_BODY_BYTES)
    if ":raw:" in key:  # no Message-ID: the raw hash of a prefix is only stable with the size mixed in
        digest = hashlib.sha256(head + b"\0" + str(size).encode()).hexdigest()[:32]
        key = f"imap:{connector}:raw:{digest}"
    return key


def envelope_for(
    connector: str,
    folder: str,
    uidvalidity: int,
    uid: int,
    raw: bytes,
    *,
    size: int,
    truncated: bool,
    internaldate: str | None,
) -> Envelope:
    """The envelope for one message; a message over the limit carries only its first bytes and `too_large`."""
    meta: dict[str, object] = {"folder": folder, "uid": uid, "uidvalidity": uidvalidity}
    if internaldate:
        meta["internaldate"] = internaldate
    if truncated:
        meta["too_large"] = size
        key = truncated_key(connector, raw, size)
    else:
        key = message_key(connector, raw)
    return Envelope(
        key=key,
        channel="email",
        connector=connector,
        payload=raw,
        content_type="message/rfc822",
        meta=meta,  # type: ignore[arg-type] - ints travel as JSON numbers
    )


def unreadable_envelope(connector: str, folder: str, uidvalidity: int, uid: int, answer: str) -> Envelope:
    """The placeholder for a message the server would not deliver: stored as dropped with the server's answer."""
    place = hashlib.sha256(f"{folder}\0{uidvalidity}\0{uid}".encode()).hexdigest()[:32]
    text = f"The server could not deliver message UID {uid} of {folder} (UIDVALIDITY {uidvalidity}): {answer}\n"
    return Envelope(
        key=f"imap:{connector}:unreadable:{place}",
        channel="email",
        connector=connector,
        payload=text.encode(),
        content_type="text/plain; charset=utf-8",
        meta={"folder": folder, "uid": uid, "uidvalidity": uidvalidity, "unreadable": answer},  # type: ignore[dict-item]
    )
