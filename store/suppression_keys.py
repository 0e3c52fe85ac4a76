"""The one form an address takes on the suppression list, whichever way it was written.

A bounce reports the address leadhub sent to, with its domain in ASCII (`maria@xn--e1afmkfd.xn--p1ai`: mail goes
out so), and contacts keep their addresses so; a rule may still write `to` with the domain as people read it
(`maria@пример.рф`). Kept lower-cased only, the two never met: a bounced or unsubscribed address written the
other way was mailed again.
"""

from __future__ import annotations

from leadhub.ascii_domains import ascii_domain


def suppression_key(address: str) -> str:
    """Trimmed, lower-cased, the domain in its ASCII form (IDNA); as it is when the domain has none."""
    return ascii_domain(address.strip().lower())  # a label too long or empty has no ASCII form: kept as written


def lookup_keys(address: str) -> set[str]:
    """What to look for: the key, and the lower-cased address with its domain either way, as releases before
    2026-12 stored it (as written)."""
    key = suppression_key(address)
    local, at, domain = key.rpartition("@")
    if not at:
        return {key}
    try:
        readable = f"{local}@{domain.encode('ascii').decode('idna')}"
    except UnicodeError:  # not a valid IDNA form: only as written
        readable = key
    return {key, readable, address.strip().lower()}
