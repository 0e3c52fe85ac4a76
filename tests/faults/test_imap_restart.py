"""The IMAP server restarted in the middle of a fetch: every message ends as exactly one inquiry, and it shows.

The real `leadhub run` subprocess reads a real Dovecot (tests/imap_server.py) in small FETCH batches; Dovecot is
SIGKILLed while the backlog is being fetched and started again; more mail arrives after the restart. The daemon
is not restarted. The connector-level variant (in-process hub) is tests/connectors/test_imap.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from leadhub.store.connector_state import load_state
from leadhub.store.db import create_engine
from leadhub.store.models import DeadLetter, Inquiry, Lead
from tests.helpers import wait_for
from tests.imap_server import make_mail, running_dovecot

pytestmark = pytest.mark.slow
BACKLOG, LATER = 600, 50


async def _readyz(session: aiohttp.ClientSession, base_url: str) -> tuple[int, dict[str, Any]]:
    async with session.get(base_url + "/readyz") as response:
        body = await response.json()
        return response.status, body["detail"].get("connector:inbox") or {}


async def _counts(engine: Any) -> dict[str, int]:
    async with engine.connect() as conn:
        return {
            "inquiries": (await conn.execute(select(func.count()).select_from(Inquiry))).scalar_one(),
            "keys": (await conn.execute(select(func.count(func.distinct(Inquiry.key))))).scalar_one(),
            "leads": (await conn.execute(select(func.count()).select_from(Lead))).scalar_one(),
            "dead": (await conn.execute(select(func.count()).select_from(DeadLetter))).scalar_one(),
        }


async def test_imap_server_restarted_mid_fetch(make_daemon, database_url: str) -> None:  # type: ignore[no-untyped-def]
    total = BACKLOG + LATER
    with running_dovecot() as dovecot:
        await asyncio.to_thread(dovecot.append, [make_mail(n, body="x" * 2000 + "\r\n") for n in range(BACKLOG)])
        connector = dovecot.connector(fetch_batch=5, poll_interval="2s")
        daemon = make_daemon({"connectors": [connector]})
        engine = create_engine(database_url)
        try:
            await daemon.start(wait_ready=False)

            async def fetching() -> int:
                try:
                    state = await load_state(engine, "inbox", "folder:INBOX")
                except DBAPIError:  # the daemon has not created its tables yet
                    return 0
                return int(state["last_uid"]) if state else 0

            try:
                await wait_for(fetching, timeout=60, what="the first FETCH batch checkpointed")
            except BaseException:  # say why: the daemon's own log
                code = daemon.process.poll() if daemon.process else None
                print(f"daemon log (exit code {code}):\n{daemon.log()}")
                raise
            dovecot.kill()
            at_kill = await fetching()
            assert at_kill < BACKLOG, "the backlog was read before the kill; raise BACKLOG"
            async with aiohttp.ClientSession() as session:

                async def reported() -> dict[str, Any] | None:
                    status, detail = await _readyz(session, daemon.base_url)
                    error = detail.get("error") or ""
                    lost = status == 503 and detail.get("ok") is False and error and "starting" not in error
                    return detail if lost else None  # "starting": the first sync is still running

                detail = await wait_for(reported, timeout=20, what="/readyz to report the lost IMAP server")
                await asyncio.to_thread(dovecot.start)
                await asyncio.to_thread(dovecot.append, [make_mail(n) for n in range(BACKLOG, total)])

                async def all_stored() -> dict[str, int] | None:
                    counts = await _counts(engine)
                    assert counts["inquiries"] <= total, f"more inquiries than messages: {counts}"
                    done = counts["inquiries"] == total and await fetching() == total
                    return counts if done else None

                counts = await wait_for(all_stored, timeout=45, what=f"{total} messages stored after the restart")

                async def ready_again() -> bool:
                    status, detail = await _readyz(session, daemon.base_url)
                    return status == 200 and detail.get("ok") is True

                await wait_for(ready_again, timeout=20, what="/readyz to recover without a daemon restart")
        finally:
            await engine.dispose()
        assert await daemon.terminate() == 0
    assert counts == {"inquiries": total, "keys": total, "leads": total, "dead": 0}, counts
    print(f"killed at checkpoint {at_kill}/{BACKLOG}; reported {detail['error']!r}; all {total} stored once")
