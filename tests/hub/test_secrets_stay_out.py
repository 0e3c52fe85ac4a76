"""`leadhub run` configured with every kind of secret, driven through the failures that quote them (bad signatures,
an SMTP login refused, an IMAP login refused, a Bot API error quoting its URL, a database that is away): no secret
appears in the log, /metrics, /readyz, /api/actions, dead letters or the CLI's output."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from sqlalchemy.engine import make_url

from leadhub.envelope import Envelope
from leadhub.hub.embedded_nats import EmbeddedNats
from tests.helpers import free_port, run_leadhub, wait_for
from tests.imap_server import Dovecot, running_dovecot

pytestmark = pytest.mark.slow

SECRETS = {
    "api": "api-SECRET-a1",
    "form": "form-SECRET-b2",
    "shop": "shop-SECRET-c3",
    "telegram_hook": "tgHook-SECRET-d4",
    "imap": "imap-SECRET-e5",
    "smtp": "smtp-SECRET-f6",
    "bot": "AAbot-SECRET-g7",
    "nats": "nats-SECRET-h8",
    "db": "db-SECRET-i9",
}
BOT_TOKEN = f"123456:{SECRETS['bot']}"


class _Inbox:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


@pytest.fixture
def refusing_smtp() -> Iterator[int]:
    """A real SMTP server that refuses every login (535), as one does after a password change."""
    port = free_port()
    controller = Controller(
        _Inbox(),
        hostname="127.0.0.1",
        port=port,
        authenticator=lambda *args: AuthResult(success=False, handled=False),
        auth_require_tls=False,
    )
    controller.start()
    yield port
    controller.stop()


@pytest.fixture
async def quoting_bot_api() -> AsyncIterator[str]:
    """A Bot API behind a proxy that answers 404 quoting the request line, token and all."""

    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=404, text=f"Cannot POST {request.path}")

    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    await runner.cleanup()


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with running_dovecot() as server:
        yield server


def _with_password(url: str) -> str:
    """The test database's URL with a password (PostgreSQL here trusts loopback and ignores it); SQLite has none."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return url
    return parsed.set(password=SECRETS["db"]).render_as_string(hide_password=False)


def _leaks(text: str) -> list[str]:
    return [name for name, secret in SECRETS.items() if secret in text]


@pytest.fixture
async def external_nats(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    """The shared fixture's server, asking for the token this test looks for in everything the daemon writes."""
    server = EmbeddedNats(tmp_path / "external-nats", port=free_port(), token=SECRETS["nats"])
    await server.start()
    yield server
    await server.stop()


async def _get(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> str:
    async with session.get(url, **kwargs) as response:
        return await response.text()


async def test_no_secret_reaches_logs_metrics_readyz_actions_dead_letters_or_cli(
    *,
    make_daemon: Any,
    database_url: str,
    tmp_path: Path,
    external_nats: EmbeddedNats,
    refusing_smtp: int,
    quoting_bot_api: str,
    dovecot: Dovecot,
) -> None:
    rules, templates = tmp_path / "rules", tmp_path / "templates" / "email"
    rules.mkdir()
    templates.mkdir(parents=True)
    (templates / "hello.subject.txt").write_text("Hello")
    (templates / "hello.txt").write_text("Hello {{ contact.name }}")
    (rules / "notify.yaml").write_text(
        f"""
rules:
  - id: greet
    on: lead.created
    do:
      - send_email: {{template: hello, to: "{{{{ contact.email }}}}"}}
      - notify_telegram: {{api_url: "{quoting_bot_api}", bot_token: "{BOT_TOKEN}", chat_id: 1, text: hi}}
"""
    )
    connectors = [
        {"name": "site-form", "type": "form", "token": SECRETS["form"], "rate_limit": None},
        {"name": "shop", "type": "shopify", "secret": SECRETS["shop"]},
        {"name": "bot", "type": "telegram", "secret": SECRETS["telegram_hook"]},
        dovecot.connector("mail", password=SECRETS["imap"]),
    ]
    nats_url = external_nats.url
    assert nats_url is not None and SECRETS["nats"] in nats_url
    daemon = make_daemon(
        {"connectors": connectors},
        env={
            "LEADHUB_API_TOKEN": SECRETS["api"],
            "LEADHUB_SMTP_URL": f"smtp://shop:{SECRETS['smtp']}@127.0.0.1:{refusing_smtp}?from=shop@example.com&starttls=0",
            "LEADHUB_NATS_URL": nats_url,
            "LEADHUB_DATABASE_URL": _with_password(database_url),
            "LEADHUB_RULES_DIR": str(rules),
            "LEADHUB_TEMPLATES_DIR": str(templates.parent),
            "LEADHUB_LOG_FORMAT": "json",
        },
    )
    await daemon.start(wait_ready=False)
    api = {"Authorization": f"Bearer {SECRETS['api']}"}
    async with aiohttp.ClientSession() as session:

        async def up() -> bool:
            try:
                return (await _get(session, daemon.base_url + "/healthz")).startswith("{")
            except aiohttp.ClientError:
                return False

        await wait_for(up, timeout=30, what=f"the daemon to serve HTTP (log: {daemon.log_path})")
        hooks = daemon.base_url + "/hooks/"
        for url, kwargs in (
            (hooks + "site-form?token=wrong", {"json": {"name": "x"}}),
            (hooks + "shop", {"json": {"id": 1}, "headers": {"X-Shopify-Hmac-Sha256": "bad"}}),
            (hooks + "bot", {"json": {"update_id": 1}, "headers": {"X-Telegram-Bot-Api-Secret-Token": "bad"}}),
        ):
            async with session.post(url, **kwargs) as response:
                assert response.status == 401, await response.text()
        async with session.get(daemon.base_url + "/api/leads", headers={"Authorization": "Bearer wrong"}) as response:
            assert response.status == 401
        form = {"name": "Ivan", "email": "ivan@example.com"}
        async with session.post(hooks + "site-form", json=form, headers={"X-Leadhub-Token": SECRETS["form"]}) as r:
            assert r.status == 202, await r.text()
        # An envelope for a connector no longer configured: dead-lettered with its headers.
        client = await nats.connect(nats_url)
        gone = Envelope(
            key="form:gone:1", channel="form", connector="gone", payload=b"{}", content_type="application/json"
        )
        await client.jetstream().publish(gone.subject, gone.payload, headers=gone.headers(None))
        await client.close()

        async def failures_recorded() -> list[dict[str, Any]] | None:
            url = daemon.base_url + "/api/actions"
            async with session.get(url, params={"rule_id": "greet"}, headers=api) as response:
                if response.status != 200:  # the store is still being migrated
                    return None
                runs = (await response.json())["items"]
            failed = [r for r in runs if r["status"] == "failed"]
            logged = "IMAP login refused" in daemon.log() and "dead-lettered" in daemon.log()
            return runs if len(failed) == 2 and logged else None

        actions = await wait_for(failures_recorded, timeout=60, what=f"both actions failed (log: {daemon.log_path})")
        metrics = await _get(session, daemon.base_url + "/metrics")
        readyz = await _get(session, daemon.base_url + "/readyz", headers=api)  # the detail, with its errors
    assert await daemon.terminate() == 0

    config = tmp_path / "cli.yaml"
    config.write_text(json.dumps({"connectors": connectors[:1]}))
    cli_env = {"LEADHUB_DATABASE_URL": _with_password(database_url), "LEADHUB_DATA_DIR": str(tmp_path / "cli")}
    listed = await asyncio.to_thread(run_leadhub, "dead", "list", "--config", str(config), env=cli_env)
    assert listed.returncode == 0 and "gone" in listed.stdout, listed.stdout + listed.stderr
    away = f"postgresql+asyncpg://leadhub:{SECRETS['db']}@127.0.0.1:{free_port()}/leadhub"
    refused = await asyncio.to_thread(
        run_leadhub, "dead", "list", "--config", str(config), env={**cli_env, "LEADHUB_DATABASE_URL": away}
    )
    assert refused.returncode == 1 and "cannot use the database" in refused.stderr, refused.stderr

    places = {
        "log": daemon.log_path.read_text(),
        "metrics": metrics,
        "readyz": readyz,
        "actions": json.dumps(actions),
        "dead list": listed.stdout + listed.stderr,
        "cli with the database away": refused.stdout + refused.stderr,
    }
    assert "SMTP 535" in places["actions"] and "HTTP 404" in places["actions"]
    assert '"connector:mail":' in places["readyz"], places["readyz"]
    assert {place: _leaks(text) for place, text in places.items() if _leaks(text)} == {}
