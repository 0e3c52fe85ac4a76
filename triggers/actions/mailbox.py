"""A rendered `from` / `reply_to` as exactly one mailbox: a contact's name in it stays a display name.

Written into the header as rendered, `{{ contact.name }} <{{ contact.email }}>` with the name
`Eve, eve@evil.example` was two addresses (replies went to Eve), and a name with a line break stopped the
message (the stdlib refuses it) and was retried as if the SMTP server were away.
"""

from __future__ import annotations

from email.utils import formataddr

from leadhub.ascii_domains import ascii_domain

NOT_IN_ADDRESS = frozenset(' \t<>,;:"()[]\\')


class NotAMailbox(ValueError):
    """The rendered value has no single address in it (the option is named, the value is not: it is personal)."""


def mailbox(value: str, option: str) -> str:
    """`Name <address>` (the address in the last angle brackets, all before it the name) or a bare address,
    written back with the name quoted and, if not ASCII, encoded (RFC 2047)."""
    text = " ".join(value.split())
    before, angle, rest = text.rpartition("<")
    if angle:
        address, display = rest.removesuffix(">").strip(), before.strip()
        if not rest.endswith(">"):
            raise NotAMailbox(f"{option}: '<' without a closing '>'")
        if len(display) >= 2 and display[0] == display[-1] == '"':
            display = display[1:-1]  # quoted in the rule; formataddr quotes it again, escaping what is inside
    else:
        address, display = text, ""
    if not is_address(address):
        raise NotAMailbox(f"{option}: not an e-mail address (write `address` or `Name <address>`)")
    return f"{_display(display)} <{address}>" if display else address


def is_address(address: str) -> bool:
    """local@domain and nothing else: none of NOT_IN_ADDRESS (a second address, a name), and no control or format
    character or line separator, which the stdlib's EmailMessage takes for a line break in a header (U+2028,
    U+0085, \\x0b: a ValueError) or which hides in the address (U+200B)."""
    local, at, domain = address.rpartition("@")
    return bool(local and at and domain) and address.isprintable() and not NOT_IN_ADDRESS.intersection(address)


def ascii_mailbox(value: str) -> str:
    """A bare address or `Name <address>` with the address's domain in its ASCII form (`ascii_domain`)."""
    before, angle, rest = value.rpartition("<")
    if angle and rest.endswith(">"):
        return f"{before}<{ascii_domain(rest[:-1])}>"
    return ascii_domain(value)


def optional_mailbox(value: str, option: str) -> str | None:
    """None for a value that rendered blank (`{{ lead.owner_email }}` of nobody): the default sender, no Reply-To."""
    return mailbox(value, option) if value.strip() else None


def _display(name: str) -> str:
    """The name as formataddr writes it: quoted, with what is inside escaped, or RFC 2047 when not ASCII.
    (formataddr itself refuses an internationalised address, which the stdlib's EmailMessage can still send.)"""
    return formataddr((name, "a@b")).removesuffix(" <a@b>")
