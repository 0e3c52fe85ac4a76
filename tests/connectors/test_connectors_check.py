"""`leadhub connectors check`: each pull connector logs in to its source as the daemon will, changing nothing,
against a real Dovecot and a local WooCommerce API (tests/connectors/woo_shop.py); webhooks are listed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from tests.connectors.woo_shop import SECRET, FakeShop, poller, shop_fixture  # noqa: F401 - the `shop` fixture
from tests.helpers import run_leadhub
from tests.imap_server import Dovecot, make_mail, running_dovecot


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with running_dovecot() as server:
        yield server


def _check(tmp_path: Path, connectors: list[dict], *names: str):  # type: ignore[no-untyped-def]
    (tmp_path / "leadhub.yaml").write_text(yaml.safe_dump({"connectors": connectors}))
    return run_leadhub("connectors", "check", *names, cwd=tmp_path)


def test_a_mailbox_is_logged_in_to_and_each_folder_selected_read_only(dovecot: Dovecot, tmp_path: Path) -> None:
    dovecot.append([make_mail(n) for n in range(3)])
    dovecot.client().create_folder("Leads")
    form = {"name": "site-form", "type": "form"}
    inbox = dovecot.connector("support", folders=["INBOX", "Leads"], post_action="seen")
    run = _check(tmp_path, [form, inbox])
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "site-form (form): receives webhooks at POST /hooks/site-form"
    assert lines[1] == "support (imap)"
    assert lines[2].startswith(f"  ok      INBOX: logged in to 127.0.0.1:{dovecot.port} as ")
    assert lines[2].endswith("; 3 messages; IDLE, MOVE") and lines[3].startswith("  ok      Leads: ")
    with dovecot.client() as client:  # post_action marks mail seen, yet the check selected read-only: nothing changed
        client.select_folder("INBOX", readonly=True)
        assert len(client.search("ALL")) == 3 and not client.search("SEEN")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leadhub.yaml"]  # no data dir, no database

    wrong = _check(tmp_path, [inbox | {"password": "not-the-password"}, form], "support")
    assert wrong.returncode == 1 and "site-form" not in wrong.stdout
    assert "  FAILED  INBOX: " in wrong.stdout and "refused" in wrong.stdout, wrong.stdout
    assert "not-the-password" not in wrong.stdout + wrong.stderr
    missing = _check(tmp_path, [inbox | {"folders": ["INBOX", "Nope"]}])
    assert missing.returncode == 1 and "  ok      INBOX: " in missing.stdout and "  FAILED  Nope: " in missing.stdout
    unknown = _check(tmp_path, [inbox], "suport")
    assert unknown.returncode == 2 and "no connector named 'suport'; configured: support" in unknown.stderr


async def test_a_shop_api_is_read_once_with_the_key(shop: FakeShop, tmp_path: Path) -> None:
    shop.put(7, "processing", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"), "anna@example.com")
    run = await asyncio.to_thread(_check, tmp_path, [poller(shop)])
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines() == [
        "woo-pull (woocommerce_poll)",
        f"  ok      {shop.url}: the orders API answers with the key; an order was modified in the last day",
    ]
    assert len(shop.requests) == 1 and shop.requests[0]["per_page"] == "1"

    refused = await asyncio.to_thread(_check, tmp_path, [poller(shop, consumer_secret="cs_wrong_999")])
    assert refused.returncode == 1 and "  FAILED  " in refused.stdout and "HTTP 401" in refused.stdout
    away = await asyncio.to_thread(
        _check, tmp_path, [poller(shop, url="http://127.0.0.1:9", auth="query", timeout="2s")]
    )
    assert away.returncode == 1 and "  FAILED  http://127.0.0.1:9: " in away.stdout
    assert SECRET not in away.stdout + away.stderr


NOT_IMPLEMENTED_PAGE = (
    '<!DOCTYPE HTML>\n<html lang="en">\n    <head>\n        <meta charset="utf-8">\n'
    "        <title>Error response</title>\n    </head>\n    <body>\n        <h1>Error response</h1>\n"
    "        <p>Error code: 501</p>\n        <p>Message: Unsupported method ('GET').</p>\n    </body>\n</html>\n"
)


async def test_a_shop_answering_an_html_error_page_is_told_in_one_readable_line(tmp_path: Path) -> None:
    """A 501 page was printed as a Python bytes repr: `HTTP 501: b'<!DOCTYPE HTML>\\n<html lang="en">\\n ...`."""
    from aiohttp import web

    async def not_implemented(request: web.Request) -> web.Response:
        return web.Response(text=NOT_IMPLEMENTED_PAGE, status=501, content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", not_implemented)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        connector = {
            "name": "woo-pull",
            "type": "woocommerce_poll",
            "url": f"http://127.0.0.1:{port}",
            "consumer_key": "ck_test",
            "consumer_secret": SECRET,
        }
        run = await asyncio.to_thread(_check, tmp_path, [connector])
    finally:
        await runner.cleanup()
    assert run.returncode == 1, run.stdout + run.stderr
    failed = [line for line in run.stdout.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and "HTTP 501" in failed[0], run.stdout
    assert "b'" not in failed[0] and "\\n" not in failed[0] and "<" not in failed[0], failed[0]
    assert "Error code: 501 Message: Unsupported method ('GET')." in failed[0], failed[0]
    assert SECRET not in run.stdout + run.stderr
