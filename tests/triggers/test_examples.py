"""Every shipped example rule, end to end through the running hub: real SMTP, local fakes of Telegram and the CRM."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import insert, select, update

from leadhub.connectors.twilio import twilio_signature
from leadhub.ids import new_id
from leadhub.store.connector_state import load_state
from leadhub.store.models import ContactIdentifier, Inquiry, Lead, Order, OutboxEvent
from leadhub.triggers.audiences import birthday, is_birthday
from leadhub.triggers.loader import load_rules
from leadhub.triggers.sandbox import Templates
from leadhub.triggers.schedules import STATE_OWNER
from tests.helpers import wait_for
from tests.triggers.conftest import EXAMPLES, START, Shop, SmtpServer


def _example(rules_dir: Path, name: str, **urls: str) -> None:
    """Copy an example, pointing its Telegram and CRM endpoints at local fakes."""
    text = (EXAMPLES / name).read_text()
    if "telegram" in urls:
        text = text.replace(
            'bot_token: "123456:replace-me"', f'bot_token: "123456:replace-me"\n          api_url: "{urls["telegram"]}"'
        )
    if "crm" in urls:
        text = text.replace("https://crm.example.com/hooks/leadhub", f"{urls['crm']}/hooks/leadhub")
    (rules_dir / name).write_text(text)


async def _status(shop: Shop, rule_id: str, status: str, count: int = 1) -> list[Any]:
    async def probe() -> list[Any] | None:
        rows = await shop.actions(rule_id=rule_id)
        return rows if len(rows) == count and all(r.status == status for r in rows) else None

    return await wait_for(probe, timeout=30, what=f"{count} {rule_id} action(s) {status}")


async def _callback_lead(shop: Shop) -> tuple[str, str]:
    contact_id, lead_id = await shop.customer("petr@example.com", "Petr")
    async with shop.engine.begin() as conn:
        await conn.execute(update(Lead.__table__).where(Lead.id == lead_id).values(tags=["callback_requested"]))
    await shop.emit("lead.created", lead_id, lead_id=lead_id, contact_id=contact_id, tags=["callback_requested"])
    return contact_id, lead_id


def test_every_example_passes_rules_check() -> None:
    loaded = load_rules(EXAMPLES, Templates())
    assert loaded.problems == []
    assert {r.id for r in loaded.rules} >= {
        "callback-task", "callback-escalation", "unpaid-order-reminder", "crm-webhook", "weekly-digest",
        "post-sale-survey", "low-score-task", "reactivation-90d", "birthday-greeting",
    }  # fmt: skip


async def test_callback_task_escalates_when_not_done(trigger_hub, clock, rules_dir: Path, fake) -> None:
    bot = await fake([(200, {"ok": True, "result": {"message_id": 5}})])
    _example(rules_dir, "sales.yaml", telegram=bot.url)
    running = await trigger_hub()
    shop = Shop(running.engine, clock)
    _, lead_id = await _callback_lead(shop)
    (task,) = await running.wait_items("/api/tasks", 1, timeout=30, lead_id=lead_id)
    assert task["title"] == "Call back Petr" and task["status"] == "open" and task["assignee"] == "anna"
    assert datetime.fromisoformat(task["due_at"]) == START + timedelta(minutes=15)
    (pending,) = await _status(shop, "callback-escalation", "pending")
    assert pending.due_at.replace(tzinfo=UTC) == START + timedelta(minutes=15)
    clock.advance(timedelta(minutes=15))
    await _status(shop, "callback-escalation", "done")
    (request,) = bot.requests
    assert json.loads(request["body"])["text"] == "Overdue: Call back Petr (due 10:15 UTC)"


async def test_callback_escalation_is_cancelled_when_the_task_is_done(trigger_hub, clock, rules_dir, fake) -> None:
    bot = await fake([(200, {"ok": True, "result": {"message_id": 5}})])
    _example(rules_dir, "sales.yaml", telegram=bot.url)
    running = await trigger_hub()
    shop = Shop(running.engine, clock)
    _, lead_id = await _callback_lead(shop)
    (task,) = await running.wait_items("/api/tasks", 1, timeout=30, lead_id=lead_id)
    await _status(shop, "callback-escalation", "pending")
    clock.advance(timedelta(minutes=10))
    async with running.session.patch(running.url(f"/api/tasks/{task['id']}"), json={"status": "done"}) as response:
        assert response.status == 200, await response.text()
        assert (await response.json())["status"] == "done"
    async with running.session.patch(running.url("/api/tasks/nope"), json={"status": "done"}) as response:
        assert response.status == 404
    async with running.session.patch(running.url(f"/api/tasks/{task['id']}"), json={"status": "x"}) as response:
        assert response.status == 400
    clock.advance(timedelta(minutes=5))
    (cancelled,) = await _status(shop, "callback-escalation", "cancelled")
    assert cancelled.last_error == "unless is true: task.status == 'done'"
    assert bot.requests == []


CALLBACK_HUB = {
    "connectors": [
        {"name": "site-form", "type": "form", "rate_limit": None},
        {"name": "twilio", "type": "twilio", "secret": "twilio_test_auth_token"},
    ],
    "default_region": "RU",
}


async def _missed_call(running: Any, call_sid: str, phone: str) -> None:
    """A signed Twilio status callback: the inbound call `call_sid` from `phone` rang out."""
    form = {"CallSid": call_sid, "CallStatus": "no-answer", "Direction": "inbound", "From": phone, "To": "+74950000000"}
    signature = twilio_signature(b"twilio_test_auth_token", "https://shop.example/hooks/twilio", form.items())
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature}
    async with await running.post("/hooks/twilio", data=urlencode(form), headers=headers) as response:
        assert response.status == 202, await response.text()


async def _lead_tags(running: Any, lead_id: str, tags: list[str]) -> None:
    async def probe() -> bool:
        return (await running.api(f"/api/leads/{lead_id}"))["tags"] == tags

    await wait_for(probe, timeout=30, what=f"lead {lead_id} tagged {tags}")


async def _lead_events(running: Any, lead_id: str) -> list[str]:
    table = OutboxEvent.__table__
    query = select(table.c.type).where(table.c.subject_id == lead_id).order_by(table.c.id)
    async with running.engine.connect() as conn:
        return list((await conn.execute(query)).scalars())


async def test_a_missed_call_from_a_customer_with_an_open_lead_is_one_callback_task(
    trigger_hub, clock, rules_dir, fake
) -> None:
    """The customer ordered through the form and then called: the call joins the form lead, and the callback
    still becomes a task. Another missed call while it is open adds none; once it is done, the next one does."""
    crm, bot = await fake([(200, {"ok": True})] * 5), await fake([(200, {"ok": True})])
    _example(rules_dir, "sales.yaml", telegram=bot.url, crm=crm.url)
    running = await trigger_hub(**CALLBACK_HUB)
    async with await running.post("/hooks/site-form", json={"name": "Olga", "phone": "+79005550101"}) as response:
        assert response.status == 202, await response.text()
    (lead,) = await running.wait_items("/api/leads", 1)
    await _missed_call(running, "CA00000000000000000000000000000011", "+79005550101")
    await _lead_tags(running, lead["id"], ["callback_requested"])
    (task,) = await running.wait_items("/api/tasks", 1, timeout=30)
    assert task["lead_id"] == lead["id"] and task["title"] == "Call back Olga" and task["status"] == "open"
    assert [lead["id"]] == [item["id"] for item in (await running.api("/api/leads"))["items"]]

    clock.advance(timedelta(minutes=3))
    await _missed_call(running, "CA00000000000000000000000000000012", "+79005550101")
    await running.wait_items("/api/inquiries", 3)
    assert await _lead_events(running, lead["id"]) == ["lead.created", "lead.updated", "lead.tags_changed"]
    assert len((await running.api("/api/tasks"))["items"]) == 1  # the tag was on: no event for a rule, no task

    async with running.session.patch(running.url(f"/api/tasks/{task['id']}"), json={"status": "done"}) as response:
        assert response.status == 200, await response.text()
    await _lead_tags(running, lead["id"], [])  # callback-done took the tag off
    await _missed_call(running, "CA00000000000000000000000000000013", "+79005550101")
    tasks = await running.wait_items("/api/tasks", 2, timeout=30)
    assert {t["lead_id"] for t in tasks} == {lead["id"]} and len((await running.api("/api/leads"))["items"]) == 1


async def test_unpaid_order_reminder_and_crm_webhook(trigger_hub, smtp_server: SmtpServer, clock, rules_dir, fake):
    crm = await fake([(200, {"ok": True})])
    _example(rules_dir, "sales.yaml", crm=crm.url)
    running = await trigger_hub(smtp_url=smtp_server.url)
    shop = Shop(running.engine, clock)
    contact_id, lead_id = await shop.customer("olga@example.com", "Olga")
    await shop.emit("lead.created", lead_id, lead_id=lead_id, contact_id=contact_id)
    await _status(shop, "crm-webhook", "done")
    (hook,) = crm.requests
    assert json.loads(hook["body"]) == {"lead_id": lead_id, "status": "new", "email": "olga@example.com"}
    unpaid = await shop.order(contact_id, lead_id, "2001", status="new")
    paid = await shop.order(contact_id, lead_id, "2002", status="new")
    for order_id in (unpaid, paid):
        await shop.emit("order.created", order_id, order_id=order_id, contact_id=contact_id, lead_id=lead_id)
    await _status(shop, "unpaid-order-reminder", "pending", count=2)
    await shop.set_status(paid, "paid")
    clock.advance(timedelta(days=1))
    rows = await wait_for(
        lambda: _settled(shop, "unpaid-order-reminder"), timeout=30, what="both reminders to be settled"
    )
    assert sorted(r.status for r in rows) == ["cancelled", "done"]
    (message,) = smtp_server.inbox.messages
    assert message["Subject"] == "Your order #2001 is waiting for payment" and message["To"] == "olga@example.com"


async def _settled(shop: Shop, rule_id: str) -> list[Any] | None:
    rows = await shop.actions(rule_id=rule_id)
    return rows if rows and all(r.status not in ("pending", "running") for r in rows) else None


async def _registered(running: Any, *rule_ids: str) -> None:
    async def seen() -> bool:
        return all([await load_state(running.engine, STATE_OWNER, rule_id) is not None for rule_id in rule_ids])

    await wait_for(seen, timeout=30, what="the cron rules to be registered")


async def test_weekly_digest_on_monday_morning(trigger_hub, clock, rules_dir: Path, fake) -> None:
    bot = await fake([(200, {"ok": True, "result": {"message_id": 9}})])
    _example(rules_dir, "sales.yaml", telegram=bot.url)
    running = await trigger_hub()
    shop = Shop(running.engine, clock)
    await _registered(running, "weekly-digest")
    clock.advance(datetime(2026, 3, 9, 6, 0, 5, tzinfo=UTC) - START)  # Monday 09:00 in Moscow
    await _status(shop, "weekly-digest", "done")
    assert json.loads(bot.requests[0]["body"])["text"] == "Weekly review of open tasks"


async def _inquiry(shop: Shop, contact_id: str, fields: dict[str, Any]) -> None:
    now = shop.clock.now()
    async with shop.engine.begin() as conn:
        await conn.execute(
            insert(Inquiry.__table__).values(
                id=new_id(), key=f"form:test:{new_id()}", channel="form", connector="site-form", received_at=now,
                contact_id=contact_id, lead_id=None, name=None, email=None, phone=None, message=None, fields=fields,
                dropped=None, content_type="application/json", meta={}, payload=b"{}", created_at=now,
            )
        )  # fmt: skip


async def test_reactivation_after_90_days_without_orders(trigger_hub, smtp_server: SmtpServer, clock, rules_dir):
    _example(rules_dir, "customers.yaml")
    running = await trigger_hub(smtp_url=smtp_server.url)
    shop = Shop(running.engine, clock)
    lapsed = await shop.customer("lapsed@example.com", "Lena")
    recent = await shop.customer("recent@example.com", "Rita")
    await shop.customer("never@example.com", "Nina")  # never ordered: not a reactivation
    old_order = await shop.order(*lapsed, "3001")
    await shop.order(*recent, "3002")
    long_ago = START - timedelta(days=100)
    async with shop.engine.begin() as conn:
        table = Order.__table__
        await conn.execute(update(table).where(table.c.id == old_order).values(placed_at=long_ago, created_at=long_ago))
    await _registered(running, "reactivation-90d")
    clock.advance(datetime(2026, 3, 3, 7, 0, 5, tzinfo=UTC) - START)  # Tuesday 10:00 in Moscow: office open
    (action,) = await _status(shop, "reactivation-90d", "done")
    assert action.event["subject_id"] == lapsed[0]
    (message,) = smtp_server.inbox.messages
    assert message["To"] == "lapsed@example.com" and message["Subject"] == "We miss you, Lena"
    assert "(22.11.2025)" in message.get_payload(decode=True).decode()
    clock.advance(timedelta(days=1))  # the next day: the throttle (180 days) keeps her from a second email
    await wait_for(lambda: _traces_for(shop, "reactivation-90d", 2), timeout=30, what="the second day's evaluation")
    assert len(smtp_server.inbox.messages) == 1


async def _traces_for(shop: Shop, rule_id: str, count: int) -> bool:
    from sqlalchemy import func, select

    from leadhub.store.models import RuleTrace

    async with shop.engine.connect() as conn:
        query = select(func.count()).select_from(RuleTrace.__table__).where(RuleTrace.rule_id == rule_id)
        return (await conn.execute(query)).scalar_one() >= count


async def test_birthday_greeting_waits_for_the_end_of_quiet_hours(
    trigger_hub, smtp_server: SmtpServer, clock, rules_dir
):
    _example(rules_dir, "customers.yaml")
    running = await trigger_hub(smtp_url=smtp_server.url)
    shop = Shop(running.engine, clock)
    born_today, _ = await shop.customer("born@example.com", "Boris")
    other, _ = await shop.customer("other@example.com", "Olga")
    await _inquiry(shop, born_today, {"birthday": "03.03.1990"})
    await _inquiry(shop, other, {"birthday": "1991-07-14"})
    await _registered(running, "birthday-greeting")
    clock.advance(datetime(2026, 3, 3, 5, 0, 5, tzinfo=UTC) - START)  # 08:00 in Moscow: still quiet hours
    (action,) = await _status(shop, "birthday-greeting", "pending")
    assert action.due_at.replace(tzinfo=UTC) == datetime(2026, 3, 3, 6, 0, tzinfo=UTC)  # 09:00 in Moscow
    assert action.event["data"]["birthday"] == "03.03.1990"
    clock.advance(timedelta(hours=1))
    await _status(shop, "birthday-greeting", "done")
    (message,) = smtp_server.inbox.messages
    assert message["To"] == "born@example.com" and message["Subject"] == "Happy birthday, Boris!"


def test_birthday_formats_and_29_february() -> None:
    assert birthday("1990-05-17") == (5, 17) and birthday("05-17") == (5, 17)
    assert birthday("17.05.1990") == (5, 17) and birthday("17.05") == (5, 17)
    assert birthday("31.02.1990") is None and birthday("tomorrow") is None
    assert birthday("1990-02-29") is None and birthday("29.02.1990") is None  # 1990 had no 29 February
    leap = birthday("29.02.2000")
    assert leap == (2, 29)
    assert is_birthday(leap, datetime(2027, 2, 28).date()) and not is_birthday(leap, datetime(2028, 2, 28).date())
    assert is_birthday(leap, datetime(2028, 2, 29).date())


async def test_the_callback_task_names_a_number_that_is_no_valid_number(trigger_hub, clock, rules_dir: Path) -> None:
    """A missed call from 951218115 (no valid number: the contact has no name and no phone) made the task
    "Call back a new lead", without the number to call."""
    _example(rules_dir, "sales.yaml")
    running = await trigger_hub()
    shop = Shop(running.engine, clock)
    contact_id, lead_id = await shop.customer(email=None, name=None)  # type: ignore[arg-type]
    async with shop.engine.begin() as conn:
        await conn.execute(
            insert(ContactIdentifier.__table__).values(
                kind="phone_digits", value="951218115", contact_id=contact_id, created_at=clock.now()
            )
        )
        await conn.execute(update(Lead.__table__).where(Lead.id == lead_id).values(tags=["callback_requested"]))
    await shop.emit("lead.created", lead_id, lead_id=lead_id, contact_id=contact_id, tags=["callback_requested"])
    (task,) = await running.wait_items("/api/tasks", 1, timeout=30, lead_id=lead_id)
    assert task["title"] == "Call back 951218115"
