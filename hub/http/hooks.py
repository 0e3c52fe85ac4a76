"""`POST /hooks/<connector>`: route to the connector, map its errors to 4xx and a queue outage to 503."""

from __future__ import annotations

import time
from typing import Any

import structlog
from aiohttp import web

from leadhub.connectors.base import DUPLICATE, HookError, QueueUnavailable
from leadhub.hub.http.jsonio import error_response
from leadhub.hub.http.state import DEPS
from leadhub.hub.throttled_log import ThrottledWarning
from leadhub.queue_errors import ItemTooLarge

log = structlog.get_logger("leadhub.hooks")


# While the queue is away every webhook is refused: one line per 10 s with the count; the metric counts each.
_refused = ThrottledWarning(log, "webhooks refused: queue unavailable", count_as="refused")


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
        return error_response(exc.status, exc.reason, exc.message, _error_headers(connector, request, exc.headers))
    except ItemTooLarge as exc:  # the queue's server takes no message this large: a retry cannot help
        deps.metrics.rejected.labels(name, "too_large").inc()
        log.info("webhook rejected", connector=name, status=413, reason="too_large", detail=str(exc))
        headers = _error_headers(connector, request, {})
        return error_response(413, "too_large", f"{exc}; the request cannot be queued", headers=headers)
    except QueueUnavailable as exc:
        deps.metrics.rejected.labels(name, "queue_unavailable").inc()
        _refused(connector=name, error=str(exc))
        headers = _error_headers(connector, request, {"Retry-After": "5"})
        return error_response(503, "queue_unavailable", "the queue is unavailable; retry later", headers=headers)
    except web.HTTPRedirection:
        counted.accepted.inc()
        raise
    counted.latency.observe(time.perf_counter() - started)
    if response.status == 202:
        counted.accepted.inc()
        if response.get(DUPLICATE):
            counted.duplicates.inc()
    return response


def _error_headers(connector: Any, request: web.Request, headers: dict[str, str]) -> dict[str, str]:
    """`headers` and the connector's own for an error answer: a form's CORS headers let the site's script read it."""
    own = connector.error_headers(request) if hasattr(connector, "error_headers") else None
    return {**headers, **own} if own else headers
