"""Read a raw RFC 5322 message into a typed ParsedEmail, tolerating the broken mail real mailboxes hold."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.message import Message
from email.parser import BytesParser
from email.policy import Policy
from email.utils import getaddresses, parsedate_to_datetime

import structlog

from leadhub.pipelines.email_charset import decode_bytes, decode_header_value, guess_order, raw_8bit
from leadhub.pipelines.email_html import html_to_text
from leadhub.pipelines.email_phones import find_phones
from leadhub.pipelines.email_repair import repair_boundary, repair_headers

MAX_REFS = 50
_MSGID = re.compile(r"<([^<>\s]+)>")
_BARE_MSGID = re.compile(r"[^<>\s@\"(),;:]+@[^<>\s@\"(),;:]+")
log = structlog.get_logger("leadhub.pipeline.email")
_NEWLINES = re.compile(r"\r*\n|\r")
_RAW_NAME = re.compile(r'\b(?:file)?name\s*=\s*(?:"([^"]*)"|([^;\s]+))', re.I)
_MIME_TYPE = re.compile(r"[a-z0-9][\w.+-]*/[\w.+-]+")
_WORD_CHARSET = re.compile(r"=\?([^?\s*]+)(?:\*[^?]*)?\?[bBqQ]\?")
_COMMENT_AFTER_PHRASE = re.compile(r"^([^\"(<,]*[^\s\"(<,])\s*\([^()\"]*\)\s*(?=<)")
_QUOTED = re.compile(r'"[^"]*"')
_LOCAL_ONLY = re.compile(r"^[\w.+-]+$")  # "MAILER-DAEMON": an address without a domain, as Zammad reads it
# Starts only where a run of local-part characters starts: from inside one it scanned the rest of the run again
# (quadratic; a 40,000-character From took 8 s on the event loop).
_ADDR = re.compile(r"(?<![\w.!#$%&'*+/=?^`{|}~-])[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class Address:
    email: str  # "" when the header names no usable address
    name: str = ""


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str | None
    content_type: str
    size: int
    sha256: str


@dataclass(slots=True)
class ParsedEmail:
    """What leadhub reads from one message; `message` is the parsed stdlib object for the filters."""

    message: Message
    sender: Address = field(default_factory=lambda: Address(""))
    reply_to: list[Address] = field(default_factory=list)
    to: list[Address] = field(default_factory=list)
    cc: list[Address] = field(default_factory=list)
    subject: str = ""
    text: str = ""
    text_from_html: bool = False
    attachments: list[Attachment] = field(default_factory=list)
    message_id: str | None = None
    in_reply_to: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    date: datetime | None = None
    phones: list[str] = field(default_factory=list)  # raw matches, in order of appearance
    guesses: tuple[str, ...] = ()  # codecs the message declares, for raw 8-bit headers and parts

    def header(self, name: str) -> str:
        """A header decoded to text ("" when absent); several occurrences are joined with ", "."""
        return ", ".join(self.headers(name))

    def headers(self, name: str) -> list[str]:
        return [decode_header_value(value, self.guesses).strip() for value in self.raw_headers(name)]

    def raw_headers(self, name: str) -> list[str]:
        """Each occurrence of a header as written (encoded-words kept), raw 8-bit bytes decoded."""
        lowered = name.lower()
        return [
            raw_8bit(_str(value), self.guesses) for key, value in self.message.raw_items() if key.lower() == lowered
        ]


def _str(value: object) -> str:
    return value if isinstance(value, str) else str(value)


class MessageTooDeep(ValueError):
    """A message whose parts nest past what the parser can walk: hostile or broken, never a real letter."""


def parse_message(raw: bytes, region: str | None = None, *, phones: bool = True) -> ParsedEmail:
    """Parse `raw` with the compat32 policy, the modern one as the fallback.

    Headers are decoded here (raw_headers, email_charset), not by the policy: policy.default's header objects
    cost five times the whole parse and raise on malformed headers, while compat32 hands over the raw values
    and still does MIME structure, transfer decoding and RFC 2231 parameters. policy.default is the second try
    for a message whose compat32 reading fails."""
    raw = repair_headers(raw)
    try:
        return _read(_parse(raw, policy.compat32), region, phones=phones)
    except RecursionError:  # the modern parser recurses the same way, only slower: no second try
        raise MessageTooDeep("MIME parts nested too deeply to read (hundreds of levels)") from None
    except Exception as exc:  # a structure compat32 chokes on: the modern parser may still read it
        log.info("email compat32 reading failed; retrying with policy.default", error=type(exc).__name__)
        return _read(_parse(raw, policy.default), region, phones=phones)


def _parse(raw: bytes, mode: Policy) -> Message:
    """The parsed message; a multipart whose declared boundary never occurs is parsed again with the one used."""
    message = BytesParser(policy=mode).parsebytes(raw)
    if content_type(message).startswith("multipart/") and not message.is_multipart():
        fixed = repair_boundary(raw, str(message.get_param("boundary") or ""))
        if fixed is not None:
            message = BytesParser(policy=mode).parsebytes(fixed)
    return message


def _read(message: Message, region: str | None, *, phones: bool) -> ParsedEmail:
    """Fill a ParsedEmail; the phone search (costly on long machine-written texts) only if `phones`."""
    parsed = ParsedEmail(message=message, guesses=_declared_codecs(message))
    parsed.subject = parsed.header("Subject")
    senders = _addresses(parsed.raw_headers("From"), parsed.guesses)
    parsed.sender = next((a for a in senders if "@" in a.email), senders[0] if senders else Address(""))
    parsed.reply_to = _addresses(parsed.raw_headers("Reply-To"), parsed.guesses)
    parsed.to = _addresses(parsed.raw_headers("To"), parsed.guesses)
    parsed.cc = _addresses(parsed.raw_headers("Cc"), parsed.guesses)
    ids = _message_ids(parsed.header("Message-ID"))
    parsed.message_id = f"<{ids[0]}>" if ids else None
    parsed.in_reply_to = [f"<{i}>" for i in _message_ids(parsed.header("In-Reply-To"))][:MAX_REFS]
    parsed.references = [f"<{i}>" for i in _message_ids(parsed.header("References"))][-MAX_REFS:]
    parsed.date = _date(parsed.header("Date"))
    plain: list[str] = []
    html: list[str] = []
    _walk(message, plain, html, parsed.attachments, parsed.guesses)
    if plain and any(p.strip() for p in plain):
        parsed.text = "\n\n".join(p.strip("\r\n") for p in plain if p.strip())
    elif html:
        parsed.text = "\n\n".join(html_to_text(h) for h in html)
        parsed.text_from_html = True
    parsed.text = _NEWLINES.sub("\n", parsed.text).replace("\x00", "")  # one newline style; PostgreSQL refuses NUL
    if phones:
        parsed.phones = find_phones(parsed.text, region)
    return parsed


def _message_ids(value: str) -> list[str]:
    """The ids in angle brackets; else the whole value when it is one bare `left@right` (a PHP form mailer writes
    its Message-Id so, and a reply names it in brackets: unread, the reply could not find its thread)."""
    return _MSGID.findall(value) or ([value.strip()] if _BARE_MSGID.fullmatch(value.strip()) else [])


def _declared_codecs(message: Message) -> tuple[str, ...]:
    """The codecs named by the message's parts (charset parameters) and encoded-words, best guess first."""
    labels: list[str | None] = [_part_charset(part) for part in message.walk()]
    for _key, value in message.raw_items():
        labels.extend(_WORD_CHARSET.findall(_str(value)))
    return guess_order(labels)


def _addresses(values: list[str], guesses: tuple[str, ...]) -> list[Address]:
    """Addresses from raw header values: split first (display names may hold commas once decoded), then decode."""
    found: list[Address] = []
    for value in values:
        raw = _COMMENT_AFTER_PHRASE.sub(r"\1 ", value.replace("\r", " ").replace("\n", " "))
        try:
            pairs = getaddresses([raw])
        except (ValueError, IndexError, TypeError, RecursionError):  # pathological input (nested comments recurse)
            pairs = []
        pairs = [(n, a) for n, a in pairs if n or a]
        if not pairs or any(" " in _QUOTED.sub("", a.strip()) for _, a in pairs):
            pairs = _loose_pairs(raw)
        for name, addr in pairs:
            email = addr.strip().strip("<>").strip()
            label = name
            if "@" not in email and not _LOCAL_ONLY.match(email):
                label, email = (name or addr), ""
            found.append(Address(email=email, name=_clean_name(decode_header_value(label, guesses), email)))
    return found


def _loose_pairs(raw: str) -> list[tuple[str, str]]:
    """Pairs for headers the strict parser rejects: each address-looking token, the text before it as the name."""
    matches = list(_ADDR.finditer(raw))
    if not matches:
        return [(raw.strip(), "")] if raw.strip() else []
    pairs: list[tuple[str, str]] = []
    start = 0
    for match in matches:
        name = raw[start : match.start()].strip(" ,;<\"'")
        pairs.append((name, match.group(0)))
        start = match.end() + 1
    return pairs


def _clean_name(name: str, email: str) -> str:
    name = re.sub(r"[ \t\r\n]+", " ", name).strip().strip("\"'").strip()
    return "" if name.lower() == email.lower() else name


def _date(value: str) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _walk(
    part: Message, plain: list[str], html: list[str], attachments: list[Attachment], guesses: tuple[str, ...]
) -> None:
    """Collect inline text parts and attachment metadata; attached messages count as attachments, unopened."""
    ctype = content_type(part)
    if part.is_multipart() and not ctype.startswith("message/"):
        for child in part.get_payload() or []:
            if isinstance(child, Message):
                _walk(child, plain, html, attachments, guesses)
        return
    filename = _filename(part, guesses)
    disposition = _disposition(part)
    data = _payload(part)
    if ctype.startswith("multipart/"):  # a multipart whose parts could not be found: its body is the text
        ctype = "text/plain"
    inline_text = ctype in ("text/plain", "text/html") and disposition != "attachment" and not filename
    if inline_text:
        text = decode_bytes(data, _part_charset(part), guesses)
        (plain if ctype == "text/plain" else html).append(text)
    else:
        attachments.append(Attachment(filename, ctype, len(data), hashlib.sha256(data).hexdigest()))


def content_type(part: Message) -> str:
    """The part's content type; a malformed Content-Type reads as text/plain, as RFC 2045 says."""
    try:
        declared = part.get_content_type()
    except Exception:  # a malformed Content-Type reads as plain text, as RFC 2045 says
        return "text/plain"
    match = _MIME_TYPE.match(declared)  # "text/plain   charset=x" (a missing ";") is still text/plain
    return match.group(0) if match else "text/plain"


def _disposition(part: Message) -> str | None:
    try:
        return part.get_content_disposition()
    except Exception:
        return None


def _part_charset(part: Message) -> str | None:
    try:
        return part.get_content_charset()
    except Exception:
        return None


def _filename(part: Message, guesses: tuple[str, ...]) -> str | None:
    """The attachment name: RFC 2231 parameters via the stdlib, then `name=`; encoded-words decoded too."""
    name: object = None
    try:
        name = part.get_filename() or part.get_param("name")
    except Exception:  # broken RFC 2231 continuations
        name = None
    if isinstance(name, tuple):  # compat32 returns RFC 2231 values as (charset, language, text)
        try:
            name = decode_bytes(name[2].encode("latin-1", "surrogateescape"), name[0])
        except Exception:
            name = name[2]
    if isinstance(name, str) and "\ufffd" in name:  # compat32 replaced raw 8-bit bytes: read the raw header
        name = _raw_param_filename(part, guesses) or name
    if not name:
        return None
    return decode_header_value(_str(name), guesses).strip() or None


def _raw_param_filename(part: Message, guesses: tuple[str, ...]) -> str | None:
    for key, value in part.raw_items():
        if key.lower() in ("content-disposition", "content-type"):
            match = _RAW_NAME.search(_str(value))
            if match:
                return raw_8bit(match.group(1) or match.group(2), guesses)
    return None


def _payload(part: Message) -> bytes:
    """The decoded bytes of a leaf part; an attached message as its serialised bytes."""
    if content_type(part).startswith("message/") or part.is_multipart():
        inner = part.get_payload()
        if isinstance(inner, list):
            return b"".join(_as_bytes(m) for m in inner if isinstance(m, Message))
        return _as_bytes(part)
    try:
        data = part.get_payload(decode=True)
    except Exception:  # garbage transfer encodings
        data = None
    if isinstance(data, bytes):
        return data
    raw = part.get_payload()
    return raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""


def _as_bytes(message: Message) -> bytes:
    try:
        return message.as_bytes(policy=policy.compat32)
    except Exception:  # unserialisable broken parts: size and hash of their text instead
        return _str(message.get_payload()).encode("utf-8", "surrogateescape")
