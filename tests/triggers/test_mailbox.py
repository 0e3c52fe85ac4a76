"""`from` / `reply_to` as rendered → one mailbox, the name quoted; what is not one address is refused."""

from __future__ import annotations

from email import message_from_string, policy

import pytest

from leadhub.triggers.actions.mailbox import NotAMailbox, mailbox, optional_mailbox


@pytest.mark.parametrize(
    ("rendered", "name", "address"),
    [
        ("shop@example.com", "", "shop@example.com"),
        ("  Shop <shop@example.com> ", "Shop", "shop@example.com"),
        ('"Shop, Inc." <shop@example.com>', "Shop, Inc.", "shop@example.com"),
        ("Eve, eve@evil.example <maria@example.com>", "Eve, eve@evil.example", "maria@example.com"),
        ("Maria\r\nBcc: eve@evil.example <maria@example.com>", "Maria Bcc: eve@evil.example", "maria@example.com"),
        ("Мария <maria@example.com>", "Мария", "maria@example.com"),
    ],
)
def test_one_mailbox_whatever_the_name(rendered: str, name: str, address: str) -> None:
    written = mailbox(rendered, "reply_to")
    assert "\n" not in written and "\r" not in written
    (parsed,) = message_from_string(f"Reply-To: {written}\n\n", policy=policy.default)["Reply-To"].addresses
    assert (parsed.display_name, parsed.addr_spec) == (name, address)


def test_an_internationalised_address_keeps_its_name() -> None:
    written = mailbox("Мария <мария@пример.рф>", "from")
    assert written.endswith(" <мария@пример.рф>") and written.startswith("=?utf-8?")


@pytest.mark.parametrize(
    "rendered",
    [
        *["None", "", "Shop <shop@example.com", "a@b.c d@e.f", "Shop <>", "@example.com"],
        *["shop\u200b@example.com", "Shop <shop@exa\x00mple.com>", "shop@example.com\u202e"],  # invisible in it
    ],
)
def test_not_a_mailbox(rendered: str) -> None:
    with pytest.raises(NotAMailbox, match=r"^from: "):
        mailbox(rendered, "from")


def test_blank_is_no_mailbox_at_all() -> None:
    """A value that rendered empty falls back to the SMTP URL's sender (for `from`) or no Reply-To, as before."""
    assert optional_mailbox(" \n", "from") is None
    assert optional_mailbox("Shop <shop@example.com>", "from") == "Shop <shop@example.com>"
