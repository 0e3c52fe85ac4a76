"""The database lost between sending survey emails and recording them: each is recorded soon after, and sent once.

The SMTP server (aiosmtpd, in the test process) cuts the daemon's database while it takes the first survey and
answers 250 after: the scheduler has sent the batch but cannot record it. Its outcomes must be recorded once the
store is back, not left `running` until the five-minute lease ends and then sent again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from email.message import Message
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.faults.conftest import Outage
from tests.faults.surveys import RULES, SHOP, post_completed_order, scheduled_actions
from tests.helpers import free_port, wait_for
from tests.triggers.conftest import Inbox, SmtpServer

pytestmark = pytest.mark.slow
ORDERS = 10


class CuttingInbox(Inbox):
    """Keeps every message; before answering the first, runs `cut` (blocking this server's loop until it is done)."""

    def __init__(self, cut: Callable[[], None]) -> None:
        super().__init__()
        self.cut: Callable[[], None] | None = cut

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        answer = await super().handle_DATA(server, session, envelope)
        cut, self.cut = self.cut, None
        if cut is not None:
            cut()
        return answer


async def _triggers_error(session: aiohttp.ClientSession, base_url: str) -> str | None:
    async with session.get(base_url + "/readyz") as response:
        return ((await response.json())["detail"].get("triggers") or {}).get("error")


async def test_store_lost_between_send_and_record(  # type: ignore[no-untyped-def]
    make_daemon, database_url: str, outage: Outage, tmp_path: Path
) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "survey.yaml").write_text(RULES)
    loop = asyncio.get_running_loop()
    smtp = SmtpServer(
        free_port(), inbox=CuttingInbox(lambda: asyncio.run_coroutine_threadsafe(outage.cut(), loop).result(40))
    )
    smtp.start()
    daemon = make_daemon(
        {"connectors": [SHOP]},
        env={
            "LEADHUB_DATABASE_URL": outage.hub_url,
            "LEADHUB_RULES_DIR": str(rules_dir),
            "LEADHUB_SMTP_URL": smtp.url,
            "LEADHUB_PUBLIC_URL": "https://shop.example",
        },
    )
    try:
        await daemon.start()
        async with aiohttp.ClientSession() as session:
            for n in range(ORDERS):
                await post_completed_order(session, daemon.base_url, n)

            async def record_failed() -> str | None:
                return smtp.inbox.cut is None and await _triggers_error(session, daemon.base_url)

            error = await wait_for(record_failed, timeout=40, what="the scheduler to fail on the store after a send")
            sent_in_outage = len(smtp.inbox.messages)
            outage.restore()

            async def all_done() -> list[Any] | None:
                rows = await scheduled_actions(database_url)
                return rows if len(rows) == ORDERS and all(r.status == "done" for r in rows) else None

            # Well inside the scheduler's five-minute lease: the outcomes were kept, not dropped.
            await wait_for(all_done, timeout=30, what="every survey recorded done after the store returned")
    finally:
        smtp.stop()
    messages: list[Message] = smtp.inbox.messages
    recipients = sorted(str(m["To"]) for m in messages)
    assert recipients == sorted(f"c{n}@example.com" for n in range(ORDERS)), "each customer gets exactly one survey"
    print(f"{sent_in_outage} surveys sent when the store went ({error!r}); all recorded once it returned")
    assert await daemon.terminate() == 0
