"""What a contact's own words in a rendered header can do, through the hub and a real SMTP server (aiosmtpd):
a name is a display name, never another address or another header line."""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from leadhub.store.models import EmailMessage, Lead
from tests.helpers import wait_for
from tests.triggers.conftest import Shop, SmtpServer

NAMES = [
    "Eve, attacker@evil.example",  # read as two addresses when written into the header as it is
    "Maria\r\nBcc: attacker@evil.example",  # a header line of its own
    'Eve" <attacker@evil.example>, "',  # breaks out of the quotes the rule put around it
    "Мария Иванова",  # non-ASCII: RFC 2047 encoded
]


def _rules(rules_dir: Path) -> Path:
    templates = rules_dir.parent / "templates"
    (templates / "email").mkdir(parents=True)
    (templates / "email" / "new-lead.subject.txt").write_text("New lead: {{ contact.name }}\n")
    (templates / "email" / "new-lead.txt").write_text("{{ contact.name }} wrote in.\n")
    (rules_dir / "test.yaml").write_text(
        """
rules:
  - id: tell-sales
    on: lead.created
    do:
      - send_email:
          template: new-lead
          to: sales@example.com
          from: '"{{ contact.name }} via leadhub" <shop@example.com>'
          reply_to: "{{ contact.name }} <{{ contact.email }}>"
"""
    )
    return templates


@pytest.mark.parametrize("name", NAMES)
async def test_a_contact_name_stays_a_display_name(
    trigger_hub, clock, rules_dir: Path, smtp_server: SmtpServer, name: str
) -> None:
    templates = _rules(rules_dir)
    running = await trigger_hub(smtp_url=smtp_server.url, templates_dir=str(templates))
    shop = Shop(running.engine, clock)
    contact_id, lead_id = await shop.customer("maria@example.com", name)
    await shop.emit("lead.created", lead_id, lead_id=lead_id, contact_id=contact_id, channel="shop", tags=[])

    run = await _settled(shop, "tell-sales")
    assert (run.status, run.last_error) == ("done", None)
    (received,) = smtp_server.inbox.messages
    message = message_from_bytes(received.as_bytes(), policy=policy.default)
    one_line = " ".join(name.split())
    assert [(a.display_name, a.addr_spec) for a in message["Reply-To"].addresses] == [(one_line, "maria@example.com")]
    from_ = message["From"].addresses
    assert [(a.display_name, a.addr_spec) for a in from_] == [(f"{one_line} via leadhub", "shop@example.com")]
    assert message["Bcc"] is None and str(message["Subject"]) == f"New lead: {one_line}"


async def test_the_message_id_of_a_named_sender_is_well_formed(
    trigger_hub, clock, rules_dir: Path, smtp_server: SmtpServer
) -> None:
    """With `from: Name <address>` the Message-ID took its domain from `example.com>`: `<id@example.com>>`. A reply's
    In-Reply-To names `<id@example.com>`, which matched nothing recorded, so the reply did not join the lead."""
    templates = _rules(rules_dir)
    running = await trigger_hub(smtp_url=smtp_server.url, templates_dir=str(templates))
    shop = Shop(running.engine, clock)
    contact_id, lead_id = await shop.customer("maria@example.com", "Maria")
    await shop.emit("lead.created", lead_id, lead_id=lead_id, contact_id=contact_id, channel="shop", tags=[])

    async def delivered() -> Any:
        return smtp_server.inbox.messages or None

    (received,) = await wait_for(delivered, timeout=30, what="the e-mail")
    message_id = received["Message-ID"]
    assert re.fullmatch(r"<[0-9a-f]{32}@example\.com>", message_id), message_id

    async def recorded() -> Any:
        async with running.engine.connect() as conn:
            query = select(EmailMessage.__table__.c.message_id).where(EmailMessage.__table__.c.direction == "out")
            return list((await conn.execute(query)).scalars()) or None

    assert await wait_for(recorded, timeout=30, what="the sent e-mail recorded") == [message_id]


def _mail_to(rules_dir: Path, to: str) -> Path:
    templates = rules_dir.parent / "templates"
    (templates / "email").mkdir(parents=True)
    (templates / "email" / "hello.subject.txt").write_text("Hello\n")
    (templates / "email" / "hello.txt").write_text("A new lead.\n")
    (rules_dir / "test.yaml").write_text(
        f"""
rules:
  - id: tell-owner
    on: lead.created
    do:
      - send_email: {{template: hello, to: "{to}"}}
"""
    )
    return templates


async def _first_run(running: Any, clock: Any, owner: str) -> Any:
    shop = Shop(running.engine, clock)
    contact_id, lead_id = await shop.customer("maria@example.com", "Maria")
    async with running.engine.begin() as conn:  # as PATCH /api/leads or a CRM sync may write it
        await conn.execute(update(Lead.__table__).where(Lead.__table__.c.id == lead_id).values(owner=owner))
    await shop.emit("lead.created", lead_id, lead_id=lead_id, contact_id=contact_id, channel="shop", tags=[])

    return await _settled(shop, "tell-owner")


async def _settled(shop: Shop, rule_id: str) -> Any:
    """The rule's e-mail action once its first run is recorded."""

    async def settled() -> Any:
        rows = await shop.actions(rule_id=rule_id)
        return rows[0] if rows and rows[0].attempts >= 1 and rows[0].status != "running" else None

    return await wait_for(settled, timeout=30, what="the e-mail's first run to be recorded")


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x0b", "\x1c", "\x00", "\u200b", " "])
async def test_a_to_with_a_line_separator_or_an_invisible_character_fails_at_once(
    trigger_hub, clock, rules_dir: Path, smtp_server: SmtpServer, separator: str
) -> None:
    """`to: "{{ lead.owner }}"` with U+2028, U+0085, \\x0b (line breaks to the stdlib's EmailMessage, which raised
    ValueError): retried 8 times over an hour as an unexpected error, a traceback logged each time, then failed."""
    templates = _mail_to(rules_dir, "{{ lead.owner }}")
    running = await trigger_hub(smtp_url=smtp_server.url, templates_dir=str(templates))
    if separator == "\x00" and running.engine.dialect.name == "postgresql":
        pytest.skip("PostgreSQL's text holds no NUL: no owner can carry one to a rule")
    run = await _first_run(running, clock, f"anna@example.com{separator}X-Injected: 1")
    assert run.status == "failed" and run.last_error.startswith("not a single e-mail address: "), run.last_error
    assert smtp_server.inbox.messages == []


async def test_a_message_the_stdlib_cannot_write_fails_at_once(
    trigger_hub, clock, rules_dir: Path, smtp_server: SmtpServer
) -> None:
    """The sender of LEADHUB_SMTP_URL's `from=` (percent-decoded) with a U+2028 in it: EmailMessage refuses the From
    header on every attempt, which was retried as an unexpected error."""
    templates = _mail_to(rules_dir, "sales@example.com")
    smtp_url = smtp_server.url.replace("from=shop@example.com", "from=shop@example.com%E2%80%A8X-Injected:%201")
    running = await trigger_hub(smtp_url=smtp_url, templates_dir=str(templates))
    run = await _first_run(running, clock, "anna")
    assert run.status == "failed" and run.last_error.startswith("the message could not be written: "), run.last_error
    assert smtp_server.inbox.messages == []


async def test_a_plus_in_the_smtp_urls_from_stays_a_plus(
    trigger_hub, clock, rules_dir: Path, smtp_server: SmtpServer
) -> None:
    """`?from=sales+leads@example.com` was read as a form field (parse_qs): `sales leads@example.com`, which
    aiosmtplib refuses on the MAIL FROM line with a ValueError, retried 8 times as an unexpected error."""
    templates = _mail_to(rules_dir, "sales@example.com")
    smtp_url = smtp_server.url.replace("from=shop@example.com", "from=sales+leads@example.com")
    running = await trigger_hub(smtp_url=smtp_url, templates_dir=str(templates))
    run = await _first_run(running, clock, "anna")
    assert (run.status, run.last_error) == ("done", None)
    (message,) = smtp_server.inbox.messages
    assert message["From"] == "sales+leads@example.com"


async def test_a_sender_the_smtp_envelope_cannot_take_fails_at_once(
    trigger_hub, clock, rules_dir: Path, smtp_server: SmtpServer
) -> None:
    """A space in LEADHUB_SMTP_URL's `from=` (`%20`): aiosmtplib's ValueError for the MAIL FROM line was retried
    as an unexpected error, with a traceback each time, though it fails the same way every time."""
    templates = _mail_to(rules_dir, "sales@example.com")
    smtp_url = smtp_server.url.replace("from=shop@example.com", "from=sales%20leads@example.com")
    running = await trigger_hub(smtp_url=smtp_url, templates_dir=str(templates))
    run = await _first_run(running, clock, "anna")
    assert (run.status, run.attempts) == ("failed", 1)
    assert run.last_error.startswith("the SMTP envelope could not be written: "), run.last_error
    assert smtp_server.inbox.messages == []


@pytest.mark.store_independent  # the message's headers; once, on the embedded default: not about the store
async def test_an_international_reply_to_domain_is_written_in_ascii(
    trigger_hub, clock, rules_dir: Path, smtp_server: SmtpServer
) -> None:
    """`reply_to: Отдел продаж <sales@магазин.рф>` in a message sent without SMTPUTF8 (the `to` and the sender are
    ASCII): the domain goes in its ASCII form, as the sender's does, and the name RFC 2047-encoded."""
    templates = _rules(rules_dir)
    rule = rules_dir / "test.yaml"
    rule.write_text(
        rule.read_text().replace('"{{ contact.name }} <{{ contact.email }}>"', '"Отдел продаж <sales@магазин.рф>"')
    )
    running = await trigger_hub(smtp_url=smtp_server.url, templates_dir=str(templates))
    shop = Shop(running.engine, clock)
    contact_id, lead_id = await shop.customer("maria@example.com", "Maria")
    await shop.emit("lead.created", lead_id, lead_id=lead_id, contact_id=contact_id, channel="shop", tags=[])

    run = await _settled(shop, "tell-sales")
    assert (run.status, run.last_error) == ("done", None)
    (received,) = smtp_server.inbox.messages
    raw = received.as_bytes()
    assert raw.isascii(), "no SMTPUTF8 was asked for: every header byte must be ASCII"
    message = message_from_bytes(raw, policy=policy.default)
    (reply_to,) = message["Reply-To"].addresses
    assert (reply_to.display_name, reply_to.addr_spec) == ("Отдел продаж", "sales@xn--80aairftm.xn--p1ai")
