"""Connecting with the wrong `security` for a port, or to a server that accepts TCP and never answers: the attempt
ends within `connect_timeout` with an error that names host, port and the likely fix (not a bare "timed out" or
"WRONG_VERSION_NUMBER"). A real Dovecot for the plain port; a silent loopback listener for the hanging server."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from leadhub.connectors.imap_config import ImapConfig
from leadhub.connectors.imap_session import ConnectFailed, ImapSession
from tests.imap_server import Dovecot, running_dovecot


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with running_dovecot() as server:
        yield server


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A listener whose connections are accepted by the kernel and then never answered."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def test_ssl_against_a_plain_port_says_so(dovecot: Dovecot) -> None:
    session = ImapSession(ImapConfig.model_validate(dovecot.connector(security="ssl")), "INBOX", None)
    with pytest.raises(ConnectFailed) as failure:
        session.open()
    message = str(failure.value)
    assert f"127.0.0.1:{dovecot.port}" in message and "plain IMAP port" in message and "starttls" in message


@pytest.mark.parametrize("security", ["none", "starttls", "ssl"])
def test_a_server_that_never_answers_times_out_with_a_clear_error(silent_port: int, security: str) -> None:
    config = ImapConfig.model_validate(
        {"name": "inbox", "host": "127.0.0.1", "port": silent_port, "security": security, "username": "u",
         "password": "p", "connect_timeout": "1s", "timeout": "1s"}
    )  # fmt: skip
    session = ImapSession(config, "INBOX", None)
    started = time.monotonic()
    with pytest.raises(ConnectFailed) as failure:
        session.open()
    assert time.monotonic() - started < 5
    message = str(failure.value)
    assert f"127.0.0.1:{silent_port}" in message and "connect_timeout (1s)" in message
    if security != "ssl":
        assert "security: ssl" in message
