"""What a contact's own words in a rendered header can do, through the hub and a real SMTP server (aiosmtpd):
a name is a display name, never another address or another header line."""

from __future__ import annotations

from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest

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
