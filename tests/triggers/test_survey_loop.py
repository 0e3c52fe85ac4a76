"""The post-sale survey through the real hub: NATS, the store, a real SMTP server (aiosmtpd) and a manual clock."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from leadhub.store.models import EmailMessage, EmailSuppression, RuleTrace
from tests.helpers import wait_for
from tests.triggers.conftest import Shop, SmtpServer, stop_hub, use_example

WEEK = timedelta(days=7)


async def _completed_order(shop: Shop, email: str = "ivan@example.com", number: str = "1001") -> dict[str, str]:
    contact_id, lead_id = await shop.customer(email)
    order_id = await shop.order(contact_id, lead_id, number)
    await shop.emit("order.completed", order_id, order_id=order_id, contact_id=contact_id, lead_id=lead_id)
    return {"contact_id": contact_id, "lead_id": lead_id, "order_id": order_id}


async def _scheduled(shop: Shop, count: int = 1, **where: Any) -> list[Any]:
    async def probe() -> list[Any] | None:
        rows = await shop.actions(rule_id="post-sale-survey", **where)
        return rows if len(rows) >= count else None

    return await wait_for(probe, timeout=30, what=f"{count} scheduled survey action(s)")


async def _traces(shop: Shop, rule_id: str, count: int) -> list[Any]:
    async def probe() -> list[Any] | None:
        async with shop.engine.connect() as conn:
            rows = (await conn.execute(select(RuleTrace.__table__).where(RuleTrace.rule_id == rule_id))).all()
        return list(rows) if len(rows) >= count else None

    return await wait_for(probe, timeout=30, what=f"{count} traces of {rule_id}")


async def _status(shop: Shop, status: str) -> Any:
    async def probe() -> Any:
        rows = await shop.actions(rule_id="post-sale-survey")
        return rows[0] if rows and rows[0].status == status else None

    return await wait_for(probe, timeout=30, what=f"the survey action to be {status}")


async def test_survey_is_sent_once_a_week_after_completion(
    trigger_hub, smtp_server: SmtpServer, clock, rules_dir: Path
):
    use_example(rules_dir, "survey.yaml")
    running = await trigger_hub(smtp_url=smtp_server.url)
    shop = Shop(running.engine, clock)
    ids = await _completed_order(shop)
    (action,) = await _scheduled(shop)
    assert action.status == "pending" and action.key.startswith("post-sale-survey:")
    scheduler = running.hub.triggers.scheduler

    clock.advance(WEEK - timedelta(minutes=1))
    assert await scheduler.run_once() == 0, "nothing is due a minute early"
    assert smtp_server.inbox.messages == []

    clock.advance(timedelta(minutes=1))
    done = await _status(shop, "done")
    assert len(smtp_server.inbox.messages) == 1
    message = smtp_server.inbox.messages[0]
    assert message["To"] == "ivan@example.com" and message["Subject"] == "How was your order #1001?"
    assert message["List-Unsubscribe"].startswith("<https://shop.example/u/")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Message-ID"] == done.result["message_id"]
    plain = next(part for part in message.walk() if part.get_content_type() == "text/plain")
    body = plain.get_payload(decode=True).decode(plain.get_content_charset() or "utf-8")
    assert "https://shop.example/s/" in body, body
    async with running.engine.connect() as conn:
        sent = (await conn.execute(select(EmailMessage.__table__))).all()
    assert [(r.message_id, r.direction, r.lead_id) for r in sent] == [(message["Message-ID"], "out", ids["lead_id"])]

    clock.advance(WEEK)
    assert await scheduler.run_once() == 0
    assert len(smtp_server.inbox.messages) == 1, "sent exactly once"


async def test_survey_survives_a_restart_while_waiting(trigger_hub, smtp_server: SmtpServer, clock, rules_dir: Path):
    use_example(rules_dir, "survey.yaml")
    first = await trigger_hub(smtp_url=smtp_server.url)
    shop = Shop(first.engine, clock)
    await _completed_order(shop)
    await _scheduled(shop)
    await stop_hub(first)

    clock.advance(WEEK + timedelta(hours=1))  # the hub was down when it fell due; late: run_if_within 2d
    second = await trigger_hub(smtp_url=smtp_server.url)
    shop = Shop(second.engine, clock)
    await _status(shop, "done")
    assert len(smtp_server.inbox.messages) == 1
    assert len(await shop.actions()) == 1, "the redelivered event scheduled nothing new"


@pytest.mark.parametrize("unreadable", ["directory missing", "rule with a problem"])
async def test_a_survey_due_while_its_rule_cannot_be_read_at_start_up_waits_for_it(
    trigger_hub, smtp_server: SmtpServer, clock, rules_dir: Path, unreadable: str
):
    """Found by an audit: the daemon started with the rules volume not mounted yet, or with a typo made in the rule
    while it was down, cancelled every due survey for good ("rule ... is no longer loaded")."""
    use_example(rules_dir, "survey.yaml")
    first = await trigger_hub(smtp_url=smtp_server.url)
    shop = Shop(first.engine, clock)
    await _completed_order(shop)
    await _scheduled(shop)
    await stop_hub(first)
    survey = (rules_dir / "survey.yaml").read_text()
    if unreadable == "directory missing":
        rules_dir.rename(rules_dir.with_name("unmounted"))
    else:
        (rules_dir / "survey.yaml").write_text(survey.replace("+ 7d", "+ 7days"))

    clock.advance(WEEK + timedelta(hours=1))
    second = await trigger_hub(smtp_url=smtp_server.url)
    service = second.hub.triggers
    shop = Shop(second.engine, clock)

    async def waiting() -> Any:
        (row,) = await shop.actions(rule_id="post-sale-survey")
        given_back = row.status == "pending" and "post-sale-survey" in service.scheduler.waiting
        return row if given_back and service.problems else None

    row = await wait_for(waiting, timeout=10, what="the due survey to wait for its rule")
    assert row.attempts == 0 and row.last_error is None
    async with second.session.get(second.url("/readyz")) as response:
        detail = (await response.json())["detail"]["triggers"]
    assert list(detail["waiting_for_rules"]) == ["post-sale-survey"] and detail["problems"]

    if unreadable == "directory missing":
        rules_dir.with_name("unmounted").rename(rules_dir)
    else:
        (rules_dir / "survey.yaml").write_text(survey)
    await _status(shop, "done")
    assert len(smtp_server.inbox.messages) == 1 and service.scheduler.waiting == {}


async def test_refund_before_the_week_cancels_the_survey(trigger_hub, smtp_server: SmtpServer, clock, rules_dir: Path):
    use_example(rules_dir, "survey.yaml")
    running = await trigger_hub(smtp_url=smtp_server.url)
    shop = Shop(running.engine, clock)
    ids = await _completed_order(shop)
    await _scheduled(shop)
    clock.advance(timedelta(days=2))
    await shop.set_status(ids["order_id"], "refunded")
    clock.advance(WEEK)
    cancelled = await _status(shop, "cancelled")
    assert "unless is true" in cancelled.last_error
    assert smtp_server.inbox.messages == []


async def test_second_order_inside_the_throttle_sends_nothing(
    trigger_hub, smtp_server: SmtpServer, clock, rules_dir: Path
):
    use_example(rules_dir, "survey.yaml")
    running = await trigger_hub(smtp_url=smtp_server.url)
    shop = Shop(running.engine, clock)
    contact_id, lead_id = await shop.customer()
    for number in ("1001", "1002"):
        order_id = await shop.order(contact_id, lead_id, number)
        await shop.emit("order.completed", order_id, order_id=order_id, contact_id=contact_id, lead_id=lead_id)
        clock.advance(timedelta(days=1))
    traces = await _traces(shop, "post-sale-survey", 2)
    reasons = sorted(str(t.reason) for t in traces)
    assert any(r.startswith("skipped: throttled") for r in reasons), reasons
    assert [r.status for r in await shop.actions()] == ["pending", "throttled"]
    clock.advance(WEEK)
    await _status(shop, "done")
    clock.advance(WEEK)
    assert await running.hub.triggers.scheduler.run_once() == 0
    assert [r.status for r in await shop.actions()] == ["done", "throttled"], "held for good: the first one acted"
    assert len(smtp_server.inbox.messages) == 1


async def test_suppressed_addresses_get_nothing(trigger_hub, smtp_server: SmtpServer, clock, rules_dir: Path):
    use_example(rules_dir, "survey.yaml")
    running = await trigger_hub(smtp_url=smtp_server.url)
    shop = Shop(running.engine, clock)
    async with running.engine.begin() as conn:
        await conn.execute(
            insert(EmailSuppression.__table__).values(
                address="gone@example.com", reason="unsubscribe", detail=None, created_at=clock.now()
            )
        )
    await _completed_order(shop, "gone@example.com", "2001")  # unsubscribed before: the rule does not match
    (trace,) = await _traces(shop, "post-sale-survey", 1)
    assert trace.matched is False and "not contact.unsubscribed" in trace.reason
    assert [c["result"] for c in trace.conditions] == [False]

    await _completed_order(shop, "bounces@example.com", "2002")
    await _scheduled(shop)
    async with running.engine.begin() as conn:  # the address bounced while the survey waited
        await conn.execute(
            insert(EmailSuppression.__table__).values(
                address="bounces@example.com", reason="bounce", detail="550 no such user", created_at=clock.now()
            )
        )
    clock.advance(WEEK)
    cancelled = await _status(shop, "cancelled")
    assert cancelled.last_error == "suppressed address (bounce)"
    assert smtp_server.inbox.messages == []


@pytest.mark.parametrize(
    ("written", "listed"),
    [
        ("maria@пример.рф", "maria@xn--e1afmkfd.xn--p1ai"),  # a bounce reports the ASCII form leadhub sent to
        ("maria@xn--e1afmkfd.xn--p1ai", "maria@пример.рф"),  # an older release kept an unsubscribe as written
    ],
)
async def test_an_address_is_suppressed_whichever_way_its_domain_is_written(
    trigger_hub, smtp_server: SmtpServer, clock, rules_dir: Path, *, written: str, listed: str
):
    """Found by a helper's audit: the list was looked up by the lower-cased address only, so an address whose
    international domain was written the other way was mailed after it bounced or unsubscribed."""
    use_example(rules_dir, "survey.yaml")
    running = await trigger_hub(smtp_url=smtp_server.url)
    shop = Shop(running.engine, clock)
    await _completed_order(shop, written.replace("maria", "anna"), "2101")
    await _scheduled(shop)
    async with running.engine.begin() as conn:
        await conn.execute(
            insert(EmailSuppression.__table__).values(
                address=listed.replace("maria", "anna"), reason="bounce", detail=None, created_at=clock.now()
            )
        )
    clock.advance(WEEK)
    cancelled = await _status(shop, "cancelled")
    assert cancelled.last_error == "suppressed address (bounce)"
    assert smtp_server.inbox.messages == []

    async with running.engine.begin() as conn:
        await conn.execute(
            insert(EmailSuppression.__table__).values(
                address=listed, reason="unsubscribe", detail=None, created_at=clock.now()
            )
        )
    await _completed_order(shop, written, "2102")  # unsubscribed before: the rule does not match
    traces = await _traces(shop, "post-sale-survey", 2)
    assert [t.matched for t in traces].count(False) == 1


async def test_a_batch_of_surveys_records_each_sent_message_once(
    trigger_hub, smtp_server: SmtpServer, clock, rules_dir: Path
):
    # The scheduler records a batch's sent e-mails in one statement with its outcomes: each sent message once,
    # with its lead, and nothing for one that was not sent.
    use_example(rules_dir, "survey.yaml")
    running = await trigger_hub(smtp_url=smtp_server.url)
    shop = Shop(running.engine, clock)
    leads = {n: (await _completed_order(shop, f"buyer{n}@example.com", f"300{n}"))["lead_id"] for n in range(3)}
    await _scheduled(shop, 3)
    async with running.engine.begin() as conn:  # the third address bounced while the surveys waited
        await conn.execute(
            insert(EmailSuppression.__table__).values(
                address="buyer2@example.com", reason="bounce", detail=None, created_at=clock.now()
            )
        )
    clock.advance(WEEK)

    async def settled() -> list[Any] | None:
        rows = await shop.actions(rule_id="post-sale-survey")
        return rows if all(r.status in ("done", "cancelled", "failed") for r in rows) else None

    rows = await wait_for(settled, timeout=30, what="every survey action done or cancelled")
    assert sorted(r.status for r in rows) == ["cancelled", "done", "done"]
    async with running.engine.connect() as conn:
        sent = (await conn.execute(select(EmailMessage.__table__))).all()
    inbox = {m["To"]: m["Message-ID"] for m in smtp_server.inbox.messages}
    assert sorted(inbox) == ["buyer0@example.com", "buyer1@example.com"]
    expected = {(inbox[f"buyer{n}@example.com"], "out", leads[n]) for n in (0, 1)}
    assert {(r.message_id, r.direction, r.lead_id) for r in sent} == expected and len(sent) == 2


async def test_smtp_down_is_retried_and_delivered_once(trigger_hub, clock, rules_dir: Path):
    use_example(rules_dir, "survey.yaml")
    from tests.helpers import free_port

    smtp = SmtpServer(free_port())  # not started: nothing listens on the port yet
    running = await trigger_hub(smtp_url=smtp.url)
    shop = Shop(running.engine, clock)
    await _completed_order(shop)
    await _scheduled(shop)
    clock.advance(WEEK)

    async def retried() -> Any:
        rows = await shop.actions()
        return rows[0] if rows[0].attempts >= 1 and rows[0].status == "pending" else None

    pending = await wait_for(retried, timeout=30, what="a failed attempt scheduled for retry")
    assert "SMTP server unavailable" in pending.last_error
    smtp.start()
    try:
        clock.advance(timedelta(minutes=1))  # past the first back-off (30s +- 20%)
        done = await _status(shop, "done")
        assert done.attempts == 2
        assert len(smtp.inbox.messages) == 1
        clock.advance(timedelta(hours=6))
        assert await running.hub.triggers.scheduler.run_once() == 0
        assert len(smtp.inbox.messages) == 1
    finally:
        smtp.stop()


async def test_a_survey_throttled_by_one_that_is_then_cancelled_is_sent(
    trigger_hub, smtp_server: SmtpServer, clock, rules_dir: Path
):
    """Found by an audit: order B's survey was dropped for the throttle while order A's still waited, and A's was
    then cancelled by its refund: the customer got no survey although B was delivered. B's waits, `throttled`,
    and is released when A's is cancelled; it is sent a week after B was completed, and only it."""
    use_example(rules_dir, "survey.yaml")
    running = await trigger_hub(smtp_url=smtp_server.url)
    shop = Shop(running.engine, clock)
    contact_id, lead_id = await shop.customer()
    orders, started = {}, clock.now()
    for day, number in ((0, "1001"), (3, "1002")):
        clock.advance(timedelta(days=day) - (clock.now() - started))
        orders[number] = await shop.order(contact_id, lead_id, number)
        oid = orders[number]
        await shop.emit("order.completed", oid, order_id=oid, contact_id=contact_id, lead_id=lead_id)
        await _traces(shop, "post-sale-survey", len(orders))
    first, second = await _scheduled(shop, 2)
    assert (first.status, second.status) == ("pending", "throttled")
    clock.advance(timedelta(days=2))  # day 5: order 1001 refunded
    await shop.set_status(orders["1001"], "refunded")
    clock.advance(timedelta(days=2))  # day 7: 1001's survey is cancelled, 1002's released

    async def released() -> list[Any] | None:
        rows = await shop.actions(rule_id="post-sale-survey")
        return rows if [r.status for r in rows] == ["cancelled", "pending"] else None

    await wait_for(released, timeout=30, what="1002's survey released by the cancellation of 1001's")
    assert smtp_server.inbox.messages == []
    clock.advance(timedelta(days=3))  # day 10: a week after 1002 was completed

    async def sent() -> list[Any] | None:
        rows = await shop.actions(rule_id="post-sale-survey")
        return rows if rows[1].status == "done" else None

    await wait_for(sent, timeout=30, what="1002's survey sent")
    (message,) = smtp_server.inbox.messages
    assert message["Subject"] == "How was your order #1002?"
