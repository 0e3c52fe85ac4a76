"""Amazon SES's SMTP interface replaces a message's Message-ID: the one the recipient sees, read from its answer.

SES documents that it overwrites a Message-ID header with its own value (SES developer guide, "Amazon SES header
fields"). Its SMTP interface names that value in the answer to DATA, `250 Ok <id>`; the header the recipient gets
is `<id@email.amazonses.com>` from us-east-1 and `<id@<region>.amazonses.com>` from the other regions. That domain
rule is what SES has written for years, not a documented contract, so it is derived only for SES's own SMTP endpoint
names (`email-smtp[-fips].<region>.amazonaws.com`); `ses_domain=` in LEADHUB_SMTP_URL sets it for anything else (a
VPC endpoint, a relay that passes SES's answer on) or when SES changes it.
"""

from __future__ import annotations

import re

# SES's SMTP endpoints, from the AWS General Reference (docs.aws.amazon.com/general/latest/gr/ses.html).
_SES_SMTP_HOST = re.compile(r"email-smtp(?:-fips)?\.([a-z]{2}(?:-[a-z]+)+-\d+)\.amazonaws\.com", re.IGNORECASE)
# Its message ids: hex groups joined by dashes (`0100018c1f2e3d4c-5b6a7980-...-000000`), nothing else on the line.
_SES_ANSWER = re.compile(r"Ok ([0-9a-f]{8,}(?:-[0-9a-f]+){2,})", re.IGNORECASE)
_DOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+", re.IGNORECASE)
MAX_ID = 500  # email_message.message_id's length


def ses_domain(host: str, configured: str | None) -> str | None:
    """The domain of the Message-IDs SES writes for mail sent through `host`; None when `host` is not SES's."""
    if configured:
        return configured
    match = _SES_SMTP_HOST.fullmatch(host.rstrip("."))
    if match is None:
        return None
    region = match.group(1).lower()
    return "email.amazonses.com" if region == "us-east-1" else f"{region}.amazonses.com"


def valid_domain(domain: str) -> bool:
    """Whether `domain` can be the right side of a Message-ID (`ses_domain=` in LEADHUB_SMTP_URL is checked so)."""
    return len(domain) <= 253 and _DOMAIN.fullmatch(domain) is not None


def ses_message_id(answer: str, domain: str) -> str | None:
    """The Message-ID the recipient sees, from SES's answer to DATA (`Ok <id>`: aiosmtplib gives the text after the
    code); None for an answer of another shape, which names no id leadhub can trust to be the header's."""
    match = _SES_ANSWER.fullmatch(answer.strip())
    if match is None:
        return None
    message_id = f"<{match.group(1)}@{domain}>"
    return message_id if len(message_id) <= MAX_ID else None
