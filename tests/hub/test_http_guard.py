"""Every route counted and guarded without a middleware (hub/http/guard.py); what no route takes answered in JSON."""

from __future__ import annotations

import structlog
import structlog.testing
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from leadhub.hub.http.guard import CATCH_ALL, guarded_routes, is_guarded
from leadhub.hub.metrics import Metrics
from tests.conftest import HubFactory, RunningHub


async def metrics_text(hub: RunningHub) -> str:
    async with hub.session.get(hub.url("/metrics")) as response:
        return await response.text()


async def test_every_route_the_daemon_serves_is_guarded_and_the_catch_all_is_last(form_hub: RunningHub) -> None:
    assert form_hub.hub.runner is not None
    resources = list(form_hub.hub.runner.app.router.resources())
    routes = [route for resource in resources for route in resource]
    assert len(routes) > 20
    unguarded = [f"{route.method} {route.resource.canonical}" for route in routes if not is_guarded(route.handler)]
    assert unguarded == []
    assert resources[-1].canonical == CATCH_ALL


async def test_what_no_route_takes_is_a_json_404_or_a_405_naming_the_methods(form_hub: RunningHub) -> None:
    async with form_hub.session.get(form_hub.url("/no/such/page")) as response:
        assert response.status == 404
        assert (await response.json())["error"] == "not_found"
    async with form_hub.session.post(form_hub.url("/healthz")) as response:
        assert response.status == 405 and set(response.headers["Allow"].split(",")) == {"GET", "HEAD"}
        assert (await response.json())["error"] == "method_not_allowed"
    text = await metrics_text(form_hub)
    assert 'leadhub_http_requests_total{route="unmatched",status="404"} 1.0' in text
    assert 'leadhub_http_requests_total{route="unmatched",status="405"} 1.0' in text
    assert 'route="/hooks/{name}"' not in text  # nothing was routed to the webhooks


def _allowed(response) -> set[str]:  # type: ignore[no-untyped-def]
    return {method.strip() for method in response.headers["Allow"].split(",")}


async def test_a_method_a_webhook_does_not_take_is_one_405_with_the_connectors_own_allow(make_hub: HubFactory) -> None:
    """PUT answered `method_not_allowed` with the router's Allow (GET, HEAD, OPTIONS, POST: the form takes neither GET
    nor HEAD), GET on the same form `method` with its own: every method now reaches the connector, which answers
    `405 method_not_allowed` with the methods it takes."""
    hub = await make_hub([
        {"name": "site-form", "type": "form", "rate_limit": None},
        {"name": "bot", "type": "telegram", "secret": "tg-secret"},
        {"name": "echo", "type": "zadarma", "secret": "z-secret"},
    ])  # fmt: skip
    cases = [
        ("PUT", "/hooks/site-form", {"POST", "OPTIONS"}),
        ("GET", "/hooks/site-form", {"POST", "OPTIONS"}),
        ("DELETE", "/hooks/site-form/x", {"POST", "OPTIONS"}),
        ("PATCH", "/hooks/bot", {"POST"}),
        ("GET", "/hooks/bot", {"POST"}),
        ("OPTIONS", "/hooks/bot", {"POST"}),
        ("PUT", "/hooks/echo", {"POST", "GET"}),
    ]
    for method, path, allowed in cases:
        async with hub.session.request(method, hub.url(path), data=b"{}") as response:
            answer = await response.json()
            assert (response.status, answer["error"]) == (405, "method_not_allowed"), (method, path, answer)
            assert _allowed(response) == allowed, (method, path, response.headers["Allow"])
    async with hub.session.put(hub.url("/hooks/nobody")) as response:
        assert (response.status, (await response.json())["error"]) == (404, "unknown_connector")


async def test_a_webhook_is_counted_under_its_route(form_hub: RunningHub) -> None:
    for _ in range(2):
        async with await form_hub.post("/hooks/site-form", json={"name": "Counted"}) as response:
            assert response.status == 202
    assert 'leadhub_http_requests_total{route="/hooks/{name}",status="202"} 2.0' in await metrics_text(form_hub)


async def test_an_unknown_api_path_asks_for_the_token_before_saying_404(make_hub: HubFactory) -> None:
    hub = await make_hub([], api_token="t0ken")
    async with hub.session.get(hub.url("/api/no-such-thing")) as response:
        assert response.status == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    async with hub.session.get(hub.url("/api/no-such-thing"), headers={"Authorization": "Bearer t0ken"}) as response:
        assert response.status == 404 and (await response.json())["error"] == "not_found"
    async with hub.session.get(hub.url("/api/leads")) as response:
        assert response.status == 401
    async with hub.session.get(hub.url("/api/leads"), headers={"Authorization": "Bearer t0ken"}) as response:
        assert response.status == 200


async def test_without_a_token_a_loopback_request_through_a_proxy_is_refused(make_hub: HubFactory) -> None:
    """A reverse proxy on the same host connects from 127.0.0.1: its clients must not count as local."""
    with structlog.testing.capture_logs() as logs:
        hub = await make_hub([], public_url="https://leads.example.com")
    assert "the API answers loopback clients without a token; behind a proxy set LEADHUB_API_TOKEN" in [
        entry["event"] for entry in logs
    ]
    for header in ({"X-Forwarded-For": "203.0.113.7"}, {"Forwarded": "for=203.0.113.7"}, {"X-Real-IP": "203.0.113.7"}):
        async with hub.session.get(hub.url("/api/leads"), headers=header) as response:
            assert response.status == 401, header
            assert "LEADHUB_API_TOKEN" in (await response.json())["detail"]
    async with hub.session.get(hub.url("/api/leads")) as response:
        assert response.status == 200


async def test_a_short_api_token_is_warned_of_at_start(make_hub: HubFactory) -> None:
    warning = "LEADHUB_API_TOKEN is shorter than 16 characters; set a long random value"
    for token, warned in (("t0ken", True), ("0123456789abcdef", False)):
        with structlog.testing.capture_logs() as logs:
            await make_hub([], api_token=token)
        assert (warning in [entry["event"] for entry in logs]) is warned, token


async def test_an_unexpected_error_is_a_logged_json_500_and_redirects_pass_through() -> None:
    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/elsewhere")

    async def gone(request: web.Request) -> web.Response:
        raise web.HTTPGone()  # aiohttp's plain-text error: answered in JSON like every other

    metrics = Metrics()
    app = web.Application()
    app.router.add_routes(
        guarded_routes([web.get("/boom", boom), web.get("/moved", moved), web.get("/gone", gone)], metrics)
    )
    async with TestClient(TestServer(app)) as client:
        with structlog.testing.capture_logs() as logs:
            response = await client.get("/boom")
            assert response.status == 500
            assert await response.json() == {"error": "internal", "detail": "internal error; see the daemon log"}
        assert [entry["event"] for entry in logs] == ["unhandled error"] and logs[0]["route"] == "/boom"
        response = await client.get("/moved", allow_redirects=False)
        assert response.status == 303 and response.headers["Location"] == "/elsewhere"
        response = await client.get("/gone")
        assert response.status == 410 and (await response.json())["error"] == "gone"
    text = metrics.render().decode()
    for route, status in (("/boom", 500), ("/moved", 303), ("/gone", 410)):
        assert f'leadhub_http_requests_total{{route="{route}",status="{status}"}} 1.0' in text


def test_queue_refusals_are_logged_once_per_interval_with_their_count() -> None:
    """A queue outage under load refused thousands of webhooks a second, each with its own warning line."""
    from leadhub.hub.http import hooks
    from leadhub.hub.throttled_log import ThrottledWarning

    now = [100.0]
    refused = ThrottledWarning(hooks.log, hooks._refused.event, count_as="refused", clock=lambda: now[0])
    with structlog.testing.capture_logs() as lines:
        for _ in range(500):
            refused(connector="site-form", error="no servers available")
        now[0] += 10.0
        refused(connector="site-form", error="no servers available")
    assert [(line["event"], line["refused"]) for line in lines] == [
        ("webhooks refused: queue unavailable", 1),
        ("webhooks refused: queue unavailable", 500),
    ]
