"""A claimed batch keeps its lease while it runs: a slow action is not claimed and run again by another scheduler.
A stop that cuts a batch short records the runs that ended and gives back the rest at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select, update

from leadhub.store.models import EmailMessage, ScheduledAction
from leadhub.triggers.actions.base import Deps
from leadhub.triggers.clock import SystemClock
from leadhub.triggers.engine import RuleIndex
from leadhub.triggers.loader import load_rules
from leadhub.triggers.matcher import Matcher
from leadhub.triggers.sandbox import Templates
from leadhub.triggers.scheduler import Scheduler
from tests.helpers import wait_for
from tests.triggers.conftest import Shop, SmtpServer, stop_hub

LEASE = timedelta(seconds=3)  # the heartbeat extends it every second; the test outlives the first lease


class SlowReceiver:
    """A webhook receiver whose first delivery hangs until the test releases it; later ones answer at once."""

    def __init__(self, first_status: int = 200) -> None:
        self.first_status = first_status
        self.bodies: list[bytes] = []
        self.release = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        if len(self.bodies) == 1:
            await self.release.wait()
            return web.json_response({"first": True}, status=self.first_status)
        return web.json_response({"first": False})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"


@pytest.fixture
async def receiver(request: pytest.FixtureRequest) -> AsyncIterator[SlowReceiver]:
    server = SlowReceiver(getattr(request, "param", 200))
    await server.start()
    yield server
    server.release.set()
    assert server.runner is not None
    await server.runner.cleanup()


async def _one_webhook_due(engine: Any, tmp_path: Path, url: str) -> tuple[RuleIndex, Shop]:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "rules.yaml").write_text(
        f"""
rules:
  - id: crm
    on: lead.created
    do:
      - webhook: {{url: "{url}", timeout: 60s}}
"""
    )
    loaded = load_rules(tmp_path / "r", Templates())
    assert loaded.problems == []
    index = RuleIndex(loaded.rules)
    clock = SystemClock()
    shop = Shop(engine, clock)  # type: ignore[arg-type]
    contact_id, lead_id = await shop.customer()
    event = {
        "id": "ev-slow",
        "type": "lead.created",
        "subject_id": lead_id,
        "occurred_at": clock.now().isoformat(),
        "data": {"lead_id": lead_id, "contact_id": contact_id},
    }
    await Matcher(engine, lambda: index, clock).handle(event)
    return index, shop


def _scheduler(engine: Any, index: RuleIndex) -> Scheduler:
    return Scheduler(engine, lambda: index, Deps(engine=engine), SystemClock(), lease=LEASE)


async def _first_lease_ran_out(shop: Shop) -> Any:
    """Wait until the lease the first claim set has ended on the clock (the heartbeat may have moved it since)."""
    (row,) = await shop.actions()
    first_until = row.lease_until.replace(tzinfo=None)

    async def over() -> bool:
        return SystemClock().now().replace(tzinfo=None) > first_until + timedelta(seconds=0.5)

    await wait_for(over, timeout=LEASE.total_seconds() + 10, what="the first claim's lease to end")


async def test_a_slow_action_keeps_its_lease_and_runs_once(engine, tmp_path: Path, receiver: SlowReceiver) -> None:
    """The first scheduler's webhook outlasts the lease. Without a heartbeat the second scheduler saw a `running`
    row with an expired lease ("its worker died"), claimed it and posted the lead to the CRM a second time."""
    index, shop = await _one_webhook_due(engine, tmp_path, receiver.url)
    first, second = _scheduler(engine, index), _scheduler(engine, index)
    running = asyncio.create_task(first.run_once())

    async def delivered() -> int:
        if running.done():  # it ended before the receiver answered: show why
            pytest.fail(f"the first scheduler's pass ended early: {running.result()!r}")
        return len(receiver.bodies)

    await wait_for(delivered, timeout=30, what="the first delivery")
    await _first_lease_ran_out(shop)
    assert await second.run_once() == 0, "the second scheduler claimed an action still running"
    receiver.release.set()
    assert await running == 1
    (row,) = await shop.actions()
    assert (row.status, row.attempts, row.lease_until) == ("done", 1, None)
    assert len(receiver.bodies) == 1


@pytest.mark.parametrize("receiver", [500], indirect=True)
async def test_an_outcome_is_not_recorded_over_another_workers_claim(
    engine, tmp_path: Path, receiver: SlowReceiver
) -> None:
    """The first scheduler's lease ran out anyway (its heartbeat could not reach the store), the second one claimed
    the action and delivered it. The first one's late 500 must not turn that `done` back into a pending retry."""
    index, shop = await _one_webhook_due(engine, tmp_path, receiver.url)
    first, second = _scheduler(engine, index), _scheduler(engine, index)
    running = asyncio.create_task(first.run_once())

    async def delivered() -> int:
        if running.done():  # it ended before the receiver answered: show why
            pytest.fail(f"the first scheduler's pass ended early: {running.result()!r}")
        return len(receiver.bodies)

    await wait_for(delivered, timeout=30, what="the first delivery")
    table = ScheduledAction.__table__
    async with engine.begin() as conn:  # the first claim's lease as it is when its heartbeats did not get through
        await conn.execute(update(table).values(lease_until=SystemClock().now() - timedelta(seconds=1)))
    assert await second.run_once() == 1
    (row,) = await shop.actions()
    assert row.status == "done", row
    receiver.release.set()
    assert await running == 1
    (row,) = await shop.actions()
    assert (row.status, row.attempts, row.last_error) == ("done", 2, None)
    assert len(receiver.bodies) == 2


def _mail_and_slow_webhook(rules_dir: Path, url: str) -> Path:
    """An e-mail and a webhook for each new lead, in one batch; a task six minutes later (past the lease)."""
    templates = rules_dir.parent / "templates"
    (templates / "email").mkdir(parents=True)
    (templates / "email" / "hello.subject.txt").write_text("Hello {{ contact.name }}\n")
    (templates / "email" / "hello.txt").write_text("Thank you for writing in.\n")
    (rules_dir / "rules.yaml").write_text(
        f"""
rules:
  - id: welcome
    on: lead.created
    do:
      - send_email: {{template: hello, to: "{{{{ contact.email }}}}"}}
  - id: crm
    on: lead.created
    do:
      - webhook: {{url: "{url}"}}
  - id: follow-up
    on: lead.created
    wait: 6m
    do:
      - create_task: {{title: "Follow up"}}
"""
    )
    return templates


async def _sent_rows(engine: Any) -> int:
    async with engine.connect() as conn:
        return len((await conn.execute(select(EmailMessage.__table__.c.message_id))).all())


async def test_a_stop_mid_batch_records_what_ran_and_gives_back_the_rest(
    trigger_hub, clock, rules_dir: Path, smtp_server: SmtpServer, receiver: SlowReceiver
) -> None:
    """Found by an audit: the stop cancelled the scheduler while the CRM webhook hung (it may take 10 s; the stop
    waits half of LEADHUB_SHUTDOWN_TIMEOUT), and nothing of the batch was recorded. The e-mail the SMTP server had
    accepted stayed `running` without its sent row; after the five-minute lease it was claimed and sent again."""
    templates = _mail_and_slow_webhook(rules_dir, receiver.url)
    settings = {"smtp_url": smtp_server.url, "templates_dir": str(templates), "shutdown_timeout": 1}
    first = await trigger_hub(**settings)
    shop = Shop(first.engine, clock)
    contact_id, lead_id = await shop.customer()
    await shop.emit("lead.created", lead_id, lead_id=lead_id, contact_id=contact_id)

    async def both_out() -> bool:
        return len(smtp_server.inbox.messages) == 1 and len(receiver.bodies) == 1

    await wait_for(both_out, timeout=30, what="the e-mail sent and the webhook posted")
    await stop_hub(first)  # the webhook still hangs: the scheduler is cancelled mid-batch
    runs = {row.rule_id: row for row in await shop.actions()}
    assert (runs["welcome"].status, runs["welcome"].attempts) == ("done", 1), runs["welcome"]
    assert await _sent_rows(first.engine) == 1
    crm = runs["crm"]
    assert (crm.status, crm.attempts, crm.lease_until, crm.last_error) == ("pending", 0, None, None), crm

    second = await trigger_hub(**settings)  # the restart takes the webhook at once, not after the lease

    async def crm_done() -> Any:
        (row,) = await shop.actions(rule_id="crm")
        return row if row.status == "done" else None

    crm = await wait_for(crm_done, timeout=30, what="the webhook given back to run after the restart")
    assert (crm.attempts, len(receiver.bodies)) == (1, 2)
    clock.advance(timedelta(minutes=6))  # past the first claim's lease: nothing of it is claimed again

    async def followed_up() -> bool:
        (row,) = await shop.actions(rule_id="follow-up")
        return row.status == "done"

    await wait_for(followed_up, timeout=30, what="the scheduler's pass after the lease")
    assert [row.status for row in await shop.actions(rule_id="welcome")] == ["done"]
    assert len(smtp_server.inbox.messages) == 1 and await _sent_rows(second.engine) == 1
    assert len(receiver.bodies) == 2
