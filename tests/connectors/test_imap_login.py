"""Logging in with credentials that are not ASCII (a Cyrillic password, an internationalised address), against a
real Dovecot: IMAP LOGIN is ASCII-only in imaplib, so such a login raised UnicodeEncodeError on every attempt."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from leadhub.connectors.imap_config import ImapConfig
from leadhub.connectors.imap_session import AuthFailed, ImapSession
from tests.imap_server import USER, Dovecot, running_dovecot

PASSWORD = "пароль-Продаж-2026"


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with running_dovecot() as server:
        passwd = server.root / "passwd"
        line = passwd.read_text(encoding="utf-8").splitlines()[0].split(":")
        line[1] = "{PLAIN}" + PASSWORD
        passwd.write_text(":".join(line) + "\n", encoding="utf-8")
        yield server


def test_a_password_that_is_not_ascii_logs_in(dovecot: Dovecot) -> None:
    session = ImapSession(ImapConfig.model_validate(dovecot.connector(password=PASSWORD)), "INBOX", None)
    try:
        assert session.open().uidvalidity > 0
    finally:
        session.close()


def test_a_wrong_password_that_is_not_ascii_is_refused_by_the_server(dovecot: Dovecot) -> None:
    session = ImapSession(ImapConfig.model_validate(dovecot.connector(password="неверный")), "INBOX", None)
    with pytest.raises(AuthFailed) as failure:
        session.open()
    assert f"the server refused the password for {USER}" in str(failure.value)
    assert "неверный" not in str(failure.value)
