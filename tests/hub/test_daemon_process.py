"""`leadhub run` as a real process: start-up errors, clean SIGTERM, and SIGKILL losing nothing accepted."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import run_leadhub, wait_for

pytestmark = pytest.mark.slow
FORM = {"name": "site-form", "type": "form", "rate_limit": None}


@pytest.mark.parametrize(
    ("config", "env", "expected"),
    [
        ("http_port: eighty\n", {}, "leadhub.yaml:1: http_port: Input should be a valid integer"),
        ("htp_port: 8080\n", {}, "leadhub.yaml:1: htp_port: unknown key 'htp_port'; allowed keys:"),
        (
            "connectors:\n  - name: a\n    type: form\n  - name: a\n    type: form\n",
            {},
            "leadhub.yaml:4: connectors[1].name: 'a' is already used by connectors[0]",
        ),
        (
            "connectors:\n  - name: f\n    type: fax\n",
            {},
            "connectors[0].type: unknown connector type 'fax'; known types:",
        ),
        (
            "connectors:\n  - name: f\n    type: form\n    tokn: x\n",
            {},
            "leadhub.yaml:4: connectors[0].tokn: unknown key 'tokn'; allowed keys:",
        ),
        ("connectors:\n  - name: f\n    type: form\n    rate_limit: lots\n", {}, "invalid rate 'lots'"),
        ("connectors: [\n", {}, "leadhub.yaml:2:1: not valid YAML"),
        ("{}\n", {"LEADHUB_DEFAULT_REGION": "XX"}, "environment LEADHUB_DEFAULT_REGION: default_region:"),
        ("{}\n", {"LEADHUB_ROLES": "http,cook"}, "environment LEADHUB_ROLES"),
        ("lead_window: 3 days\n", {}, "leadhub.yaml:1: lead_window: invalid duration '3 days'"),
        (
            "lead_windows:\n  shop-shop: 0s\n",
            {},
            "lead_windows: key 'shop-shop': write '<lead channel>:<inquiry channel>'",
        ),
        ("{}\n", {"LEADHUB_LEAD_WINDOWS": '{"shop:fax": "1h"}'}, "environment LEADHUB_LEAD_WINDOWS"),
        ("{}\n", {"LEADHUB_EMAIL_FOLDING": "maybe"}, "environment LEADHUB_EMAIL_FOLDING"),
        (  # a hosted PostgreSQL's URL: `run` retried its migration every 10 s forever, a TypeError each time
            "{}\n",
            {"LEADHUB_DATABASE_URL": "postgresql+asyncpg://u:p@127.0.0.1:1/db?sslmode=require"},
            "environment LEADHUB_DATABASE_URL: database_url: sslmode is libpq's; asyncpg takes ssl= with the same",
        ),
        ("stream_replicas: 3\n", {}, "leadhub.yaml:1: stream_replicas: 3 needs a NATS cluster: set LEADHUB_NATS_URL"),
        ("stream_replicas: 7\n", {}, "leadhub.yaml:1: stream_replicas: Input should be less than or equal to 5"),
        (
            "stream_duplicate_window: 0s\n",
            {},
            "leadhub.yaml:1: stream_duplicate_window: '0s' is outside 1s..1d",
        ),
        (
            "{}\n",
            {"LEADHUB_STREAM_DUPLICATE_WINDOW": "2 min"},
            "environment LEADHUB_STREAM_DUPLICATE_WINDOW: stream_duplicate_window: invalid duration",
        ),
        ("workers: 0\n", {}, "leadhub.yaml:1: workers: Input should be greater than or equal to 1"),
        ("workers: 65\n", {}, "leadhub.yaml:1: workers: Input should be less than or equal to 64"),
        (
            "{}\n",
            {"LEADHUB_WORKERS": "many"},
            "environment LEADHUB_WORKERS: workers: 'many' is not a number of processes; "
            "write a whole number from 1 to 64, or auto",
        ),
    ],
)
def test_invalid_configuration_is_a_clear_startup_error(tmp_path: Path, config: str, env: dict, expected: str) -> None:
    (tmp_path / "leadhub.yaml").write_text(config)
    result = run_leadhub("run", cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists(), "nothing may start on an invalid configuration"


CHECKED_BEFORE_IMPORTS = """
import atexit, sys
from leadhub.hub.cli import app

atexit.register(lambda: print("daemon imported" if "leadhub.hub.daemon" in sys.modules else "daemon not imported"))
app(["run"])
"""


def test_an_invalid_configuration_is_answered_before_the_daemon_is_imported(tmp_path: Path) -> None:
    """`run` imported the whole daemon (seconds on a slow machine) before it read the file it then refused."""
    (tmp_path / "leadhub.yaml").write_text("http_port: eighty\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEADHUB_")}
    result = subprocess.run(
        [sys.executable, "-c", CHECKED_BEFORE_IMPORTS], cwd=tmp_path, env=clean, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "http_port: Input should be a valid integer" in result.stderr, result.stderr
    assert result.stdout.strip() == "daemon not imported"


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    result = run_leadhub("run", "--config", "nope.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "nope.yaml: cannot read" in result.stderr


@pytest.mark.store_independent  # a stop's order and exit code
async def test_sigterm_stops_cleanly_and_quickly(make_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon({"connectors": [FORM]})
    await daemon.start()
    nats_pid = int((Path(daemon.env["LEADHUB_DATA_DIR"]) / "nats" / "nats-server.pid").read_text())
    started = time.monotonic()
    assert await daemon.terminate(timeout=10) == 0, daemon.log()
    assert time.monotonic() - started < 10
    assert not Path(f"/proc/{nats_pid}").exists(), "the embedded NATS child must stop with the daemon"
    assert "stopped" in daemon.log()


async def test_sigkill_after_202_loses_nothing_and_duplicates_nothing(make_daemon) -> None:  # type: ignore[no-untyped-def]
    """Accept with the pipeline off (role http only), kill -9, restart with all roles: each item is one lead."""
    daemon = make_daemon({"connectors": [FORM], "default_region": "RU"})
    await daemon.start(extra_env={"LEADHUB_ROLES": "http"})
    accepted = []
    async with aiohttp.ClientSession() as session:
        for i in range(50):
            body = {"name": f"Buyer {i}", "phone": f"+7916{i:07d}", "message": f"order {i}"}
            async with session.post(daemon.base_url + "/hooks/site-form", json=body) as response:
                assert response.status == 202
                accepted.append((await response.json())["id"])
    nats_pid = int((Path(daemon.env["LEADHUB_DATA_DIR"]) / "nats" / "nats-server.pid").read_text())
    daemon.kill()
    await wait_for(_gone(nats_pid), timeout=10, what="the NATS child to die with its parent")

    await daemon.start()  # all roles: the pipeline now drains what was accepted before the kill
    async with aiohttp.ClientSession() as session:

        async def all_leads() -> list[dict] | None:
            async with session.get(daemon.base_url + "/api/leads", params={"limit": 1000}) as response:
                items = (await response.json())["items"]
            assert len(items) <= len(accepted)
            return items if len(items) == len(accepted) else None

        leads = await wait_for(all_leads, timeout=30, what="every accepted item to become a lead")
        async with session.get(daemon.base_url + "/api/inquiries", params={"limit": 1000}) as response:
            inquiries = (await response.json())["items"]
    assert sorted(i["id"] for i in inquiries) == sorted(accepted)
    assert len({lead["contact_id"] for lead in leads}) == len(accepted)
    assert await daemon.terminate() == 0


async def test_restart_after_sigkill_during_processing(make_daemon) -> None:  # type: ignore[no-untyped-def]
    """Kill -9 while the pipeline is working through a burst; the restarted daemon finishes it exactly once."""
    daemon = make_daemon({"connectors": [FORM]})
    await daemon.start()
    accepted: list[str] = []
    async with aiohttp.ClientSession() as session:

        async def post(i: int) -> None:
            async with session.post(daemon.base_url + "/hooks/site-form", json={"email": f"u{i}@example.com"}) as r:
                assert r.status == 202
                accepted.append((await r.json())["id"])

        for start in range(0, 400, 50):
            await asyncio.gather(*(post(i) for i in range(start, start + 50)))
    daemon.kill()
    await daemon.start()
    async with aiohttp.ClientSession() as session:

        async def inquiries() -> list[dict] | None:
            async with session.get(daemon.base_url + "/api/inquiries", params={"limit": 1000}) as response:
                items = (await response.json())["items"]
            return items if len(items) >= len(accepted) else None

        items = await wait_for(inquiries, timeout=30, what="all accepted inquiries after the restart")
        async with session.get(daemon.base_url + "/api/leads", params={"limit": 1000}) as response:
            leads = (await response.json())["items"]
    assert sorted(i["id"] for i in items) == sorted(accepted)
    assert len(leads) == len(accepted)
    assert await daemon.terminate() == 0


def _gone(pid: int):  # type: ignore[no-untyped-def]
    async def probe() -> bool:
        if not Path(f"/proc/{pid}").exists():
            return True
        status = Path(f"/proc/{pid}/status").read_text() if Path(f"/proc/{pid}/status").exists() else ""
        return "zombie" in status

    return probe
