"""send_email's envelope addresses: a bare address is used as written, anything else as parseaddr reads it."""

from __future__ import annotations

from email.utils import parseaddr

from hypothesis import given
from hypothesis import strategies as st

from leadhub.triggers.actions.send_email import _BARE_ADDRESS, _address


@given(st.from_regex(_BARE_ADDRESS, fullmatch=True))
def test_a_bare_address_is_what_parseaddr_would_give(address: str) -> None:
    assert _address(address) == parseaddr(address)[1] == address


@given(st.text(max_size=60))
def test_any_header_is_read_as_parseaddr_reads_it(header: str) -> None:
    assert _address(header) == (parseaddr(header)[1] or header)


def test_display_names_and_comments_go_the_long_way() -> None:
    assert _address("Shop <shop@example.com>") == "shop@example.com"
    assert _address("shop@example.com (Shop)") == "shop@example.com"
    assert _address('"a b"@example.com') == parseaddr('"a b"@example.com')[1]
