"""Properties of normalization over generated input: normalizing twice changes nothing, e-mail case rules hold,
nothing crashes on arbitrary unicode, and what comes out fits the columns it is stored in."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from leadhub.pipelines.model import Identity
from leadhub.pipelines.normalize import (
    consent_from_fields,
    fold_email,
    normalize_email,
    normalize_identity,
    normalize_name,
    normalize_phone,
)
from leadhub.store.models import Contact, ContactIdentifier

REGIONS = st.sampled_from(["RU", "US", "DE", "GB", "BR", "IN", None])
ANY_TEXT = st.text(st.characters(codec="utf-8"), max_size=400)
# Numbers as people write them: a prefix, digits, separators, sometimes an extension.
PHONES = st.builds(
    lambda prefix, digits, sep, ext: prefix + sep.join(digits) + ext,
    st.sampled_from(["+", "00", "8", "", "+1 ", "+44", "+49 ", "+7 (", "0"]),
    st.lists(st.text(alphabet="0123456789", min_size=1, max_size=5), min_size=2, max_size=5),
    st.sampled_from(["", " ", "-", ") ", "."]),
    st.sampled_from(["", " ext. 12", " доб. 5", "#33", " x9"]),
)
# Mailbox-ish text with the characters that make case and IDNA rules matter (dotless i, sharp s, Kelvin sign).
LOCALS = st.text(
    alphabet="aBzZ09._+-I\u0130\u0131\u1e9e\u00df\u212a\u212b\u01c5\u03a3\u03c3\u03c2\ufb01\u00e9",
    min_size=1,
    max_size=70,
)
LABELS = st.lists(
    st.text(
        alphabet="abcXYZ09-\u0130\u0131\u1e9e\u00df\u212a\u03a3\u03c3\ufb01\u043f\u0440\u0438\u043c\u0435\u0420\u0424",
        min_size=1,
        max_size=70,
    ),
    min_size=1,
    max_size=4,
)
EMAILS = st.builds(
    lambda pad, local, labels, tld: f"{pad}{local}@{'.'.join([*labels, tld])}{pad.replace('<', '>')}",
    st.sampled_from(["", " ", "<", "\t"]),
    LOCALS,
    LABELS,
    st.sampled_from(["com", "COM", "\u0440\u0444", "ru", "De", "museum"]),
)
E164 = re.compile(r"\+[1-9][0-9]+")  # libphonenumber accepts some German numbers longer than 15 digits


def _length(column: object) -> int:
    return int(column.type.length)  # type: ignore[attr-defined]


@settings(max_examples=500, deadline=None)
@given(PHONES | ANY_TEXT, REGIONS)
def test_phone_normalization_is_idempotent_e164_and_fits_its_columns(written: str, region: str | None) -> None:
    phone = normalize_phone(written, region)
    if phone is None:
        return
    assert E164.fullmatch(phone), phone
    assert len(phone) <= min(_length(Contact.__table__.c.phone), _length(ContactIdentifier.__table__.c.value))
    for again_in in (region, None, "US"):  # E.164 carries its country: any region reads it the same
        assert normalize_phone(phone, again_in) == phone


@settings(max_examples=750, deadline=None)
@given(EMAILS | ANY_TEXT)
def test_email_normalization_is_idempotent_lower_case_and_fits_its_columns(written: str) -> None:
    email = normalize_email(written)
    if email is None:
        return
    assert normalize_email(email) == email
    local, _, domain = email.rpartition("@")
    assert local == local.lower()  # "trimmed and lower-cased"
    assert domain == domain.lower() and domain.isascii()  # "with an IDNA domain"
    assert email == email.strip() and "<" not in email
    assert len(email) <= min(_length(Contact.__table__.c.email), _length(ContactIdentifier.__table__.c.value))
    folded = fold_email(email)
    assert fold_email(folded) == folded
    assert normalize_email(folded) == folded


@settings(max_examples=500, deadline=None)
@given(ANY_TEXT | st.builds(lambda w, n: " ".join([w] * n), st.text(min_size=1, max_size=30), st.integers(1, 60)))
def test_name_normalization_is_idempotent_and_fits_its_column(written: str) -> None:
    name = normalize_name(written)
    if name is None:
        return
    assert normalize_name(name) == name
    assert name == name.strip()
    assert len(name) <= _length(Contact.__table__.c.name)


def test_a_name_cut_to_its_column_ends_without_a_space() -> None:
    """A cut that fell on a space between words kept it: `Aaa… ` was stored, and read again as `Aaa…`."""
    name = normalize_name("a" * 199 + " bb")
    assert name == "A" + "a" * 198


IDENTITIES = st.builds(
    Identity,
    name=ANY_TEXT,
    email=ANY_TEXT,
    phone_raw=ANY_TEXT,
    company=ANY_TEXT,
    messenger=ANY_TEXT,
    customer_id=ANY_TEXT,
)


@settings(max_examples=300, deadline=None)
@given(IDENTITIES, REGIONS)
def test_any_unicode_identity_normalizes_without_error_within_the_columns(raw: Identity, region: str | None) -> None:
    identity = normalize_identity(raw, region)
    for value, column in (
        (identity.name, Contact.__table__.c.name),
        (identity.company, Contact.__table__.c.company),
        (identity.email, Contact.__table__.c.email),
        (identity.phone, Contact.__table__.c.phone),
        (identity.messenger, ContactIdentifier.__table__.c.value),
        (identity.customer_id, ContactIdentifier.__table__.c.value),
    ):
        assert value is None or len(value) <= _length(column)
    assert consent_from_fields({"consent": raw.name, "subscribe": raw.email}) in (None, "granted", "withdrawn")
