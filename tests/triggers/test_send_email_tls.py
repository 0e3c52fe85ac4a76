"""The SMTP password and TLS: a real SMTP server (aiosmtpd) that offers AUTH without STARTTLS, as one whose
STARTTLS a man in the middle strips does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from leadhub.triggers.actions.send_email import parse_smtp_url
from tests.helpers import free_port, wait_for
from tests.triggers.conftest import Inbox, Shop


class PlainServer:
    """Takes any login over plain text and keeps what it was sent."""

    def __init__(self) -> None:
        self.inbox = Inbox()
        self.logins: list[Any] = []
        self.port = free_port()

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        self.logins.append(data)
        return AuthResult(success=True)


@pytest.fixture
def plain_server() -> Iterator[PlainServer]:
    server = PlainServer()
    controller = Controller(
        server.inbox, hostname="127.0.0.1", port=server.port, authenticator=server.authenticate, auth_require_tls=False
    )
    controller.start()
    yield server
    controller.stop()


def test_credentials_mean_starttls_unless_the_url_says_starttls_0() -> None:
    assert parse_smtp_url("smtp://shop:pw@mail.example.com:587").start_tls is True
    assert parse_smtp_url("smtp://shop:pw@mail.example.com:587?starttls=0").start_tls is False
    assert parse_smtp_url("smtp://mail.example.com:25").start_tls is None  # no password: STARTTLS when offered
    assert parse_smtp_url("smtps://shop:pw@mail.example.com").start_tls is None  # TLS from the start


async def _first_run(trigger_hub, clock, rules_dir: Path, smtp_url: str) -> Any:  # type: ignore[no-untyped-def]
    templates = rules_dir.parent / "templates" / "email"
    templates.mkdir(parents=True)
    (templates / "hello.subject.txt").write_text("Hello\n")
    (templates / "hello.txt").write_text("Thank you.\n")
    (rules_dir / "test.yaml").write_text(
        "rules:\n  - id: hello\n    on: lead.created\n    do:\n"
        '      - send_email: {template: hello, to: "{{ contact.email }}"}\n'
    )
    running = await trigger_hub(smtp_url=smtp_url, templates_dir=str(templates.parent))
    shop = Shop(running.engine, clock)
    contact_id, lead_id = await shop.customer("maria@example.com", "Maria")
    await shop.emit("lead.created", lead_id, lead_id=lead_id, contact_id=contact_id, channel="shop", tags=[])

    async def settled() -> Any:
        rows = await shop.actions(rule_id="hello")
        return rows[0] if rows and rows[0].attempts >= 1 and rows[0].status != "running" else None

    return await wait_for(settled, timeout=30, what="the e-mail's first run to be recorded")


async def test_the_password_is_not_sent_where_starttls_is_not_offered(
    trigger_hub, clock, rules_dir: Path, plain_server: PlainServer
) -> None:
    """`smtp://user:pass@host:587` (no `starttls=`) upgraded only when the server offered STARTTLS: where it did
    not, or an attacker on the path removed the offer, the password went out in plain text."""
    url = f"smtp://shop:hunter2@127.0.0.1:{plain_server.port}?from=shop@example.com"
    run = await _first_run(trigger_hub, clock, rules_dir, url)
    assert plain_server.logins == [] and plain_server.inbox.messages == []
    assert run.status == "pending" and "STARTTLS" in run.last_error, (run.status, run.last_error)


async def test_starttls_0_sends_it_in_plain_text_as_asked(
    trigger_hub, clock, rules_dir: Path, plain_server: PlainServer
) -> None:
    url = f"smtp://shop:hunter2@127.0.0.1:{plain_server.port}?from=shop@example.com&starttls=0"
    run = await _first_run(trigger_hub, clock, rules_dir, url)
    assert (run.status, run.last_error) == ("done", None)
    assert len(plain_server.logins) == 1 and len(plain_server.inbox.messages) == 1
