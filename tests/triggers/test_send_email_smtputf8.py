"""An internationalised address (a non-ASCII local part, which intake keeps) through the hub to a real SMTP
server (aiosmtpd): sent with SMTPUTF8 where the server offers it, failed once with the reason where it does not."""

from __future__ import annotations

from collections.abc import Iterator
from email import message_from_string, policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.helpers import free_port, wait_for
from tests.triggers.conftest import Shop

ADDRESS = "мария@example.com"


class Recorder:
    """Keeps each accepted message with its envelope."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK"


@pytest.fixture
def smtp(request: pytest.FixtureRequest) -> Iterator[tuple[str, Recorder]]:
    recorder, port = Recorder(), free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, enable_SMTPUTF8=request.param)
    controller.start()
    yield f"smtp://127.0.0.1:{port}?from=shop@example.com", recorder
    controller.stop()


def _rules(rules_dir: Path) -> Path:
    templates = rules_dir.parent / "templates"
    (templates / "email").mkdir(parents=True)
    (templates / "email" / "hello.subject.txt").write_text("Здравствуйте, {{ contact.name }}\n")
    (templates / "email" / "hello.txt").write_text("Спасибо за заявку.\n")
    (rules_dir / "test.yaml").write_text(
        """
rules:
  - id: hello
    on: lead.created
    do:
      - send_email: {template: hello, to: "{{ contact.email }}"}
"""
    )
    return templates


async def _first_run(trigger_hub, clock, rules_dir: Path, smtp_url: str, address: str = ADDRESS) -> Any:  # type: ignore[no-untyped-def]
    running = await trigger_hub(smtp_url=smtp_url, templates_dir=str(_rules(rules_dir)))
    shop = Shop(running.engine, clock)
    contact_id, lead_id = await shop.customer(address, "Мария")
    await shop.emit("lead.created", lead_id, lead_id=lead_id, contact_id=contact_id, channel="shop", tags=[])

    async def settled() -> Any:
        rows = await shop.actions(rule_id="hello")
        return rows[0] if rows and rows[0].attempts >= 1 and rows[0].status != "running" else None

    return await wait_for(settled, timeout=30, what="the e-mail's first run to be recorded")


@pytest.mark.parametrize("smtp", [True], indirect=True)
async def test_sent_with_smtputf8(trigger_hub, clock, rules_dir: Path, smtp: tuple[str, Recorder]) -> None:
    """It raised UnicodeEncodeError inside aiosmtplib, logged as a bug and retried 8 times, then failed."""
    url, recorder = smtp
    run = await _first_run(trigger_hub, clock, rules_dir, url)
    assert (run.status, run.last_error) == ("done", None)
    ((mail_from, rcpt_tos, content),) = recorder.received
    assert (mail_from, rcpt_tos) == ("shop@example.com", [ADDRESS])
    message = message_from_string(content.decode(), policy=policy.default)  # raw UTF-8 headers (RFC 6532)
    assert [a.addr_spec for a in message["To"].addresses] == [ADDRESS]
    assert str(message["Subject"]) == "Здравствуйте, Мария"


@pytest.mark.parametrize("smtp", [False], indirect=True)
async def test_a_server_without_smtputf8_fails_it_once(
    trigger_hub, clock, rules_dir: Path, smtp: tuple[str, Recorder]
) -> None:
    url, recorder = smtp
    run = await _first_run(trigger_hub, clock, rules_dir, url)
    assert (run.status, run.attempts) == ("failed", 1)
    assert "SMTPUTF8" in run.last_error and recorder.received == []


@pytest.mark.parametrize("smtp", [False], indirect=True)
async def test_a_non_ascii_domain_goes_out_as_its_ascii_form_without_smtputf8(
    trigger_hub, clock, rules_dir: Path, smtp: tuple[str, Recorder]
) -> None:
    """`maria@пример.рф` (an ASCII local part, a Cyrillic domain) needs no SMTPUTF8: its domain has an ASCII
    form (IDNA, `xn--...`) every server takes. It was sent as UTF-8 and failed at once on a server without
    SMTPUTF8, the customer getting nothing."""
    url, recorder = smtp
    run = await _first_run(trigger_hub, clock, rules_dir, url, address="maria@пример.рф")
    assert (run.status, run.last_error) == ("done", None)
    ((mail_from, rcpt_tos, content),) = recorder.received
    assert (mail_from, rcpt_tos) == ("shop@example.com", ["maria@xn--e1afmkfd.xn--p1ai"])
    assert content.partition(b"\r\n\r\n")[0].isascii()  # the headers; the body is 8bit UTF-8 as before
    message = message_from_string(content.decode(), policy=policy.default)
    assert [a.addr_spec for a in message["To"].addresses] == ["maria@xn--e1afmkfd.xn--p1ai"]


@pytest.mark.parametrize("smtp", [False], indirect=True)
async def test_a_sender_with_a_non_ascii_domain_needs_no_smtputf8(
    trigger_hub, clock, rules_dir: Path, smtp: tuple[str, Recorder]
) -> None:
    """`from=shop@магазин.рф` in LEADHUB_SMTP_URL: every e-mail needed SMTPUTF8 (the envelope's sender was
    UTF-8) and failed at once on a server without it; its Message-ID's domain went out RFC 2047-encoded."""
    url, recorder = smtp
    url = url.replace(
        "from=shop@example.com", "from=%D0%9C%D0%B0%D0%B3%D0%B0%D0%B7%D0%B8%D0%BD%20%3Cshop@магазин.рф%3E"
    )
    run = await _first_run(trigger_hub, clock, rules_dir, url, address="maria@example.com")
    assert (run.status, run.last_error) == ("done", None)
    ((mail_from, rcpt_tos, content),) = recorder.received
    assert (mail_from, rcpt_tos) == ("shop@xn--80aairftm.xn--p1ai", ["maria@example.com"])
    message = message_from_string(content.decode(), policy=policy.default)
    assert [(a.display_name, a.addr_spec) for a in message["From"].addresses] == [
        ("Магазин", "shop@xn--80aairftm.xn--p1ai")
    ]
    assert message["Message-ID"].endswith("@xn--80aairftm.xn--p1ai>")
