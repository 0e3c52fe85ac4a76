"""`POST /hooks/<connector>`: route to the connector, map its errors to 4xx and a queue outage to 503."""

from __future__ import annotations

import time

import structlog
from aiohttp import web

from leadhub.connectors.base import DUPLICATE, HookError, QueueUnavailable
from leadhub.hub.http.jsonio import error_response
from leadhub.hub.http.state import DEPS

log = structlog.get_logger("leadhub.hooks")


class RefusalLog:
    """While the queue is away every webhook is refused: one warning line per `interval` with how many were refused
    since the last line, not one per request (thousands a second under load); the metric counts each."""

    def __init__(self, interval: float = 10.0, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self.interval, self.clock = interval, clock
        self.refused, self.logged_at = 0, None

    def refused_one(self, connector: str, error: str) -> None:
        self.refused += 1
        now = self.clock()
        if self.logged_at is None or now - self.logged_at >= self.interval:
            log.warning("webhooks refused: queue unavailable", connector=connector, error=error, refused=self.refused)
            self.refused, self.logged_at = 0, now


_refusals = RefusalLog()


async def hook(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS]
    name = request.match_info["name"]
    connector = deps.connectors.get(name)
    if connector is None or not hasattr(connector, "handle"):
        return error_response(404, "unknown_connector", f"no webhook connector named {name!r}")
    counted = deps.metrics.webhook(name)
    started = time.perf_counter()
    try:
        response = await connector.handle(request)
    except HookError as exc:
        deps.metrics.rejected.labels(name, exc.reason).inc()
        log.info("webhook rejected", connector=name, status=exc.status, reason=exc.reason, detail=exc.message)
        return error_response(exc.status, exc.reason, exc.message, exc.headers)
    except QueueUnavailable as exc:
        deps.metrics.rejected.labels(name, "queue_unavailable").inc()
        _refusals.refused_one(name, str(exc))
        return error_response(
            503, "queue_unavailable", "the queue is unavailable; retry later", headers={"Retry-After": "5"}
        )
    except web.HTTPRedirection:
        counted.accepted.inc()
        raise
    counted.latency.observe(time.perf_counter() - started)
    if response.status == 202:
        counted.accepted.inc()
        if response.get(DUPLICATE):
            counted.duplicates.inc()
    return response
