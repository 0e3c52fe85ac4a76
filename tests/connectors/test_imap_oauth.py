"""XOAUTH2 login against a real Dovecot whose oauth2 passdb asks a local introspection endpoint (aiohttp) whether a
bearer token is valid, as Gmail and Microsoft 365 do for their own tokens. The access token comes from a real
`token_command` subprocess; a token the server stops accepting is replaced by running the command again."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import HubFactory
from tests.helpers import wait_for
from tests.imap_server import USER, Dovecot, make_mail, running_dovecot


@dataclass
class Introspection:
    """The identity provider's token check: `valid` tokens belong to the test user."""

    valid: set[str] = field(default_factory=set)
    seen: list[str] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.seen.append(token)
        if token in self.valid:
            return web.json_response({"active": True, "email": USER})
        return web.json_response({"active": False})


@pytest.fixture
async def introspection() -> AsyncIterator[Introspection]:
    idp = Introspection()
    app = web.Application()
    app.router.add_get("/introspect", idp.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    idp.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/introspect"  # type: ignore[union-attr]
    yield idp
    await runner.cleanup()


@pytest.fixture
def oauth_dovecot(introspection: Introspection) -> Iterator[Dovecot]:
    with running_dovecot(introspection_url=introspection.url) as server:
        yield server


def token_command(tmp_path: Path) -> list[str]:
    """Prints `token-<n>` (n counts the runs) as the JSON a token helper would; the run count is in `calls`."""
    script = (
        "import json, pathlib, sys; p = pathlib.Path(sys.argv[1]); n = int(p.read_text()) + 1 if p.exists() else 1; "
        "p.write_text(str(n)); print(json.dumps({'access_token': f'token-{n}', 'expires_in': 3600}))"
    )
    return [sys.executable, "-c", script, str(tmp_path / "calls")]


def oauth_connector(server: Dovecot, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    config = server.connector(oauth2={"token_command": token_command(tmp_path)}, **overrides)
    del config["password"]
    return config


async def test_xoauth2_login_and_a_refresh_after_the_token_is_refused(
    make_hub: HubFactory, oauth_dovecot: Dovecot, introspection: Introspection, tmp_path: Path
) -> None:
    introspection.valid = {"token-1"}
    oauth_dovecot.append([make_mail(1)])
    hub = await make_hub([oauth_connector(oauth_dovecot, tmp_path)])
    await hub.wait_items("/api/leads", 1)
    assert (tmp_path / "calls").read_text() == "1"  # one token for the whole session

    # the provider revokes token-1; the next login must fetch a new token instead of failing
    introspection.valid = {"token-2"}
    oauth_dovecot.kill()
    oauth_dovecot.start()
    oauth_dovecot.append([make_mail(2)])
    await hub.wait_items("/api/leads", 2, timeout=20)
    assert (tmp_path / "calls").read_text() == "2"
    assert introspection.seen[-2:] == ["token-1", "token-2"]


async def test_a_token_the_server_never_accepts_is_a_clear_error(
    make_hub: HubFactory, oauth_dovecot: Dovecot, introspection: Introspection, tmp_path: Path
) -> None:
    hub = await make_hub([oauth_connector(oauth_dovecot, tmp_path)])

    async def refused() -> dict[str, Any] | None:
        async with hub.session.get(hub.url("/readyz")) as response:
            detail = (await response.json())["detail"].get("connector:inbox") or {}
        return detail if detail.get("error") else None

    detail = await wait_for(refused, what="the refused token in /readyz")
    assert "refused the XOAUTH2 token" in detail["error"] and detail["ok"] is False
    assert "token-" not in detail["error"]
    assert (tmp_path / "calls").read_text() == "2"  # the cached token, then one fresh one
