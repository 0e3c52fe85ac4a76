"""The aiohttp application factory: routes, metrics per request, and no 500 for bad input."""

from __future__ import annotations

import structlog
from aiohttp import web

from leadhub.hub.http import api, hooks, ops
from leadhub.hub.http.api import Handler
from leadhub.hub.http.jsonio import error_response
from leadhub.hub.http.state import DEPS, HttpDeps

log = structlog.get_logger("leadhub.http")


@web.middleware
async def count_and_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every answer by route and status; turn an unexpected error into a logged 500 with an id."""
    deps = request.app[DEPS]
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        deps.metrics.http_requests.labels(route, str(exc.status)).inc()
        if exc.status >= 400 and exc.content_type != "application/json":
            return error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        raise
    except Exception:
        log.exception("unhandled error", route=route, method=request.method)
        deps.metrics.http_requests.labels(route, "500").inc()
        return error_response(500, "internal", "internal error; see the daemon log")
    deps.metrics.http_requests.labels(route, str(response.status)).inc()
    return response


def create_app(deps: HttpDeps, *, intake: bool = True) -> web.Application:
    """Ops routes always; webhooks and the API only when this process has the `http` role."""
    app = web.Application(middlewares=[count_and_guard, api.api_guard], client_max_size=64 * 1024 * 1024)
    app[DEPS] = deps
    ops.add_routes(app)
    if intake:
        _add_intake_routes(app)
    return app


def _add_intake_routes(app: web.Application) -> None:
    app.router.add_route("POST", "/hooks/{name}", hooks.hook)
    app.router.add_route("GET", "/hooks/{name}", hooks.hook)
    app.router.add_route("OPTIONS", "/hooks/{name}", hooks.hook)
    # Some providers append their own path to the configured URL (Mango: /events/call); the tail is the connector's.
    app.router.add_route("POST", "/hooks/{name}/{tail:.+}", hooks.hook)
    app.router.add_route("GET", "/hooks/{name}/{tail:.+}", hooks.hook)
    api.add_routes(app)
