"""Normalization of what people type: e-mail addresses, phone numbers to E.164, names."""

from __future__ import annotations

import re
import unicodedata

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from leadhub.pipelines.model import Identity

_SPACES = re.compile(r"\s+")
# Characters that show nothing: controls (but the separators, which read as spaces), direction marks, embeddings,
# overrides and isolates, zero-width space, word joiner, BOM. In a name an ESC sequence or an RTL override rewrites
# what a person sees, and a name of nothing but these hid the contact's real name (an empty name takes a later one);
# in an address, copied from a page or a right-to-left text, they made it no address at all. ZWJ and ZWNJ stay:
# inside a word they are spelling (Persian, Indic scripts).
_INVISIBLE = re.compile(
    r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\u200b\u200e\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]"
)
NAME_LENGTH = 200  # contact.name and company
# Plain ASCII addresses, which are nearly all of them, skip email-validator (a third of the pipeline's
# CPU for this step). The pattern accepts only what email-validator accepts and normalizes the same way
# (tests/pipelines/test_normalize.py proves it with generated addresses); anything else goes the long way.
_SIMPLE_EMAIL = re.compile(
    r"(?P<local>[a-z0-9_+=-]{1,64}(?:\.[a-z0-9_+=-]+)*)@(?P<domain>(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
    r"(?P<tld>[a-z]{2,63}))"
)
_SPECIAL_USE_TLDS = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


def _simple_email(text: str) -> str | None:
    if not text.isascii() or len(text) > 254:
        return None
    lowered = text.lower()
    match = _SIMPLE_EMAIL.fullmatch(lowered)
    if not match or len(match["local"]) > 64 or "--" in match["domain"] or match["tld"] in _SPECIAL_USE_TLDS:
        return None
    return lowered


def normalize_email(value: str | None) -> str | None:
    """Trimmed and lower-cased, with an IDNA domain; None when it is not an address at all."""
    if not value:
        return None
    text = _INVISIBLE.sub("", value).strip().strip("<>").strip()
    if simple := _simple_email(text):
        return simple
    try:
        checked = validate_email(text, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError:
        return None
    local, _, _ = checked.normalized.rpartition("@")
    return f"{local.lower()}@{checked.ascii_domain.lower()}"


def normalize_phone(value: str | None, region: str | None) -> str | None:
    """E.164 (`+79161234567`) or None when the number is not valid; extensions are dropped."""
    if not value:
        return None
    text = value.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    number.extension = None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# Fewer digits than this are no number to recognise a person by: placeholders (`0`, `123`), PBX extensions (2-5
# digits) and digits from a note. The shortest subscriber numbers in use, local numbers of small towns written
# without their area code, have six.
PHONE_DIGITS_MIN = 6
PHONE_DIGITS_MAX = 32  # more is no number but a text of digits (column `contact_identifier.value` holds 320)
_RUNS = "01234567890123456789", "98765432109876543210"


def phone_digits(value: str | None) -> str | None:
    """The digits of a number that is no valid phone number, as written (no region guessed), to recognise the
    same caller by; None for a valid number (its E.164 form does that), for too few digits, and for fillers a
    form was given to get past a required field (one digit repeated, a run such as `123456`)."""
    if not value or normalize_phone(value, None) is not None:
        return None
    digits = "".join(str(unicodedata.decimal(c)) for c in value if c.isdecimal())  # ٠١٢ and full-width too
    if not PHONE_DIGITS_MIN <= len(digits) <= PHONE_DIGITS_MAX or len(set(digits)) == 1:
        return None
    return None if any(digits in run for run in _RUNS) else digits


def normalize_name(value: str | None) -> str | None:
    """Collapsed whitespace; a name written all in lower or all in upper case gets title case, any other is kept.

    Decided for the whole name, not word by word: `ИП Иванов И.И.` or `ronald McDonald` were written with
    care and stay as written, while `IVAN PETROV` (caps lock) becomes `Ivan Petrov`.
    Cut to the column (200) before the case is decided, so the stored name normalizes to itself: a cut after it
    left a trailing space or half a word that the next pass read differently.
    """
    text = _collapse(value)
    if text is None or not (text.islower() or text.isupper()):
        return text
    text = text.title()
    if len(text) > NAME_LENGTH and " " in text[: NAME_LENGTH + 1]:  # title case lengthened a word (ß -> Ss)
        text = text[: NAME_LENGTH + 1].rsplit(" ", 1)[0]  # whole words only: a cut word would be re-cased next time
    return text[:NAME_LENGTH].rstrip() or None


def normalize_company(value: str | None) -> str | None:
    """Collapsed whitespace, cut to the column; the case is never changed: `IBM`, `ACME LLC` stay as written."""
    return _collapse(value)


def _collapse(value: str | None) -> str | None:
    """Invisible characters gone, whitespace collapsed, cut to the column; None when nothing visible is left."""
    if not value:
        return None
    text = _SPACES.sub(" ", _INVISIBLE.sub("", value)).strip()[:NAME_LENGTH].rstrip()
    return text if any(unicodedata.category(c)[0] not in "CZ" for c in text) else None


def normalize_identity(identity: Identity, region: str | None) -> Identity:
    return Identity(
        name=normalize_name(identity.name),
        email=normalize_email(identity.email),
        phone=(phone := normalize_phone(identity.phone_raw, region)),
        phone_raw=identity.phone_raw,
        phone_digits=None if phone else phone_digits(identity.phone_raw),
        company=normalize_company(identity.company),
        messenger=_clean_id(identity.messenger, 100),
        customer_id=_clean_id(identity.customer_id, 200),
    )


def _clean_id(value: str | None, limit: int) -> str | None:
    """Without invisible characters: PostgreSQL refuses NUL (the batch failed on every try), and an id with a
    zero-width space is the same account."""
    text = _INVISIBLE.sub("", value).strip() if value else None
    return text[:limit] if text else None


_GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})


def fold_email(address: str) -> str:
    """The key two spellings of one mailbox share: Gmail ignores dots and `+tags` in the local part.

    Only Gmail is folded: other providers treat dots as significant, so folding them would merge
    different people. The contact keeps the address as written; only its identifier is folded.
    """
    local, _, domain = address.rpartition("@")
    if domain not in _GMAIL_DOMAINS:
        return address
    local = local.split("+", 1)[0].replace(".", "")
    return f"{local}@gmail.com" if local else address


_CONSENT_FIELDS = ("consent", "marketing_consent", "gdpr_consent", "subscribe")
_YES = frozenset({"1", "true", "yes", "on", "y", "да"})
_NO = frozenset({"0", "false", "no", "off", "n", "нет"})


def consent_from_fields(fields: dict[str, object]) -> str | None:
    """`granted` / `withdrawn` when a form said so in a consent field; None when it did not ask."""
    for name in _CONSENT_FIELDS:
        value = fields.get(name)
        if isinstance(value, bool):
            return "granted" if value else "withdrawn"
        if isinstance(value, str | int):
            text = str(value).strip().lower()
            if text in _YES:
                return "granted"
            if text in _NO:
                return "withdrawn"
    return None
