"""`leadhub run` as a real process with two mailboxes on a real Dovecot, one with a wrong password: the error is
in the log and in /readyz, the daemon stays up and the other mailbox keeps working."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.helpers import wait_for
from tests.imap_server import Dovecot, make_mail, running_dovecot

pytestmark = pytest.mark.slow


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with running_dovecot() as server:
        yield server


async def test_a_wrong_password_is_reported_and_the_daemon_stays_up(make_daemon: Any, dovecot: Dovecot) -> None:
    dovecot.append([make_mail(1)])
    good = dovecot.connector("good")
    bad = dovecot.connector("bad", password="not-the-password")
    daemon = make_daemon({"connectors": [good, bad]})
    await daemon.start(wait_ready=False)

    async def readyz() -> tuple[int, dict[str, Any]] | None:
        try:
            async with aiohttp.ClientSession() as session, session.get(daemon.base_url + "/readyz") as response:
                body = await response.json()
        except aiohttp.ClientError:
            return None
        detail = body["detail"]
        if detail.get("connector:bad", {}).get("error") and detail.get("connector:good", {}).get("ok"):
            return response.status, detail
        return None

    status, detail = await wait_for(readyz, timeout=30, what=f"both mailboxes in /readyz (log: {daemon.log_path})")
    assert status == 503
    assert "refused the password" in detail["connector:bad"]["error"]
    assert "AUTHENTICATIONFAILED" in detail["connector:bad"]["error"]
    assert detail["connector:bad"]["ok"] is False
    assert detail["connector:good"]["last_sync"] and detail["connector:good"]["uid_lag"] == 0

    async def logged() -> bool:
        return "IMAP login refused" in daemon.log() and "refused the password" in daemon.log()

    await wait_for(logged, what="the login failure in the daemon log")
    log = daemon.log()
    assert "not-the-password" not in log
    assert daemon.process.poll() is None
    async with aiohttp.ClientSession() as session:
        async with session.get(daemon.base_url + "/healthz") as response:
            assert response.status == 200

        async def lead() -> list[Any]:
            async with session.get(daemon.base_url + "/api/leads", params={"limit": 10}) as response:
                return (await response.json())["items"]

        leads = await wait_for(lead, what="the good mailbox's mail as a lead")
    assert len(leads) == 1 and leads[0]["connector"] == "good"
    assert await daemon.terminate() == 0
