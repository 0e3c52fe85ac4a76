"""An e-mail address with its domain in ASCII (IDNA), shared by the mail sender and the suppression list."""

from __future__ import annotations


def ascii_domain(address: str) -> str:
    """`maria@xn--e1afmkfd.xn--p1ai` for `maria@пример.рф`: a non-ASCII domain has an ASCII form (IDNA) that every
    SMTP server takes, so only a non-ASCII local part needs SMTPUTF8. Unchanged when it has none (a label too long)."""
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():  # no @: no domain (the whole text is not one)
        return address
    try:
        return f"{local}{at}{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return address
