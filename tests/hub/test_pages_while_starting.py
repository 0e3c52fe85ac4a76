"""A survey or unsubscribe link clicked while the daemon's store is still starting: the customer's page, not JSON."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from leadhub.hub.config import Settings
from leadhub.hub.http.app import create_app
from leadhub.hub.http.state import HttpDeps
from leadhub.hub.metrics import Metrics


async def _ready() -> bool:
    return True


async def _no_problem() -> str | None:
    return None


async def test_a_link_clicked_while_the_store_starts_gets_the_page_saying_so() -> None:
    """It was the API's JSON 503 (`{"error":"store_unavailable","detail":"starting"}`) in the customer's browser."""
    deps = HttpDeps(Settings(), Metrics(), {}, engine=lambda: None, queue_ready=_ready, store_problem=_no_problem)
    async with TestClient(TestServer(create_app(deps))) as client:
        for method, path in (("GET", "/s/some-token"), ("POST", "/s/some-token"), ("GET", "/u/t"), ("POST", "/u/t")):
            response = await client.request(method, path, data={"score": "5"} if method == "POST" else None)
            html = await response.text()
            assert response.status == 503 and response.content_type == "text/html", (method, path, html)
            assert "Please try again in a few minutes" in html and response.headers["Retry-After"] == "60", html
        response = await client.get("/api/leads")  # the API keeps its JSON answer
        assert response.status == 503 and (await response.json())["detail"] == "starting"
