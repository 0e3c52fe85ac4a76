"""The failed recipients of a bounce: RFC 3464 delivery-status fields first, typical MTA texts otherwise."""

from __future__ import annotations

import re
from email.message import Message
from typing import Any

from leadhub.pipelines.email_charset import decode_bytes
from leadhub.pipelines.email_filters import bounce, null_sender, report
from leadhub.pipelines.email_parse import ParsedEmail, content_type

MAX_RECIPIENTS = 50
MAX_SCAN = 50_000
_ADDR = r"(?<![\w.+-])[\w.!#$%&'*+/?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+"
# Lines start with `[ \t]*`, not `\s*`: in MULTILINE mode `^\s*` at every line start ran over all the blank lines
# after it again (quadratic: a bounce text of 50,000 newlines took over three minutes on the event loop).
_TEXT_PATTERNS = tuple(
    re.compile(p, re.I | re.M)
    for p in (
        rf"^[ \t]*<({_ADDR})>:?\s*(?:\(|$|host|mailbox|user|recipient|\d{{3}}|said|Sorry|The)",  # postfix, qmail
        rf"^[ \t]*<?({_ADDR})>?[ \t]*\r?\n\s*(?:SMTP error|retry time|host \S+ \[|Unrouteable|all relevant|"
        r"mailbox is full|\(generated from|The mail server)",  # exim
        rf"following (?:address(?:es)?|recipients?)[^\n]*(?:failed|errors?|delivered)[^\n]*:?\s*\n+\s*<?({_ADDR})>?",
        rf"(?:delivery to|could not be delivered to|undeliverable to|not delivered to|failed recipient:?)"
        rf"[^\n<@]{{0,40}}<?({_ADDR})>?",
        rf"(?:recipient|address|user)(?: address)?(?: rejected| unknown| not found)?:\s*<?({_ADDR})>?",
        rf"<({_ADDR})>\.{{3}}\s*(?:User unknown|Deferred|\d{{3}})",  # sendmail transcript
        rf"^[ \t]*({_ADDR})\s*$(?=[\s\S]{{0,200}}(?:550|553|554|5\.\d\.\d|user unknown|does not exist))",
    )
)
_TEXT_ADDR = re.compile(r"(?<![\w.+'-])[\w.!#$%&'*+/?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")  # no "=": "SMTP=user@host" forms
_NOT_RECIPIENT = re.compile(
    r"^(mailer[-_.]?daemon|post[-_.]?master|mail[-_.]?daemon|root|abuse|hostmaster|webmaster|noreply|no-reply|"
    r"bounces?|bounce[-+].*|.*-bounces(\+.*)?|owner-.*|.*-owner|.*-request|help|support|admin)@",
    re.I,
)
# Where the returned message or its headers begin: addresses after this are the original's, not failures.
_RETURNED = re.compile(
    r"^[ \t>|-]*(-+ ?)?(original message|message headers follow|original message follows|the original message|"
    r"returned message|below this line is a copy|message text follows|headers of the original|"
    r"a copy of the original|this is a copy of|----- ?transcript|Received: from|Return-Path:|From:\s)",
    re.I | re.M,
)
_BAD_ADDRESS_STATUS = ("5.1.0", "5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10", "5.2.1")
_NO_SUCH_ADDRESS = re.compile(
    r"(user unknown|unknown (user|recipient|address|mailbox)|no such (user|mailbox|recipient|address|domain)|"
    r"(user|mailbox|recipient|address|account|domain)( name)? (does not|doesn't|did not) exist|"
    r"invalid (recipient|mailbox|address|user)|recipient (address )?rejected|mailbox (is )?(unavailable|not found)|"
    r"(user|recipient|address|mailbox) not found|unrouteable|host (or domain name )?not found|"
    r"domain (not found|does not exist)|no mx|account (has been |is )?(disabled|deactivated|suspended)|"
    r"not listed in|name service error|bad destination|not a valid|unknown local part|no mailbox here|"
    r"address (is )?(invalid|unknown)|ユーザ.*存在しません|宛先.*存在しません|не существует|нет такого)",
    re.I,
)
_SES_RECIPIENT = re.compile(r'\\?"emailAddress\\?"\s*:\s*\\?"([^"\\]+@[^"\\]+)\\?"')


def failed_recipients(parsed: ParsedEmail) -> list[dict[str, Any]]:
    """Each failed address with its status and whether the failure is permanent (no address twice)."""
    found = _from_dsn(parsed.message)
    if not found:
        header = parsed.header("X-Failed-Recipients")
        found = [_entry(a, None, None, parsed.text[:5000]) for a in _TEXT_ADDR.findall(header)]
    if not found and "bouncedRecipients" in parsed.text:
        text = parsed.text[:MAX_SCAN]
        status = "5.0.0" if re.search(r'bounceType\\?"\s*:\s*\\?"Permanent', text) else "4.0.0"
        found = [_entry(a, status, None, text) for a in _SES_RECIPIENT.findall(text)]
    if not found:
        found = _from_text(parsed)
        if not _mail_system_sent(parsed):
            found = [_without_status_unproven(item) for item in found]
    unique: dict[str, dict[str, Any]] = {}
    for item in found:
        unique.setdefault(item["address"], item)
    return list(unique.values())[:MAX_RECIPIENTS]


def _mail_system_sent(parsed: ParsedEmail) -> bool:
    """A delivery-status part, X-Failed-Recipients, a daemon or an empty envelope sender: a mail system wrote it."""
    return any(check(parsed) for check in (report, bounce, null_sender))


def _without_status_unproven(item: dict[str, Any]) -> dict[str, Any]:
    """A bounce known only by its subject and text may be a customer's own words ("the old address x@y was closed,
    our mail server says user unknown"): an address is undeliverable only when an SMTP status stands beside it."""
    return {**item, "undeliverable": item["undeliverable"] and item["status"] is not None}


def _entry(address: str, status: str | None, action: str | None, diagnostic: str = "") -> dict[str, Any]:
    """One failed recipient; `undeliverable` when the failure is about the address itself (unknown user or
    domain, disabled mailbox), not about the message, the sender or a full mailbox."""
    status = (status or "").strip().split(" ", 1)[0] or None
    action = (action or "").strip().lower() or None
    temporary = (status or "").startswith("4") or action in ("delayed", "relayed", "delivered", "expanded")
    bad_address = (status or "").startswith(_BAD_ADDRESS_STATUS) or bool(_NO_SUCH_ADDRESS.search(diagnostic))
    return {
        "address": address.strip().strip("<>\"'`.,;:").lower(),
        "status": status,
        "action": action,
        "permanent": not temporary,
        "undeliverable": not temporary and bad_address,
    }


def _from_dsn(message: Message) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for part in message.walk():
        if content_type(part) not in ("message/delivery-status", "message/global-delivery-status"):
            continue
        for fields in _status_blocks(part):
            for name in ("final-recipient", "original-recipient", "x-actual-recipient"):
                address = _TEXT_ADDR.search((fields.get(name) or "").split(";", 1)[-1])
                if address:
                    diagnostic = fields.get("diagnostic-code") or ""
                    found.append(_entry(address.group(0), fields.get("status"), fields.get("action"), diagnostic))
    return found


def _status_blocks(part: Message) -> list[dict[str, str]]:
    """The per-message and per-recipient field groups of a delivery-status part, names lowercased."""
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks = [{str(k).lower(): str(v) for k, v in b.items()} for b in payload if isinstance(b, Message)]
        if any("final-recipient" in b or "original-recipient" in b for b in blocks):
            return blocks
    raw = part.get_payload(decode=True)
    text = decode_bytes(raw, None) if isinstance(raw, bytes) else str(payload or "")
    blocks = []
    for chunk in re.split(r"\r?\n\s*\r?\n", text):
        fields: dict[str, str] = {}
        for line in re.sub(r"\r?\n[ \t]+", " ", chunk).splitlines():
            name, sep, value = line.partition(":")
            if sep:
                fields[name.strip().lower()] = value.strip()
        blocks.append(fields)
    return blocks


def _from_text(parsed: ParsedEmail) -> list[dict[str, Any]]:
    """Addresses the bounce text names before the returned message starts: known MTA phrasings first,
    then any address there that is not the bounce's own parties, then the returned message's To."""
    text = parsed.text[:MAX_SCAN]
    cut = _RETURNED.search(text, 40)
    head = text[: cut.start()] if cut else text
    own = {a.email.lower() for a in (parsed.sender, *parsed.to, *parsed.reply_to)} | _returned_senders(parsed)

    def usable(address: str) -> bool:
        return address.lower() not in own and not _NOT_RECIPIENT.match(address)

    for pattern in _TEXT_PATTERNS:
        hits = [m for m in pattern.finditer(text) if usable(m.group(1))]
        if hits:
            return [_entry(m.group(1), _status_near(text, m.end()), None, _around(text, m)) for m in hits]
    hits = [m for m in _TEXT_ADDR.finditer(head) if usable(m.group(0))]
    if hits:
        return [_entry(m.group(0), _status_near(head, m.end()), None, _around(head, m)) for m in hits]
    return [_entry(a, None, None) for a in _returned_recipients(parsed) if usable(a)][:1]


def _around(text: str, match: re.Match[str]) -> str:
    return text[max(0, match.start() - 300) : match.end() + 400]


def _returned_parts(parsed: ParsedEmail) -> list[Message]:
    parts: list[Message] = []
    for part in parsed.message.walk():
        if content_type(part) == "message/rfc822":
            inner = part.get_payload()
            parts.extend(m for m in (inner if isinstance(inner, list) else []) if isinstance(m, Message))
    return parts


def _returned_senders(parsed: ParsedEmail) -> set[str]:
    found = set()
    for message in _returned_parts(parsed):
        for name in ("From", "Sender", "Return-Path", "Reply-To"):
            found.update(a.lower() for a in _TEXT_ADDR.findall(str(message.get(name, ""))))
    return found


def _returned_recipients(parsed: ParsedEmail) -> list[str]:
    return [a for m in _returned_parts(parsed) for a in _TEXT_ADDR.findall(str(m.get("To", "")))]


def _status_near(text: str, pos: int) -> str | None:
    """The status an MTA gives after an address: an enhanced code, or a reply code ("550 ", "[Error Code 550]")."""
    match = re.search(r"\b([45]\.\d{1,3}\.\d{1,3})\b|\b([45]\d\d)(?:[ -]|\])", text[pos : pos + 400])
    if not match:
        return None
    return match.group(1) or f"{match.group(2)[0]}.0.0"


_COMPLAINT_FIELD = re.compile(r"^(?:Original-Rcpt-To|Removal-Recipient)[ \t]*:[ \t]*(.+)$", re.I | re.M)
_SES_COMPLAINED = re.compile(r"complainedRecipients.{0,2000}", re.S)


def complained_recipients(parsed: ParsedEmail) -> list[str]:
    """Who complained (ARF Original-Rcpt-To / Removal-Recipient, Amazon SES complainedRecipients, else the To
    of the reported message): leadhub must stop mailing them."""
    found: list[str] = []
    for part in parsed.message.walk():
        if content_type(part) == "message/feedback-report":
            payload = part.get_payload()
            text = "\n".join(str(m) for m in payload) if isinstance(payload, list) else str(payload)
            found += [a for value in _COMPLAINT_FIELD.findall(text) for a in _TEXT_ADDR.findall(value)]
    if not found and (ses := _SES_COMPLAINED.search(parsed.text[:MAX_SCAN])):
        found = _SES_RECIPIENT.findall(ses.group(0))
    if not found:
        found = _returned_recipients(parsed)[:1]
    return list(dict.fromkeys(a.strip().strip("<>").lower() for a in found))[:MAX_RECIPIENTS]
