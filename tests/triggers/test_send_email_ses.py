"""Mail sent through Amazon SES's SMTP interface, which replaces the Message-ID: leadhub records the id SES names in
its `250 Ok <id>` answer to DATA as well, so the customer's reply (In-Reply-To: `<id@email.amazonses.com>`) joins
the lead. The SES server is a real aiosmtpd answering DATA as SES does; the reply goes through the real intake
pipeline (NATS, the store)."""

from __future__ import annotations

import itertools
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from leadhub.envelope import Envelope
from leadhub.store.models import EmailMessage, Inquiry, Lead, ScheduledAction
from tests.helpers import free_port, wait_for
from tests.triggers.conftest import Inbox, Shop, SmtpServer, use_example
from tests.triggers.test_outcome_recording import _fire

WEEK = timedelta(days=7)


class SesInbox(Inbox):
    """Answers DATA as Amazon SES does: `250 Ok <its own message id>`, a new one per message."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self._serial = itertools.count(1)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await super().handle_DATA(server, session, envelope)
        self.ids.append(f"0100018c1f2e3d4c-5b6a7980-1a2b-4c3d-9e8f-0a1b2c3d4e{next(self._serial):02d}-000000")
        return f"250 Ok {self.ids[-1]}"


@pytest.fixture
def ses_server() -> Any:
    server = SmtpServer(free_port(), inbox=SesInbox())
    server.start()
    yield server
    server.stop()


def _imap_connector() -> dict[str, Any]:
    """A mailbox connector whose server is a closed port: the test puts the reply on the queue as it would."""
    return {
        "name": "inbox",
        "type": "imap",
        "host": "127.0.0.1",
        "port": free_port(),
        "security": "none",
        "username": "shop@example.com",
        "password": "not-used",
        "own_addresses": ["shop@example.com"],
    }


def _reply(in_reply_to: str) -> bytes:
    """The customer answers from another address (a colleague, a work account): only the thread can join it."""
    lines = [
        "From: Ivan Petrov <i.petrov@work.example>",
        "To: shop@example.com",
        "Subject: Re: How was your order #1001?",
        "Message-ID: <answer-1@work.example>",
        f"In-Reply-To: {in_reply_to}",
        f"References: {in_reply_to}",
        "Content-Type: text/plain; charset=utf-8",
    ]
    return ("\r\n".join(lines) + "\r\n\r\nThe mug arrived broken, please call me.\r\n").encode()


async def _sent_rows(engine: Any) -> dict[str, tuple[str, str | None]]:
    table = EmailMessage.__table__
    async with engine.connect() as conn:
        rows = (await conn.execute(select(table).where(table.c.direction == "out"))).all()
    return {row.message_id: (row.direction, row.lead_id) for row in rows}


async def test_a_reply_to_a_survey_sent_through_ses_joins_the_lead(
    trigger_hub, ses_server: SmtpServer, clock, rules_dir: Path
) -> None:
    """SES replaced the Message-ID leadhub recorded; the reply named SES's and opened a new lead."""
    use_example(rules_dir, "survey.yaml")
    url = f"{ses_server.url}&ses_domain=email.amazonses.com"
    running = await trigger_hub(smtp_url=url, connectors=[_imap_connector()])
    shop = Shop(running.engine, clock)
    contact_id, lead_id = await shop.customer("ivan@example.com")
    order_id = await shop.order(contact_id, lead_id, "1001")
    await shop.emit("order.completed", order_id, order_id=order_id, contact_id=contact_id, lead_id=lead_id)

    async def scheduled() -> Any:
        return await shop.actions(rule_id="post-sale-survey") or None

    await wait_for(scheduled, timeout=30, what="the survey to be scheduled")
    clock.advance(WEEK)

    async def done() -> Any:
        rows = await shop.actions(rule_id="post-sale-survey")
        return rows[0] if rows and rows[0].status == "done" else None

    action = await wait_for(done, timeout=30, what="the survey to be sent")
    (sent,) = ses_server.inbox.messages
    (ses_id,) = ses_server.inbox.ids
    as_delivered = f"<{ses_id}@email.amazonses.com>"  # the header SES writes in place of leadhub's
    assert action.result == {"message_id": sent["Message-ID"], "ses_message_id": as_delivered}
    assert await _sent_rows(running.engine) == {sent["Message-ID"]: ("out", lead_id), as_delivered: ("out", lead_id)}

    clock.advance(timedelta(days=2))  # a reply days later, from an address the contact does not have
    assert running.hub.queue is not None
    envelope = Envelope(
        key="imap:inbox:1:1",
        channel="email",
        connector="inbox",
        payload=_reply(as_delivered),
        content_type="message/rfc822",
    )
    await running.hub.queue.publish_envelope(envelope)

    async def stored() -> Any:
        async with running.engine.connect() as conn:
            query = select(Inquiry.__table__.c.lead_id).where(Inquiry.__table__.c.key == envelope.key)
            return (await conn.execute(query)).first()

    (joined,) = await wait_for(stored, timeout=30, what="the reply to be stored")
    assert joined == lead_id
    async with running.engine.connect() as conn:
        assert len((await conn.execute(select(Lead.__table__.c.id))).all()) == 1


async def test_a_retried_run_finds_its_send_recorded_and_records_nothing_more(
    trigger_hub, ses_server: SmtpServer, clock, rules_dir: Path
) -> None:
    """A run of a send already recorded (a claim whose lease ran out, run again) sends nothing and adds no row."""
    use_example(rules_dir, "survey.yaml")
    running = await trigger_hub(smtp_url=f"{ses_server.url}&ses_domain=eu-west-1.amazonses.com")
    shop = Shop(running.engine, clock)
    contact_id, lead_id = await shop.customer("ivan@example.com")
    order_id = await shop.order(contact_id, lead_id, "1001")
    await shop.emit("order.completed", order_id, order_id=order_id, contact_id=contact_id, lead_id=lead_id)

    async def scheduled() -> Any:
        return await shop.actions(rule_id="post-sale-survey") or None

    (action,) = await wait_for(scheduled, timeout=30, what="the survey to be scheduled")
    clock.advance(WEEK)

    async def done() -> Any:
        rows = await shop.actions(rule_id="post-sale-survey")
        return rows[0] if rows and rows[0].status == "done" else None

    await wait_for(done, timeout=30, what="the survey to be sent")
    first = await _sent_rows(running.engine)
    assert len(first) == 2 and f"<{ses_server.inbox.ids[0]}@eu-west-1.amazonses.com>" in first

    # The same action run once more, as a second claim of it would: the derived Message-ID is found sent.
    table = ScheduledAction.__table__
    async with running.engine.begin() as conn:
        await conn.execute(update(table).where(table.c.id == action.id).values(status="pending", due_at=clock.now()))
    scheduler = running.hub.triggers.scheduler

    async def ran_again() -> Any:
        await scheduler.run_once()
        rows = await shop.actions(rule_id="post-sale-survey")
        return rows[0] if rows[0].status == "done" and rows[0].result.get("already_sent") else None

    await wait_for(ran_again, timeout=30, what="the second run to find the e-mail sent")
    assert len(ses_server.inbox.messages) == 1
    assert await _sent_rows(running.engine) == first


@pytest.mark.store_independent  # the SMTP path; the records run on both above
async def test_a_send_without_the_connection_pool_records_the_ses_id_too(
    engine, tmp_path: Path, ses_server: SmtpServer
) -> None:
    """The one-connection path (`aiosmtplib.send`, a scheduler whose deps hold no pool) reads the answer as well."""
    _, shop, scheduler = await _fire(
        engine,
        tmp_path,
        "rules:\n  - id: r\n    on: lead.created\n    do:\n"
        "      - send_email: {template: hello, to: sales@example.com}\n",
    )
    url = f"{ses_server.url}&ses_domain=us-west-2.amazonses.com"
    assert await scheduler(smtp_url=url).run_once() == 1
    (run,) = await shop.actions()
    (ses_id,) = ses_server.inbox.ids
    assert run.result == {
        "message_id": run.result["message_id"],
        "ses_message_id": f"<{ses_id}@us-west-2.amazonses.com>",
    }
    assert set(await _sent_rows(engine)) == {run.result["message_id"], f"<{ses_id}@us-west-2.amazonses.com>"}
