"""Each action type through the running hub: tasks in the API, signed webhooks with retries, lead updates,
Telegram messages to a local fake of the Bot API."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from leadhub.store.models import OutboxEvent
from leadhub.triggers.actions.notify_telegram import fit_text
from tests.helpers import wait_for
from tests.triggers.conftest import Shop


def _rule(rules_dir: Path, text: str) -> None:
    (rules_dir / "test.yaml").write_text(text)


async def _new_lead(shop: Shop) -> tuple[str, str]:
    contact_id, lead_id = await shop.customer("maria@example.com", "Maria")
    await shop.emit("lead.created", lead_id, lead_id=lead_id, contact_id=contact_id, channel="shop", tags=[])
    return contact_id, lead_id


async def _action(shop: Shop, rule_id: str, status: str) -> Any:
    async def probe() -> Any:
        rows = await shop.actions(rule_id=rule_id)
        return rows[0] if rows and rows[0].status == status else None

    return await wait_for(probe, timeout=30, what=f"{rule_id} to be {status}")


async def test_create_task_is_listed_by_lead(trigger_hub, clock, rules_dir: Path) -> None:
    _rule(
        rules_dir,
        """
rules:
  - id: call-back
    on: lead.created
    do:
      - create_task: {title: "Call {{ contact.name }}", due: 15m, assignee: "{{ lead.owner }}"}
""",
    )
    running = await trigger_hub()
    shop = Shop(running.engine, clock)
    _, lead_id = await _new_lead(shop)
    (task,) = await running.wait_items("/api/tasks", 1, timeout=30, lead_id=lead_id)
    assert (task["title"], task["assignee"], task["status"]) == ("Call Maria", "anna", "open")
    assert task["due_at"].startswith((clock.now() + timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M"))

    async def run_recorded() -> list[dict[str, Any]] | None:
        # The task commits in its own transaction; the run's outcome is recorded after it, so wait for that too.
        runs = (await running.api("/api/actions", rule_id="call-back"))["items"]
        return runs if runs and all(r["status"] in ("done", "failed", "cancelled") for r in runs) else None

    runs = await wait_for(run_recorded, timeout=30, what="the create_task run's outcome")
    assert [(r["status"], r["result"]["task_id"]) for r in runs] == [("done", task["id"])]
    assert (await running.api("/api/tasks", lead_id="nobody"))["items"] == []


async def test_webhook_is_signed_and_retried_with_the_same_delivery_id(trigger_hub, clock, rules_dir, fake) -> None:
    crm = await fake([(503, {"error": "busy"}), (200, {"ok": True})])
    _rule(
        rules_dir,
        f"""
rules:
  - id: crm
    on: lead.created
    do:
      - webhook:
          url: "{crm.url}/hooks/leadhub"
          secret: s3cret
          body: {{lead_id: "{{{{ lead.id }}}}", email: "{{{{ contact.email }}}}", source: leadhub}}
""",
    )
    running = await trigger_hub()
    shop = Shop(running.engine, clock)
    _, lead_id = await _new_lead(shop)

    async def retried() -> Any:
        rows = await shop.actions(rule_id="crm")
        return rows[0] if rows and rows[0].attempts == 1 and rows[0].status == "pending" else None

    pending = await wait_for(retried, timeout=30, what="the webhook to be retried")
    assert "HTTP 503" in pending.last_error
    clock.advance(timedelta(minutes=1))
    done = await _action(shop, "crm", "done")
    assert done.attempts == 2 and len(crm.requests) == 2
    first, second = crm.requests
    assert first["headers"]["X-Leadhub-Delivery"] == second["headers"]["X-Leadhub-Delivery"]
    headers, body = second["headers"], second["body"]
    assert json.loads(body) == {"lead_id": lead_id, "email": "maria@example.com", "source": "leadhub"}
    signed = f"{headers['X-Leadhub-Delivery']}.{headers['X-Leadhub-Timestamp']}.".encode() + body
    expected = "sha256=" + hmac.new(b"s3cret", signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Leadhub-Signature"], expected)


async def test_webhook_4xx_fails_without_retry(trigger_hub, clock, rules_dir, fake) -> None:
    crm = await fake([(404, {"error": "no such hook"})])
    _rule(
        rules_dir,
        f"""
rules:
  - id: crm
    on: lead.created
    do:
      - webhook: {{url: "{crm.url}/gone"}}
""",
    )
    running = await trigger_hub()
    await _new_lead(Shop(running.engine, clock))
    failed = await _action(Shop(running.engine, clock), "crm", "failed")
    assert "HTTP 404" in failed.last_error and failed.attempts == 1


async def test_update_lead_changes_status_tags_owner_and_emits_events(trigger_hub, clock, rules_dir: Path) -> None:
    _rule(
        rules_dir,
        """
rules:
  - id: vip
    on: lead.created
    if: "contact.email.endswith('@example.com')"
    do:
      - update_lead: {status: in_progress, owner: "bob", add_tags: [vip]}
""",
    )
    running = await trigger_hub()
    shop = Shop(running.engine, clock)
    _, lead_id = await _new_lead(shop)
    await _action(shop, "vip", "done")
    lead = await running.api(f"/api/leads/{lead_id}")
    assert (lead["status"], lead["owner"], lead["tags"]) == ("in_progress", "bob", ["vip"])
    async with running.engine.connect() as conn:
        kinds = (await conn.execute(select(OutboxEvent.type).where(OutboxEvent.subject_id == lead_id))).scalars()
        assert sorted(kinds) == [
            "lead.created",
            "lead.owner_changed",
            "lead.status_changed",
            "lead.tags_changed",
            "lead.updated",
        ]


async def test_notify_telegram_against_a_fake_bot_api(trigger_hub, clock, rules_dir, fake) -> None:
    bot = await fake([(200, {"ok": True, "result": {"message_id": 77}})])
    _rule(
        rules_dir,
        f"""
rules:
  - id: tell-managers
    on: lead.created
    do:
      - notify_telegram:
          api_url: "{bot.url}"
          bot_token: "123:SECRET-TOKEN"
          chat_id: -100200
          text: "New lead from {{{{ contact.name }}}} <{{{{ contact.email }}}}>"
""",
    )
    running = await trigger_hub()
    shop = Shop(running.engine, clock)
    await _new_lead(shop)
    done = await _action(shop, "tell-managers", "done")
    assert done.result == {"message_id": 77}
    (request,) = bot.requests
    assert request["path"] == "/bot123:SECRET-TOKEN/sendMessage"
    assert json.loads(request["body"]) == {"chat_id": -100200, "text": "New lead from Maria <maria@example.com>"}


@pytest.mark.parametrize(
    ("text", "sent"),
    [
        ("😀" * 3000, "😀" * 2048),  # 6,000 UTF-16 units: the Bot API counts units, and refused 3,000 emoji
        ("a" * 4095 + "😀", "a" * 4095),  # never half an emoji
        ("я" * 5000, "я" * 4096),
        ("short 😀", "short 😀"),
    ],
)
def test_a_telegram_text_is_cut_to_4096_utf16_units(text: str, sent: str) -> None:
    assert fit_text(text) == sent
    assert len(fit_text(text).encode("utf-16-le")) <= 2 * 4096


@pytest.mark.store_independent  # the action's rendering; once, on the embedded default: not about the store
async def test_a_long_telegram_text_is_sent_cut_to_what_the_bot_api_takes(trigger_hub, clock, rules_dir, fake) -> None:
    bot = await fake([(200, {"ok": True, "result": {"message_id": 78}})])
    _rule(
        rules_dir,
        f"""
rules:
  - id: tell-managers
    on: lead.created
    do:
      - notify_telegram:
          api_url: "{bot.url}"
          bot_token: "123:SECRET-TOKEN"
          chat_id: 1
          text: "{{{{ '🔥' * 3000 }}}}"
""",
    )
    running = await trigger_hub()
    await _new_lead(Shop(running.engine, clock))
    await _action(Shop(running.engine, clock), "tell-managers", "done")
    (request,) = bot.requests
    assert json.loads(request["body"])["text"] == "🔥" * 2048


def _telegram_rule(rules_dir: Path, api_url: str) -> None:
    _rule(
        rules_dir,
        f"""
rules:
  - id: tell-managers
    on: lead.created
    do:
      - notify_telegram: {{api_url: "{api_url}", bot_token: "123:SECRET-TOKEN", chat_id: 1, text: hi}}
""",
    )


async def test_telegram_error_is_recorded_without_the_token(trigger_hub, clock, rules_dir, fake) -> None:
    bot = await fake([(400, {"ok": False, "description": "Bad Request: chat not found"})])
    _telegram_rule(rules_dir, bot.url)
    running = await trigger_hub()
    shop = Shop(running.engine, clock)
    await _new_lead(shop)
    failed = await _action(shop, "tell-managers", "failed")
    assert "chat not found" in failed.last_error and "SECRET" not in failed.last_error


@pytest.mark.parametrize("answer", [{"ok": True, "result": True}, [{"ok": True}], True, "sent", b"<p>OK</p>"])
async def test_a_telegram_answer_of_another_shape_is_a_message_sent_once(
    trigger_hub, clock, rules_dir, fake, answer: Any
) -> None:
    """A 200 whose JSON is not an object, or whose result is not a message, raised AttributeError: retried as an
    unexpected error, and each of the 8 attempts posted the message to the chat again. One that is not JSON failed
    the run, though the message was posted."""
    bot = await fake([(200, answer)])
    _telegram_rule(rules_dir, bot.url)
    running = await trigger_hub()
    shop = Shop(running.engine, clock)
    await _new_lead(shop)

    async def settled() -> Any:
        rows = await shop.actions(rule_id="tell-managers")
        return rows[0] if rows and rows[0].attempts >= 1 and rows[0].status != "running" else None

    run = await wait_for(settled, timeout=30, what="the message's first run to be recorded")
    assert (run.status, run.attempts, run.result) == ("done", 1, {"message_id": None}), run.last_error
    assert len(bot.requests) == 1


async def test_a_task_for_a_lead_without_owner_is_unassigned(trigger_hub, clock, rules_dir: Path) -> None:
    """`{{ lead.owner }}` of a lead nobody owns rendered the word None: the task went to a manager called "None"."""
    from sqlalchemy import update

    from leadhub.store.models import Lead

    _rule(
        rules_dir,
        """
rules:
  - id: call-back
    on: lead.created
    do:
      - create_task: {title: "Call {{ contact.name }} {{ contact.company }}", assignee: "{{ lead.owner }}"}
""",
    )
    running = await trigger_hub()
    shop = Shop(running.engine, clock)
    contact_id, lead_id = await shop.customer("maria@example.com", "Maria")
    async with running.engine.begin() as conn:
        await conn.execute(update(Lead.__table__).where(Lead.__table__.c.id == lead_id).values(owner=None))
    await shop.emit("lead.created", lead_id, lead_id=lead_id, contact_id=contact_id, channel="shop", tags=[])
    (task,) = await running.wait_items("/api/tasks", 1, timeout=30, lead_id=lead_id)
    assert (task["title"], task["assignee"]) == ("Call Maria", None)


async def test_an_api_answer_that_quotes_the_url_leaves_the_token_out_of_the_record(
    trigger_hub, clock, rules_dir, fake
) -> None:
    """A proxy or self-hosted Bot API (`api_url`) that answers 404 quoting the request line ("Cannot POST
    /bot123:.../sendMessage") put the bot token into the action's recorded error, which /api/actions shows."""
    bot = await fake([(404, {"error": "Cannot POST /bot123:SECRET-TOKEN/sendMessage"})])
    _telegram_rule(rules_dir, bot.url)
    running = await trigger_hub()
    shop = Shop(running.engine, clock)
    await _new_lead(shop)
    failed = await _action(shop, "tell-managers", "failed")
    assert "HTTP 404" in failed.last_error and "SECRET" not in failed.last_error, failed.last_error
    (run,) = (await running.api("/api/actions", rule_id="tell-managers"))["items"]
    assert "SECRET" not in json.dumps(run)


async def test_action_runs_are_counted_by_type_and_outcome(trigger_hub, clock, rules_dir, fake) -> None:
    """No metric counted the rule engine's work: a CRM webhook failing for days showed nowhere an alert could see."""
    crm = await fake([(400, {"error": "no such pipeline"})])
    _rule(
        rules_dir,
        f"""
rules:
  - id: to-crm
    on: lead.created
    do:
      - webhook: {{url: "{crm.url}/hook"}}
      - create_task: {{title: "Call {{{{ contact.name }}}}"}}
""",
    )
    running = await trigger_hub()
    shop = Shop(running.engine, clock)
    await _new_lead(shop)
    await _action(shop, "to-crm", "failed")

    async def counted() -> str | None:
        async with running.session.get(running.url("/metrics")) as response:
            text = await response.text()
        failed = 'leadhub_action_runs_total{action="webhook",outcome="failed"} 1.0'
        done = 'leadhub_action_runs_total{action="create_task",outcome="done"} 1.0'
        return text if failed in text and done in text else None

    await wait_for(counted, timeout=30, what="the failed webhook and the done task in /metrics")


async def test_a_scheduler_pass_the_store_refuses_is_counted_as_a_store_error(trigger_hub) -> None:
    """Only the pipeline counted store failures: a process running the rule engine alone (LEADHUB_ROLES=http,triggers)
    could fail every scheduler pass and leadhub_store_errors_total stayed at 0."""
    running = await trigger_hub()
    async with running.engine.begin() as conn:  # the scheduler's table goes away: every pass fails in the store
        await conn.execute(text("ALTER TABLE scheduled_action RENAME TO scheduled_action_away"))
    running.hub.triggers.scheduler.wake()

    async def counted() -> str | None:
        async with running.session.get(running.url("/metrics")) as response:
            body = await response.text()
        lines = [line for line in body.splitlines() if line.startswith("leadhub_store_errors_total{")]
        return body if any('operation="scheduler"' in line for line in lines) else None

    await wait_for(counted, timeout=30, what="the scheduler's store error in /metrics")
    async with running.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE scheduled_action_away RENAME TO scheduled_action"))


async def test_an_assignee_or_owner_too_long_to_store_fails_at_once_not_cut(
    trigger_hub, clock, rules_dir: Path
) -> None:
    """Found by an audit: an assignee or owner rendering past the column's 200 characters was refused by PostgreSQL
    (`value too long for type character varying(200)`) as an unexpected error, retried 8 times with a traceback
    each; SQLite stored it. Both now fail the run at once, saying how long it was, and store nothing cut short."""
    _rule(
        rules_dir,
        """
rules:
  - id: long-assignee
    on: lead.created
    do:
      - create_task: {title: "Call", assignee: "{{ contact.name * 41 }}"}
  - id: long-owner
    on: lead.created
    do:
      - update_lead: {owner: "{{ contact.name * 41 }}"}
""",
    )
    running = await trigger_hub()
    shop = Shop(running.engine, clock)
    _, lead_id = await _new_lead(shop)  # "Maria" * 41: 205 characters
    task = await _action(shop, "long-assignee", "failed")
    owner = await _action(shop, "long-owner", "failed")
    assert (task.attempts, task.last_error) == (
        1,
        "assignee renders to 205 characters; at most 200 are stored: shorten the template",
    )
    assert (owner.attempts, owner.last_error) == (
        1,
        "owner renders to 205 characters; at most 200 are stored: shorten the template",
    )
    assert (await running.api("/api/tasks", lead_id=lead_id))["items"] == []
    assert (await running.api(f"/api/leads/{lead_id}"))["owner"] == "anna", "the owner is left as it was"
