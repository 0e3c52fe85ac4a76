"""Outbound webhooks against receivers that misbehave: redirects, endless answers (a real aiohttp server)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.helpers import wait_for
from tests.triggers.conftest import Shop

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def receiver() -> AsyncIterator[Callable[[dict[str, Handler]], Awaitable[str]]]:
    """Start a loopback HTTP server with the given routes (path → POST/GET handler); its base URL."""
    runners: list[web.AppRunner] = []

    async def start(routes: dict[str, Handler]) -> str:
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_route("*", path, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    yield start
    for runner in runners:
        await runner.cleanup()


def _rule(rules_dir: Path, url: str, timeout: str = "10s") -> None:
    (rules_dir / "test.yaml").write_text(
        f"""
rules:
  - id: crm
    on: lead.created
    do:
      - webhook: {{url: "{url}", secret: s3cret, timeout: {timeout}}}
"""
    )


async def _settled(shop: Shop) -> Any:
    """The webhook's run once it left `running` for the first time (done, failed, or pending a retry)."""

    async def probe() -> Any:
        rows = await shop.actions(rule_id="crm")
        return rows[0] if rows and rows[0].attempts >= 1 and rows[0].status != "running" else None

    return await wait_for(probe, timeout=30, what="the webhook's first run to be recorded")


async def _fire(trigger_hub, clock, name: str = "Maria") -> Shop:  # type: ignore[no-untyped-def]
    running = await trigger_hub()
    shop = Shop(running.engine, clock)
    contact_id, lead_id = await shop.customer("maria@example.com", name)
    await shop.emit("lead.created", lead_id, lead_id=lead_id, contact_id=contact_id, channel="shop", tags=[])
    return shop


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_not_followed_and_fails(trigger_hub, clock, rules_dir, receiver, status: int) -> None:
    """A 301/302/303 followed by aiohttp turns the POST into a GET without the body, and the run was recorded
    `done` though the receiver never got the lead; a 307/308 re-posts the signed body to wherever it points."""
    seen: list[tuple[str, str]] = []

    async def redirect(request: web.Request) -> web.StreamResponse:
        seen.append((request.method, request.path))
        return web.Response(status=status, headers={"Location": "/elsewhere"})

    async def elsewhere(request: web.Request) -> web.StreamResponse:
        seen.append((request.method, request.path))
        return web.json_response({"ok": True})

    base = await receiver({"/hook": redirect, "/elsewhere": elsewhere})
    _rule(rules_dir, f"{base}/hook")
    shop = await _fire(trigger_hub, clock)
    run = await _settled(shop)
    assert (run.status, run.attempts) == ("failed", 1)
    assert f"HTTP {status}" in run.last_error and "redirect" in run.last_error
    assert seen == [("POST", "/hook")]


async def test_a_2xx_with_an_endless_body_is_delivered_once(trigger_hub, clock, rules_dir, receiver) -> None:
    """The receiver took the lead (200) and then streams an answer that never ends: the run is `done`, read only
    up to a limit. Reading it all held the whole answer in memory until the timeout, which then retried a
    delivery the receiver already had."""
    posts: list[bytes] = []

    async def endless(request: web.Request) -> web.StreamResponse:
        posts.append(await request.read())
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        chunk = b"x" * 65536
        try:
            while True:
                await response.write(chunk)
        except (ConnectionError, RuntimeError):
            return response

    base = await receiver({"/hook": endless})
    _rule(rules_dir, f"{base}/hook", timeout="3s")
    shop = await _fire(trigger_hub, clock)
    run = await _settled(shop)
    assert (run.status, run.last_error) == ("done", None)
    assert run.result["status"] == 200 and len(posts) == 1


async def test_a_value_in_the_url_stays_one_path_segment_and_one_query_value(
    trigger_hub, clock, rules_dir, receiver
) -> None:
    """`{{ contact.name }}` went into the URL as it was: a name like `../admin?x=1#` moved the post to /admin with
    another query, and a CR LF in it could reach the request line. Each value is now percent-encoded."""
    name = "../admin?x=1&src=evil#\r\nX-Injected: yes"
    seen: list[tuple[str, dict[str, str], dict[str, str]]] = []

    async def record(request: web.Request) -> web.StreamResponse:
        seen.append((request.path, dict(request.query), dict(request.headers)))
        return web.json_response({"ok": True})

    base = await receiver({"/leads/{name}": record, "/{tail:.*}": record})
    _rule(rules_dir, base + "/leads/{{ contact.name }}?src=leadhub&name={{ contact.name }}")
    shop = await _fire(trigger_hub, clock, name=name)
    run = await _settled(shop)
    assert (run.status, run.last_error) == ("done", None)
    ((path, query, headers),) = seen
    assert path == f"/leads/{name}"
    assert query == {"src": "leadhub", "name": name}
    assert "X-Injected" not in headers


async def test_a_value_that_is_a_dot_segment_fails_the_run_without_a_request(
    trigger_hub, clock, rules_dir, receiver
) -> None:
    """HTTP clients resolve `..` (even encoded) before sending: `/leads/{{ contact.name }}/notes` for a contact
    named `..` posted to /notes. The run now fails, naming why, and nothing is sent."""
    seen: list[str] = []

    async def record(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        return web.json_response({"ok": True})

    base = await receiver({"/{tail:.*}": record})
    _rule(rules_dir, base + "/leads/{{ contact.name }}/notes")
    shop = await _fire(trigger_hub, clock, name="..")
    run = await _settled(shop)
    assert run.status == "failed" and "'..' path segment" in run.last_error, run.last_error
    assert seen == []


async def test_an_answer_that_quotes_the_url_leaves_its_credentials_out_of_the_record(
    trigger_hub, clock, rules_dir, receiver
) -> None:
    """A receiver's 404 quotes the request line ("Cannot POST /hook?api_key=..."): the key went into the run's
    recorded error, which /api/actions and `rules trace` show and the log repeats. The request keeps the full URL."""
    seen: list[tuple[dict[str, str], str | None]] = []

    async def not_found(request: web.Request) -> web.StreamResponse:
        seen.append((dict(request.query), request.headers.get("Authorization")))
        return web.Response(status=404, text=f"Cannot POST {request.path_qs} as crm:hunter2")

    base = await receiver({"/{tail:.*}": not_found})
    url = base.replace("://", "://crm:hunter2@") + "/hook?api_key=K3Y&lead={{ lead.id }}&token=T%2F0K"
    _rule(rules_dir, url)
    running = await trigger_hub()
    shop = Shop(running.engine, clock)
    contact_id, lead_id = await shop.customer("maria@example.com", "Maria")
    await shop.emit("lead.created", lead_id, lead_id=lead_id, contact_id=contact_id, channel="shop", tags=[])
    run = await _settled(shop)
    assert run.status == "failed" and "HTTP 404" in run.last_error and "/hook?api_key=***" in run.last_error
    (item,) = (await running.api("/api/actions", rule_id="crm"))["items"]
    for secret in ("K3Y", "T/0K", "T%2F0K", "hunter2"):
        assert secret not in run.last_error and secret not in json.dumps(item), run.last_error
    basic = "Basic " + base64.b64encode(b"crm:hunter2").decode()
    assert seen == [({"api_key": "K3Y", "lead": lead_id, "token": "T/0K"}, basic)], "the request keeps the full URL"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_host_a_value_writes_may_not_be_a_private_address(
    trigger_hub, clock, rules_dir, receiver, host: str
) -> None:
    """A rule whose URL takes its host from a value (`http://{{ contact.name }}:8080/...`) let a customer's name
    aim the post at the hub's own loopback, the cloud's metadata service or the private network. Such a host
    must now be public (an address literal checked as rendered, a name by what it resolves to); the run fails
    at once, naming why, and nothing is sent. A host the URL writes literally is the admin's and stays allowed
    (the receiver of the other tests is on loopback)."""
    seen: list[str] = []

    async def record(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        return web.json_response({"ok": True})

    base = await receiver({"/{tail:.*}": record})
    port = base.rpartition(":")[2]
    _rule(rules_dir, "http://{{ contact.name }}:" + port + "/hook")
    shop = await _fire(trigger_hub, clock, name=host)
    run = await _settled(shop)
    assert (run.status, run.attempts) == ("failed", 1), (run.status, run.last_error)
    assert "not a public address" in run.last_error, run.last_error
    assert seen == []
