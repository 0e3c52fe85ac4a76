"""Every answer counted by route and status, and an unexpected error turned into a logged 500.

A wrapper around each route's handler rather than an aiohttp middleware: with any middleware at all,
aiohttp runs every request through a chain of partials and its own current-app fixer. Measured on an
accepted webhook: 0.1135 -> 0.1105 ms of CPU with the counting kept here (BENCHMARKS.md, eighth session).
`guarded_routes` wraps every route and adds a last catch-all that answers what no route takes as the
router would (404, or 405 now with its Allow header), in JSON, counted as "unmatched". Paths under /api/
pass the API's token check first, routed or not.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import structlog
from aiohttp import web

from leadhub.hub.http.api import Handler, api_guard
from leadhub.hub.http.jsonio import error_response
from leadhub.hub.metrics import Metrics

log = structlog.get_logger("leadhub.http")

UNMATCHED = "unmatched"
CATCH_ALL_PATH = "/{unrouted:.*}"
CATCH_ALL = "/{unrouted}"  # its canonical form
_GUARDED = "__leadhub_guarded__"  # set on every wrapper; tests check no route is left without one


def guarded(handler: Handler, metrics: Metrics, *, api: bool = False, route: str | None = None) -> Handler:
    """`handler` counted by its route and status, with a logged 500 for an unexpected error; `api`: token first.

    The route label is the resource's canonical path (/hooks/{name}), read from the first request it answers.
    """
    label = route
    counters: dict[int, Any] = {}  # status -> the labelled child: labels() checks and locks on every call

    def count(status: int) -> None:
        counter = counters.get(status)
        if counter is None:
            counter = counters[status] = metrics.http_requests.labels(label, str(status))
        counter.inc()

    async def answer(request: web.Request) -> web.StreamResponse:
        nonlocal label
        if label is None:
            resource = request.match_info.route.resource
            label = resource.canonical if resource is not None else UNMATCHED
        try:
            response = await (api_guard(request, handler) if api else handler(request))
        except web.HTTPException as exc:
            count(exc.status)
            if exc.status >= 400 and exc.content_type != "application/json":
                allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
                return error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason, allow)
            raise
        except Exception:
            log.exception("unhandled error", route=label, method=request.method)
            count(500)
            return error_response(500, "internal", "internal error; see the daemon log")
        count(response.status)
        return response

    setattr(answer, _GUARDED, True)
    return answer


def is_guarded(handler: Any) -> bool:
    return getattr(handler, _GUARDED, False)


def guarded_routes(routes: Iterable[web.RouteDef], metrics: Metrics) -> list[web.RouteDef]:
    """Each route with its handler guarded, then the catch-all for what none of them takes."""
    wrapped = [
        web.RouteDef(d.method, d.path, guarded(d.handler, metrics, api=d.path.startswith("/api/")), d.kwargs)
        for d in routes
    ]
    return [*wrapped, web.route("*", CATCH_ALL_PATH, _unmatched(metrics))]


def _unmatched(metrics: Metrics) -> Handler:
    async def unrouted(request: web.Request) -> web.StreamResponse:
        """404, or 405 naming the methods the path takes; only requests no route answers come here."""
        allowed: set[str] = set()
        for resource in request.app.router.resources():
            if resource.canonical != CATCH_ALL:
                _, methods = await resource.resolve(request)
                allowed |= methods
        if allowed:
            raise web.HTTPMethodNotAllowed(request.method, sorted(allowed))
        raise web.HTTPNotFound()

    async def api_or_unrouted(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            return await api_guard(request, unrouted)
        return await unrouted(request)

    return guarded(api_or_unrouted, metrics, route=UNMATCHED)
