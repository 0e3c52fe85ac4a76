"""The SMTP server down while survey emails are due: every survey is sent exactly once after it returns.

The real `leadhub run` subprocess takes completed orders by webhook; a survey rule (wait shortened to
seconds) sends each customer one email through a real SMTP server (aiosmtpd) in the test process. A first
wave is delivered with the server up (so the daemon holds pooled connections), then the server stops, a
second wave falls due, fails and is retried with back-off; the server starts again on the same port.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.faults.surveys import RULES, SHOP, post_completed_order, scheduled_actions
from tests.helpers import free_port, wait_for
from tests.triggers.conftest import SmtpServer

pytestmark = pytest.mark.slow
WAVE = 40


async def test_smtp_down_while_surveys_are_due(make_daemon, database_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "survey.yaml").write_text(RULES)
    smtp = SmtpServer(free_port())
    smtp.start()
    daemon = make_daemon(
        {"connectors": [SHOP]},
        env={
            "LEADHUB_RULES_DIR": str(rules_dir),
            "LEADHUB_SMTP_URL": smtp.url,
            "LEADHUB_PUBLIC_URL": "https://shop.example",
        },
    )
    try:
        await daemon.start()
        async with aiohttp.ClientSession() as session:

            async def order(n: int) -> None:
                await post_completed_order(session, daemon.base_url, n)

            for n in range(WAVE):
                await order(n)

            async def first_wave_sent() -> bool:
                return len(smtp.inbox.messages) >= WAVE

            await wait_for(first_wave_sent, timeout=30, what=f"{WAVE} surveys with the SMTP server up")
            smtp.stop()
            stopped_at = time.monotonic()
            for n in range(WAVE, 2 * WAVE):
                await order(n)

            async def second_wave_failed() -> list[Any] | None:
                rows = [
                    r for r in await scheduled_actions(database_url) if r.event["data"]["number"] not in _numbers(0)
                ]
                failed = [r for r in rows if r.status == "pending" and r.attempts >= 1]
                return rows if len(rows) == WAVE and len(failed) == WAVE else None

            rows = await wait_for(second_wave_failed, timeout=30, what="every due survey to fail once and wait")
            assert all("SMTP server unavailable" in (r.last_error or "") for r in rows), {r.last_error for r in rows}
            assert len(smtp.inbox.messages) == WAVE, "nothing is sent while the server is down"
            smtp.start()  # same port; the retries come after the first back-off (30 s +- 20%)

            async def all_done() -> list[Any] | None:
                rows = await scheduled_actions(database_url)
                return rows if len(rows) == 2 * WAVE and all(r.status == "done" for r in rows) else None

            rows = await wait_for(all_done, timeout=50, what="every survey sent after the server returned")
        down_for = time.monotonic() - stopped_at
    finally:
        smtp.stop()
    recipients = sorted(str(m["To"]) for m in smtp.inbox.messages)
    assert recipients == sorted(f"c{n}@example.com" for n in range(2 * WAVE)), "each customer gets exactly one survey"
    assert len({m["Message-ID"] for m in smtp.inbox.messages}) == 2 * WAVE
    assert all(r.attempts >= 2 for r in rows if r.event["data"]["number"] not in _numbers(0))
    print(f"{2 * WAVE} surveys, each once; the server was down, then all were sent {down_for:.1f} s after it stopped")
    assert await daemon.terminate() == 0


def _numbers(wave: int) -> set[str]:
    return {str(n) for n in range(wave * WAVE, (wave + 1) * WAVE)}
