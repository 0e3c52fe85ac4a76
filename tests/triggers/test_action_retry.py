"""Retrying failed trigger runs: `POST /api/actions/{id}/retry` on a running hub and `leadhub actions retry`."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from sqlalchemy import insert, select

from leadhub.ids import new_id
from leadhub.store.db import create_engine, upgrade
from leadhub.store.models import ScheduledAction
from tests.helpers import free_port, run_leadhub, wait_for
from tests.triggers.conftest import Shop

TOKEN = "retry-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BACKOFF_CAP = timedelta(hours=7)  # more than the scheduler's longest back-off (6 h): each advance makes a retry due


class Crm:
    """A webhook receiver started late, on a port chosen up front: until then deliveries to it are refused."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bodies: list[bytes] = []
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/leads"

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        return web.json_response({"ok": True})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/leads", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()


@pytest.fixture
async def crm() -> AsyncIterator[Crm]:
    server = Crm()
    yield server
    if server.runner is not None:
        await server.runner.cleanup()


async def _recorded(shop: Shop, after_attempts: int) -> Any:
    """The webhook's run once a run after `after_attempts` has been recorded (it left `running`)."""

    async def probe() -> Any:
        rows = await shop.actions(rule_id="crm")
        return rows[0] if rows and rows[0].attempts > after_attempts and rows[0].status != "running" else None

    return await wait_for(probe, timeout=30, what=f"attempt {after_attempts + 1} to be recorded")


async def _failed_for_good(shop: Shop, clock: Any) -> Any:
    """Move the clock through every back-off until the run is `failed`; the run."""
    row = await _recorded(shop, 0)
    while row.status == "pending" and row.attempts < 20:
        clock.advance(BACKOFF_CAP)
        row = await _recorded(shop, row.attempts)
    assert row.status == "failed", row
    return row


async def test_a_failed_webhook_is_retried_over_http_and_delivered_once(
    trigger_hub, clock, rules_dir: Path, crm: Crm
) -> None:
    (rules_dir / "crm.yaml").write_text(
        f"""
rules:
  - id: crm
    on: lead.created
    do:
      - webhook: {{url: "{crm.url}", timeout: 5s}}
"""
    )
    running = await trigger_hub(api_token=TOKEN)
    shop = Shop(running.engine, clock)
    contact_id, lead_id = await shop.customer()
    await shop.emit("lead.created", lead_id, lead_id=lead_id, contact_id=contact_id, channel="shop", tags=[])
    failed = await _failed_for_good(shop, clock)
    assert failed.attempts == 8 and failed.last_error.startswith("after 8 attempts")

    retry = running.url(f"/api/actions/{failed.id}/retry")
    async with running.session.post(retry) as response:
        assert response.status == 401
    async with running.session.post(running.url("/api/actions/nope/retry"), headers=AUTH) as response:
        assert response.status == 404 and (await response.json())["error"] == "not_found"

    await crm.start()  # the admin fixed the CRM
    async with running.session.post(retry, headers=AUTH) as response:
        assert response.status == 200, await response.text()
        body = await response.json()
    assert (body["id"], body["status"], body["attempts"]) == (failed.id, "pending", 0)
    assert body["last_error"] == failed.last_error and "event" not in body

    async def done() -> Any:
        (row,) = await shop.actions(rule_id="crm")
        return row if row.status == "done" else None

    row = await wait_for(done, timeout=30, what="the retried run to be delivered")
    assert (row.attempts, row.last_error) == (1, None)
    assert len(crm.bodies) == 1

    async with running.session.post(retry, headers=AUTH) as response:
        assert response.status == 409
        assert "the run is done" in (await response.json())["detail"]
    assert len(crm.bodies) == 1


async def _insert_runs(engine: Any, count: int, *, rule_id: str, action_type: str, status: str) -> list[str]:
    now = datetime.now(UTC) - timedelta(days=1)
    rows = []
    for n in range(count):
        key = f"{rule_id}:{status}:{n}"
        rows.append(
            {
                "id": new_id(),
                "key": key,
                "rule_id": rule_id,
                "action_index": 0,
                "action_type": action_type,
                "event_id": key,
                "event_type": "lead.created",
                "event": {"id": key, "type": "lead.created", "data": {}},
                "group_key": key,
                "throttle_key": None,
                "due_at": now,
                "status": status,
                "attempts": 8 if status == "failed" else 1,
                "lease_until": None,
                "last_error": "after 8 attempts: connection refused" if status == "failed" else None,
                "result": None,
                "created_at": now,
                "updated_at": now,
            }
        )
    async with engine.begin() as conn:
        await conn.execute(insert(ScheduledAction.__table__), rows)
    return [row["id"] for row in rows]


async def _runs(engine: Any) -> dict[str, Any]:
    async with engine.connect() as conn:
        return {row.id: row for row in await conn.execute(select(ScheduledAction.__table__))}


def _cli(tmp_path: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "cli.yaml"
    settings = {"database_url": database_url, "data_dir": str(tmp_path / "cli"), "rules_dir": str(tmp_path / "rules")}
    config.write_text(yaml.safe_dump(settings))
    return run_leadhub("actions", "retry", *args, "--config", str(config))


async def test_cli_retries_failed_runs_by_id_and_all_in_pages(tmp_path: Path, database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        webhooks = await _insert_runs(engine, 230, rule_id="crm", action_type="webhook", status="failed")
        emails = await _insert_runs(engine, 3, rule_id="survey", action_type="send_email", status="failed")
        (done,) = await _insert_runs(engine, 1, rule_id="crm", action_type="webhook", status="done")
        cli = lambda *args: asyncio.to_thread(_cli, tmp_path, database_url, *args)  # noqa: E731

        named = await cli(emails[0], done, "no-such-run")
        assert named.returncode == 1, named.stdout + named.stderr
        assert "re-queued 1 failed run\n" in named.stdout
        assert f"{done}: is done, not failed" in named.stderr and "no-such-run: no such run" in named.stderr
        runs = await _runs(engine)
        assert (runs[emails[0]].status, runs[emails[0]].attempts) == ("pending", 0)
        assert runs[emails[0]].last_error == "after 8 attempts: connection refused", "kept until the next run"
        assert runs[done].status == "done"

        by_rule = await cli("--all", "--rule", "crm")  # more than a page (100 runs per transaction)
        assert by_rule.returncode == 0, by_rule.stderr
        assert "re-queued 230 failed runs" in by_rule.stdout
        runs = await _runs(engine)
        assert {runs[each].status for each in webhooks} == {"pending"}
        assert [runs[each].status for each in emails[1:]] == ["failed", "failed"]

        by_type = await cli("--all", "--action", "send_email")
        assert by_type.returncode == 0 and "re-queued 2 failed runs" in by_type.stdout
        again = await cli("--all")
        assert again.returncode == 0 and "re-queued 0 failed runs" in again.stdout

        for wrong in ((), (emails[0], "--all"), (emails[0], "--rule", "crm")):
            refused = await cli(*wrong)
            assert refused.returncode == 2, (wrong, refused.stdout, refused.stderr)
    finally:
        await engine.dispose()


async def test_cli_refuses_an_action_type_that_is_not_one_and_warns_of_a_rule_nobody_has(
    tmp_path: Path, database_url: str
) -> None:
    """`--action send-email` (for send_email) said `re-queued 0 failed runs` and exit 0, as if none had failed."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "crm.yaml").write_text(
        """
rules:
  - id: welcome
    enabled: false
    on: lead.created
    do:
      - webhook: {url: "http://127.0.0.1:9/leads"}
"""
    )
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        (failed,) = await _insert_runs(engine, 1, rule_id="crm", action_type="send_email", status="failed")
        await _insert_runs(engine, 1, rule_id="removed", action_type="webhook", status="done")
        cli = lambda *args: asyncio.to_thread(_cli, tmp_path, database_url, *args)  # noqa: E731

        typo = await cli("--all", "--action", "send-email")
        assert typo.returncode == 2 and not typo.stdout, typo.stdout + typo.stderr
        assert typo.stderr.strip() == (
            "leadhub: --action 'send-email' is no action type; "
            "the types are create_task, notify_telegram, send_email, update_lead, webhook"
        )
        assert (await _runs(engine))[failed].status == "failed"

        misspelt = await cli("--all", "--rule", "crn")
        assert misspelt.returncode == 0 and "re-queued 0 failed runs" in misspelt.stdout
        assert misspelt.stderr.strip() == (
            f"leadhub: warning: no rule 'crn' in {tmp_path / 'rules'} nor among the stored runs: is it misspelt?"
        )
        for known in ("welcome", "removed"):  # in the files (disabled), only among the stored runs
            quiet = await cli("--all", "--rule", known)
            assert quiet.returncode == 0 and "re-queued 0 failed runs" in quiet.stdout and not quiet.stderr, known
        crm = await cli("--all", "--rule", "crm", "--action", "send_email")
        assert crm.returncode == 0 and "re-queued 1 failed run\n" in crm.stdout and not crm.stderr
    finally:
        await engine.dispose()


async def test_rules_trace_warns_of_a_rule_nobody_has(tmp_path: Path, database_url: str) -> None:
    """`rules trace nosuch` said `last 0 evaluations` and exit 0 with no word, as if the rule had seen no events;
    `actions retry --rule` warns of such a rule, and so does `rules trace` now (still exit 0: nothing failed)."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "crm.yaml").write_text(
        "rules:\n  - {id: welcome, enabled: false, on: lead.created, do: [{webhook: {url: 'http://127.0.0.1:9/'}}]}\n"
    )
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        await _insert_runs(engine, 1, rule_id="removed", action_type="webhook", status="done")
    finally:
        await engine.dispose()
    config = tmp_path / "cli.yaml"
    settings = {"database_url": database_url, "data_dir": str(tmp_path / "cli"), "rules_dir": str(tmp_path / "rules")}
    config.write_text(yaml.safe_dump(settings))
    trace = lambda rule: asyncio.to_thread(run_leadhub, "rules", "trace", rule, "--config", str(config))  # noqa: E731

    nosuch = await trace("nosuch")
    assert nosuch.returncode == 0 and "rule 'nosuch': last 0 evaluations" in nosuch.stdout, nosuch.stderr
    assert nosuch.stderr.strip() == (
        f"leadhub: warning: no rule 'nosuch' in {tmp_path / 'rules'} nor among the stored runs: is it misspelt?"
    )
    for known in ("welcome", "removed"):  # in the files (disabled), only among the stored runs
        quiet = await trace(known)
        assert quiet.returncode == 0 and f"rule {known!r}: last 0 evaluations" in quiet.stdout, quiet.stderr
        assert not quiet.stderr, known
