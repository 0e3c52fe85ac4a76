"""A run that hangs (a webhook up to its timeout) holds up neither the runs of its batch that ended nor the next."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.helpers import wait_for
from tests.triggers.test_execution import Engine


@pytest.fixture
async def hanging_receiver() -> AsyncIterator[tuple[int, asyncio.Event, list[str]]]:
    """A webhook receiver that answers nothing until released: its port, the release, the leads it was called for."""
    release, called = asyncio.Event(), []

    async def hang(request: web.Request) -> web.Response:
        called.append(request.query["lead"])
        await release.wait()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hang)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1], release, called  # type: ignore[union-attr]
    finally:
        release.set()
        await runner.cleanup()


def _notify_and_call(port: int) -> str:
    """Two rules on one event: a webhook to the hanging receiver and a task for a manager."""
    return f"""
rules:
  - id: notify
    on: lead.created
    do:
      - webhook: {{url: "http://127.0.0.1:{port}/hook?lead={{{{ lead.id }}}}", timeout: 60s}}
  - id: call
    on: lead.created
    do:
      - create_task: {{title: "call {{{{ contact.name }}}}"}}
"""


async def test_a_hanging_webhook_holds_up_neither_its_batch_nor_the_actions_due_after_it(
    engine: Any, tmp_path: Path, hanging_receiver: tuple[int, asyncio.Event, list[str]]
) -> None:
    """A batch was recorded when its slowest run ended: one webhook hanging for its 60 s left the task created
    beside it unrecorded (run again after a crash) and nothing due meanwhile was claimed (a callback's task a
    minute late). The ended runs are recorded and the next pass claims while the hanging one goes on."""
    port, release, called = hanging_receiver
    e = Engine(
        engine,
        tmp_path,
        _notify_and_call(port),
    )
    scheduler = e.scheduler()
    running = asyncio.create_task(scheduler.run())

    async def statuses() -> dict[tuple[str, str], str]:
        return {(row.rule_id, row.key): row.status for row in await e.shop.actions()}

    async def only_the_hanging_webhooks_left(count: int) -> dict[tuple[str, str], str]:
        now = await statuses()
        waiting = sorted(status for (rule, _), status in now.items() if rule == "notify")
        done = [status for (rule, _), status in now.items() if rule == "call"]
        return now if (waiting, done) == (["running"] * count, ["done"] * count) else {}

    try:
        contact_id, lead_id = await e.shop.customer()
        await e.lead_event(lead_id, contact_id)
        await wait_for(lambda: only_the_hanging_webhooks_left(1), what="the task recorded beside the hanging webhook")
        second_contact, second_lead = await e.shop.customer("olga@example.com", "Olga")
        await e.lead_event(second_lead, second_contact)
        scheduler.wake()
        await wait_for(lambda: only_the_hanging_webhooks_left(2), what="the next lead's task run while one hangs")
        assert called == [lead_id, second_lead]
        release.set()

        async def all_done() -> bool:
            return set((await statuses()).values()) == {"done"}

        await wait_for(all_done, what="the released webhooks recorded")
    finally:
        scheduler.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(running, 10)


async def test_a_stop_gives_back_a_hanging_run_of_a_batch_whose_other_runs_were_recorded(
    engine: Any, tmp_path: Path, hanging_receiver: tuple[int, asyncio.Event, list[str]]
) -> None:
    """The daemon's stop budget spent while a handed-off run hangs: it is `pending` again, its attempt not
    counted, and the runs recorded before stay as they were."""
    port, _, called = hanging_receiver
    e = Engine(
        engine,
        tmp_path,
        _notify_and_call(port),
    )
    contact_id, lead_id = await e.shop.customer()
    await e.lead_event(lead_id, contact_id)
    running = asyncio.create_task(e.scheduler().run())

    async def task_recorded() -> bool:
        return [row.status for row in await e.shop.actions(rule_id="call")] == ["done"]

    await wait_for(task_recorded, what="the task recorded beside the hanging webhook")
    assert called == [lead_id]
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    (webhook,) = await e.shop.actions(rule_id="notify")
    assert (webhook.status, webhook.attempts, webhook.lease_until) == ("pending", 0, None)
    assert [row.status for row in await e.shop.actions(rule_id="call")] == ["done"]
