"""What a contact's own words in a rendered header can do, through the hub and a real SMTP server (aiosmtpd):
a name is a display name, never another address or another header line."""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from leadhub.store.models import EmailMessage
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

    async def settled() -> Any:
        rows = await shop.actions(rule_id="tell-sales")
        return rows[0] if rows and rows[0].attempts >= 1 and rows[0].status != "running" else None

    run = await wait_for(settled, timeout=30, what="the e-mail's first run to be recorded")
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
