"""Outgoing email as bytes, written directly: the stdlib's EmailMessage parsed every header back through its
header registry, which was most of the scheduler's CPU per email. Anything unusual (a non-ASCII address,
a line break in a header) returns None and the caller builds the message with EmailMessage as before.
"""

from __future__ import annotations

import base64
import hashlib
from email.header import Header
from email.utils import formataddr, parseaddr

ADDRESS_HEADERS = frozenset({"From", "To", "Reply-To"})
MAX_LINE = 998
CRLF = "\r\n"


def _header(name: str, value: str) -> str | None:
    if "\r" in value or "\n" in value:
        return None
    if value.isascii():
        return f"{name}: {value}" if len(name) + len(value) + 2 <= MAX_LINE else None
    if name in ADDRESS_HEADERS:
        display, address = parseaddr(value)
        if not address.isascii() or not display:
            return None  # an internationalised address: leave it to EmailMessage
        return f"{name}: {formataddr((display, address), charset='utf-8')}"
    return f"{name}: " + Header(value, "utf-8", header_name=name).encode(linesep=CRLF)


def _part(subtype: str, body: str) -> list[str]:
    text = body.replace("\r\n", "\n").replace("\r", "\n")
    text += "" if text.endswith("\n") else "\n"  # as the stdlib does: a part ends with a line break
    lines = text.split("\n")[:-1]
    if all(len(line) <= MAX_LINE for line in lines) and text.isascii():
        cte, payload = "7bit", lines
    elif all(len(line.encode()) <= MAX_LINE for line in lines):
        cte, payload = "8bit", lines
    else:
        cte, payload = "base64", base64.encodebytes(text.encode()).decode("ascii").splitlines()
    return [f'Content-Type: text/{subtype}; charset="utf-8"', f"Content-Transfer-Encoding: {cte}", "", *payload]


def build(headers: list[tuple[str, str]], text: str | None, html: str | None) -> bytes | None:
    """The message (CRLF line ends) with a text part, an HTML part, or both as multipart/alternative."""
    lines: list[str] = []
    for name, value in headers:
        line = _header(name, value)
        if line is None:
            return None
        lines.append(line)
    lines.append("MIME-Version: 1.0")
    if text is not None and html is not None:
        boundary = "=_" + hashlib.sha256("".join(v for _, v in headers).encode()).hexdigest()[:32]
        lines += [f'Content-Type: multipart/alternative; boundary="{boundary}"', "", ""]
        for subtype, body in (("plain", text), ("html", html)):
            lines += [f"--{boundary}", *_part(subtype, body), ""]
        lines += [f"--{boundary}--", ""]
    elif html is not None:
        lines += [*_part("html", html), ""]
    else:
        lines += [*_part("plain", text or ""), ""]
    return CRLF.join(lines).encode("utf-8")
