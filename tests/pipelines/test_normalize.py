"""Normalization: the e-mail fast path agrees with email-validator; phones in many spellings become one E.164."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from leadhub.pipelines.model import Identity
from leadhub.pipelines.normalize import (
    _simple_email,
    normalize_email,
    normalize_identity,
    normalize_name,
    normalize_phone,
    phone_digits,
)

LOCAL = st.text(alphabet="abcXYZ019._+=-!#%&'*/?^`{|}~\u212a\u00e9", min_size=0, max_size=20)
LABEL = st.text(alphabet="abcxnZ019-_\u00e9", min_size=0, max_size=12)
TLD = st.sampled_from(["com", "ru", "c", "co1", "test", "local", "museum", "РФ", "xn--p1ai", "ARPA", ""])


@st.composite
def addresses(draw: st.DrawFn) -> str:
    labels = draw(st.lists(LABEL, min_size=1, max_size=3))
    return f"{draw(LOCAL)}@{'.'.join([*labels, draw(TLD)])}"


def _slow(text: str) -> str | None:
    try:
        checked = validate_email(text, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError:
        return None
    local, _, _ = checked.normalized.rpartition("@")
    return f"{local.lower()}@{checked.ascii_domain.lower()}"


@settings(max_examples=1000, deadline=None)
@given(addresses())
def test_fast_path_accepts_only_what_email_validator_accepts_identically(address: str) -> None:
    fast = _simple_email(address)
    if fast is not None:
        assert fast == _slow(address), address


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Ivan.Petrov@Example.COM", "ivan.petrov@example.com"),
        ("  <anna@mail.ru> ", "anna@mail.ru"),
        ("user@пример.рф", "user@xn--e1afmkfd.xn--p1ai"),
        ("a..b@example.com", None),
        ("x@localhost", None),
        ("x@host.test", None),
        ("not an email", None),
        ("", None),
    ],
)
def test_normalize_email(raw: str, expected: str | None) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    "written",
    [
        "8 (916) 123-45-67",
        "+7-916-123-45-67",
        "+7 916 1234567",
        "89161234567",
        "007 916 123 45 67",
        "+7 (916) 123-45-67 ext. 12",
    ],
)
def test_one_phone_many_spellings(written: str) -> None:
    assert normalize_phone(written, "RU") == "+79161234567"


def test_invalid_phone_is_none_and_names_are_tidied() -> None:
    assert normalize_phone("12345", "RU") is None
    assert normalize_phone("+7 916", None) is None
    assert normalize_name("  ivan   petrov ") == "Ivan Petrov"
    assert normalize_name("anna-maria o'neil") == "Anna-Maria O'Neil"
    assert normalize_name("IVAN PETROV") == "Ivan Petrov"
    assert normalize_name("   ") is None


@pytest.mark.parametrize(
    "written",
    ["ronald McDonald", "ИП Иванов И.И.", "Jean-Luc DE LA CROIX", "ivan PETROV", "Anna-Maria O'NEIL"],
)
def test_a_name_in_mixed_case_is_kept_as_written(written: str) -> None:
    """Only a name written all in one case is title-cased: word by word, `ИП` became `Ип` and `DE` became `De`."""
    assert normalize_name(f"  {written}  ") == written


@pytest.mark.parametrize(
    ("written", "kept"),
    [
        ("IBM", "IBM"),
        ("ACME  LLC", "ACME LLC"),
        ("ООО РОГА И КОПЫТА", "ООО РОГА И КОПЫТА"),  # noqa: RUF001
        ("ИП Иванов И.И.", "ИП Иванов И.И."),
        (" acme\tgmbh ", "acme gmbh"),
    ],
)
def test_a_company_keeps_its_case(written: str, kept: str) -> None:
    """Legal forms and acronyms are case-sensitive: `IBM` was stored as `Ibm`, `ACME LLC` as `Acme Llc`."""
    assert normalize_identity(Identity(company=written), "RU").company == kept


@pytest.mark.parametrize(
    ("written", "kept"),
    [
        ("\u200b", None),  # a zero-width space only: no name, so the contact's real name can still fill it
        ("\ufeff \u200e\u200f", None),
        ("\u200c\u200d", None),
        ("Ivan\x1b[31m Petrov", "Ivan[31m Petrov"),  # ESC would recolour a terminal
        ("Ivan\u202e vorteP", "Ivan vorteP"),  # an RTL override reverses what follows it on screen
        ("\u2066Anna\u2069 Smith\x07", "Anna Smith"),
        ("Ivan\u200b \u200bPetrov", "Ivan Petrov"),
        ("Ivan\x00Petrov", "IvanPetrov"),
        ("Ivan\x1fPetrov", "Ivan Petrov"),  # a separator control reads as a space
        ("\u0645\u06cc\u200c\u0631\u0648", "\u0645\u06cc\u200c\u0631\u0648"),  # Persian: ZWNJ inside a word is spelling
    ],
)
def test_a_name_keeps_no_invisible_or_control_characters(written: str, kept: str | None) -> None:
    """A name of only invisible characters was stored as the contact's name, so a later inquiry's real name never
    filled it; control characters and bidirectional overrides rewrote what a person saw in a terminal or a list."""
    assert normalize_name(written) == kept
    assert normalize_identity(Identity(company=written), "RU").company == kept


@pytest.mark.parametrize(
    "written",
    [
        "ivan@mail.ru\u200b",
        "\ufeffivan@mail.ru",
        "\u200eivan@mail.ru\u200f",
        "\u202aIvan@Mail.ru\u202c",
        "iv\u200ban@mail.ru",
    ],
)
def test_an_email_with_invisible_characters_is_the_same_address(written: str) -> None:
    """Copied from a page or a right-to-left text, an address carries zero-width and direction marks; it was refused
    as no address at all, so the inquiry named nobody by email and the person got a second contact."""
    assert normalize_email(written) == "ivan@mail.ru"


@pytest.mark.parametrize(
    ("written", "digits"),
    [
        ("951218115", "951218115"),
        ("(951) 21-81-15", "951218115"),
        ("89161110099", "89161110099"),  # no region given: no valid number
        ("\uff19\uff15\uff11\uff12\uff11\uff18\uff11\uff11\uff15", "951218115"),  # full-width digits, the same
        ("+7 916 111", "7916111"),
        ("+79161234567", None),  # valid: its E.164 names it
        ("0", None),
        ("123", None),
        ("12345", None),  # an extension, a placeholder: too short to name a person
        ("000000", None),
        ("77777777", None),
        ("123456", None),
        ("0987654321", None),
        ("", None),
        (None, None),
    ],
)
def test_an_invalid_number_keeps_its_digits_unless_they_are_junk(written: str | None, digits: str | None) -> None:
    assert phone_digits(written) == digits


def test_only_an_invalid_number_gets_digits() -> None:
    valid = normalize_identity(Identity(phone_raw="89161110099"), "RU")
    invalid = normalize_identity(Identity(phone_raw="89161110099"), None)
    assert (valid.phone, valid.phone_digits) == ("+79161110099", None)
    assert (invalid.phone, invalid.phone_digits) == (None, "89161110099")
