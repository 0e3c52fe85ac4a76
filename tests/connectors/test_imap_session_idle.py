"""IMAP IDLE against a real Dovecot: mail delivered just before IDLE starts is not left for the next poll."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from leadhub.connectors.imap_config import ImapConfig
from leadhub.connectors.imap_session import ImapSession
from tests.imap_server import Dovecot, make_mail, running_dovecot


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with running_dovecot() as server:
        yield server


def test_mail_delivered_between_sync_and_idle_ends_the_wait_at_once(dovecot: Dovecot) -> None:
    session = ImapSession(ImapConfig.model_validate(dovecot.connector()), "INBOX", None)
    session.open()  # the folder as the last sync saw it: empty
    try:
        dovecot.append([make_mail(1)])  # arrives after that sync, before the folder worker starts IDLE
        started = time.monotonic()
        assert session.idle_wait(20.0) is True
        assert time.monotonic() - started < 5.0, "the new mail waited for the server's own IDLE check"
    finally:
        session.close()
