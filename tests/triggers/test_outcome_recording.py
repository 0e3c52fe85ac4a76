"""Recording a batch's outcomes when a server's answer holds text the store refuses, on a real database.

An error quoting an SMTP reply that is not UTF-8 (a lone surrogate, which neither store can encode) or a NUL from
a webhook receiver or the Bot API (PostgreSQL's text refuses it) made the statement recording the whole batch
fail: its runs stayed claimed and ran again once the lease ran out, e-mails sent and webhooks posted twice.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from leadhub.store import triggers as store
from leadhub.store.models import EmailMessage
from leadhub.store.trigger_data import record_sent, sent_row
from leadhub.triggers.actions.base import Deps
from leadhub.triggers.clock import ManualClock
from leadhub.triggers.engine import RuleIndex
from leadhub.triggers.loader import load_rules
from leadhub.triggers.matcher import Matcher
from leadhub.triggers.outcomes import Result, record
from leadhub.triggers.sandbox import Templates
from leadhub.triggers.scheduler import RetryPolicy, Scheduler
from tests.helpers import free_port
from tests.triggers.conftest import START, Inbox, Shop

LEASE = timedelta(seconds=3)  # the old code retried recording until the lease ended: a test fails in seconds
NOT_YET = RetryPolicy(base=timedelta(hours=1))  # a retry is not due again within the test
REFUSAL = b"550 5.7.1 Adresse refus\xe9e: bo\xeete pleine"  # Latin-1, as some servers answer


class RefusingInbox(Inbox):
    """Accepts mail, except to refuse@example.com, which it refuses with a reply that is not UTF-8."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> Any:
        if envelope.rcpt_tos == ["refuse@example.com"]:
            self.refused += 1
            return REFUSAL
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def refusing_smtp() -> Any:
    inbox = RefusingInbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield f"smtp://127.0.0.1:{port}?from=shop@example.com", inbox
    controller.stop()


async def _fire(engine: Any, tmp_path: Path, rules: str) -> tuple[ManualClock, Shop, Callable[..., Scheduler]]:
    """The rules loaded, a lead.created matched (its actions due now); a factory of schedulers over them."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(rules)
    (tmp_path / "templates" / "email").mkdir(parents=True)
    (tmp_path / "templates" / "email" / "hello.subject.txt").write_text("Hello\n")
    (tmp_path / "templates" / "email" / "hello.txt").write_text("A new lead.\n")
    loaded = load_rules(tmp_path / "rules", Templates(tmp_path / "templates"))
    assert loaded.problems == []
    index = RuleIndex(loaded.rules)
    clock = ManualClock(START)
    shop = Shop(engine, clock)
    contact_id, lead_id = await shop.customer()
    event = {
        "id": "ev1",
        "type": "lead.created",
        "subject_id": lead_id,
        "occurred_at": START.isoformat(),
        "data": {"lead_id": lead_id, "contact_id": contact_id},
    }
    await Matcher(engine, lambda: index, clock).handle(event)

    def scheduler(**deps: Any) -> Scheduler:
        return Scheduler(engine, lambda: index, Deps(engine=engine, **deps), clock, retry=NOT_YET, lease=LEASE)

    return clock, shop, scheduler


async def _by_index(shop: Shop) -> dict[int, Any]:
    return {row.action_index: row for row in await shop.actions()}


async def test_an_smtp_refusal_that_is_not_utf8_is_recorded_and_nothing_in_the_batch_runs_twice(
    engine, tmp_path: Path, refusing_smtp, fake
) -> None:
    smtp_url, inbox = refusing_smtp
    crm = await fake([(200, {"ok": True})])
    clock, shop, scheduler = await _fire(
        engine,
        tmp_path,
        f"""
rules:
  - id: r
    on: lead.created
    do:
      - send_email: {{template: hello, to: refuse@example.com}}
      - send_email: {{template: hello, to: sales@example.com}}
      - webhook: {{url: "{crm.url}/leads"}}
""",
    )
    assert await scheduler(smtp_url=smtp_url).run_once() == 3
    runs = await _by_index(shop)
    assert runs[0].status == "failed" and runs[0].attempts == 1
    assert runs[0].last_error == r"SMTP 550: 5.7.1 Adresse refus\udce9e: bo\udceete pleine"
    assert [(runs[i].status, runs[i].attempts, runs[i].last_error) for i in (1, 2)] == [("done", 1, None)] * 2

    clock.advance(timedelta(minutes=10))  # the lease long over: a run left claimed would be taken again
    assert await scheduler(smtp_url=smtp_url).run_once() == 0
    assert inbox.refused == 1 and [m["To"] for m in inbox.messages] == ["sales@example.com"]
    assert len(crm.requests) == 1
    async with engine.connect() as conn:  # the e-mail sent is recorded: a reply to it finds the lead
        sent = (await conn.execute(select(EmailMessage.__table__.c.message_id))).scalars().all()
    assert sent == [runs[1].result["message_id"]]


async def test_a_nul_in_a_webhook_answer_or_a_bot_api_description_is_recorded(engine, tmp_path: Path, fake) -> None:
    """PostgreSQL's text holds no NUL: there the batch was not recorded. The NUL is dropped on either store."""
    broken = await fake([(500, b"upstream\x00 broken")])
    bot = await fake([(200, {"ok": False, "description": "Bad Request:\x00 chat not found"})])
    crm = await fake([(200, {"ok": True})])
    clock, shop, scheduler = await _fire(
        engine,
        tmp_path,
        f"""
rules:
  - id: r
    on: lead.created
    do:
      - webhook: {{url: "{broken.url}/leads"}}
      - notify_telegram: {{api_url: "{bot.url}", bot_token: "123:TOKEN", chat_id: 1, text: hi}}
      - webhook: {{url: "{crm.url}/leads"}}
""",
    )
    assert await scheduler().run_once() == 3
    runs = await _by_index(shop)
    assert (runs[0].status, runs[0].last_error) == ("pending", "webhook: HTTP 500: upstream broken")
    assert (runs[1].status, runs[1].last_error) == ("failed", "telegram: Bad Request: chat not found")
    assert (runs[2].status, runs[2].last_error) == ("done", None)

    clock.advance(timedelta(minutes=10))  # past the lease, before the retry's back-off (an hour)
    assert await scheduler().run_once() == 0
    assert [len(server.requests) for server in (broken, bot, crm)] == [1, 1, 1]


async def test_a_run_whose_outcome_the_store_refuses_is_failed_and_the_rest_of_the_batch_recorded(
    engine, tmp_path: Path
) -> None:
    """Whatever the store refuses in one run's outcome (here a write that run did, with a lone surrogate), the
    others are recorded: the batch is recorded run by run, and that run as failed with a plain error."""
    clock, shop, scheduler = await _fire(
        engine,
        tmp_path,
        """
rules:
  - id: r
    on: lead.created
    do:
      - create_task: {title: one}
      - create_task: {title: two}
      - create_task: {title: three}
      - create_task: {title: four}
""",
    )
    now = clock.now()
    async with engine.begin() as conn:
        claimed = {row.action_index: row.id for row in await store.claim_due(conn, now, 10, now + LEASE)}
    good, bad = sent_row("<good@example.com>", None, now), sent_row("<bad\udce9@example.com>", None, now)
    results = [
        Result(claimed[0], "done", result={"n": 1}, batched=[(record_sent, good)]),
        Result(claimed[1], "done", result={"n": 2}, batched=[(record_sent, bad)]),
        Result(claimed[2], "pending", error="receiver away", retry_at=now + timedelta(hours=1)),
        Result(claimed[3], "failed", error="HTTP 400"),
    ]
    recorded = await record(engine, results, now, now + LEASE)
    assert recorded == set(claimed.values())

    runs = await _by_index(shop)
    assert (runs[0].status, runs[0].result, runs[0].last_error) == ("done", {"n": 1}, None)
    assert (runs[1].status, runs[1].result) == ("failed", None)
    assert runs[1].last_error.startswith("the outcome (done) could not be recorded: "), runs[1].last_error
    assert (runs[2].status, runs[2].last_error) == ("pending", "receiver away")
    assert (runs[3].status, runs[3].last_error) == ("failed", "HTTP 400")
    assert results[1].status == "failed"  # counted as what was recorded
    async with engine.connect() as conn:
        sent = (await conn.execute(select(EmailMessage.__table__.c.message_id))).scalars().all()
    assert sent == ["<good@example.com>"]
    clock.advance(timedelta(minutes=10))
    assert await scheduler().run_once() == 0
