"""Operations routes: liveness, readiness (its detail for the API's clients only), and Prometheus metrics."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from leadhub import __version__
from leadhub.hub.http import access
from leadhub.hub.http.jsonio import json_response
from leadhub.hub.http.state import DEPS


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "version": __version__, "worker": request.app[DEPS].worker})


async def readyz(request: web.Request) -> web.Response:
    """200 or 503 with a summary for everyone (load balancers ask without a token); the detail only for those the
    API serves: its errors name hosts, users, paths and states an attacker on the webhook port should not read."""
    deps = request.app[DEPS]
    queue_ok, store_problem = await asyncio.gather(deps.queue_ready(), deps.store_problem())
    store_ok = store_problem is None
    detail = {"store": {"ok": store_ok, "error": store_problem}, **deps.readiness_detail()}
    ready = queue_ok and store_ok and all(v.get("ok", True) for v in detail.values() if isinstance(v, dict))
    refused = access.refusal(request)
    shown = detail if refused is None else f"withheld: {refused}"
    body = {"ready": ready, "queue": queue_ok, "store": store_ok, "detail": shown}
    return json_response(body, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    data = request.app[DEPS].metrics.render()
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


def routes() -> list[web.RouteDef]:
    return [web.get("/healthz", healthz), web.get("/readyz", readyz), web.get("/metrics", metrics)]
