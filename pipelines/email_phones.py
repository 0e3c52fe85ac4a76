"""Phone numbers written in a mail's text or signature, as contact hints for the inquiry."""

from __future__ import annotations

import re

import phonenumbers
import structlog

log = structlog.get_logger("leadhub.pipeline.email")
MAX_PHONE_SCAN = 20_000  # characters of body text searched (signatures sit near the top of a reply)
# A label starts a word (`\b` before the Cyrillic ones too: "тел" x 7,000 was a label at each of its 7,000 starts,
# each read to the end of the word, 16 s on the event loop); a label after another ("mob.tel.:") still reads.
_LABELLED_PHONE = re.compile(
    r"\b(?:tel|phone|mobile|mob|cell|whatsapp|тел|моб|сот)[\w.]*\s*[.:]?\s*(\+?\d[\d \t().-]{6,20}\d)", re.I
)


def find_phones(text: str, region: str | None) -> list[str]:
    """Phone numbers written in `text` (raw strings, in order, unique). Without `region` the matcher finds only
    international numbers, so numbers labelled as phones ("Tel.: 8 (495) ...") are taken too; the pipeline's
    normalization validates them with the hub's default region."""
    if not text:
        return []
    scan = text[:MAX_PHONE_SCAN]
    found: list[str] = []
    try:
        for match in phonenumbers.PhoneNumberMatcher(scan, region or "ZZ", max_tries=200):
            if match.raw_string not in found:
                found.append(match.raw_string)
    except Exception as exc:  # phonenumbers is a hint source; its failure must not fail the mail
        log.info("email phone search stopped", error=type(exc).__name__)
        return found
    if not region:
        found += [m.group(1).strip() for m in _LABELLED_PHONE.finditer(scan) if m.group(1).strip() not in found]
    return found
