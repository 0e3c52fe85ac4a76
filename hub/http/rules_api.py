"""Rule-engine API behind the API token: tasks (`/api/tasks`), trigger runs and their retry (`/api/actions`)."""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from aiohttp import web

from leadhub.hub.http.api import json_body, list_query, page_response, path_id, request_engine, request_limit
from leadhub.hub.http.jsonio import error_response, json_response
from leadhub.hub.http.state import DEPS
from leadhub.store import trigger_data
from leadhub.store import triggers as trigger_store

log = structlog.get_logger("leadhub.api")

MAX_TASK_BODY_BYTES = 4 * 1024  # {"status": "done"}; the same reader and limits as PATCH /api/leads


async def list_tasks(request: web.Request) -> web.Response:
    q = list_query(request, "lead_id", "contact_id", "status", choices={"status": trigger_data.TASK_STATUSES})
    async with request_engine(request).connect() as conn:
        page = await trigger_data.list_tasks(
            conn,
            lead_id=q.get("lead_id"),
            contact_id=q.get("contact_id"),
            status=q.get("status"),
            cursor=q.get("cursor"),
            limit=request_limit(request),
        )
    return page_response(page)


async def update_task(request: web.Request) -> web.Response:
    """`PATCH /api/tasks/{id}` with `{"status": "done"}`: a manager closes the task (emits `task.status_changed`)."""
    body = await json_body(request, MAX_TASK_BODY_BYTES)
    status = body.get("status") if isinstance(body, dict) else None
    if status not in trigger_data.TASK_STATUSES:
        return error_response(400, "invalid", f"status must be one of {', '.join(trigger_data.TASK_STATUSES)}")
    task_id = path_id(request)
    clock = request.app[DEPS].clock
    now = clock.now() if clock is not None else datetime.now(UTC)
    async with request_engine(request).begin() as conn:
        task = await trigger_data.set_task_status(conn, task_id, status, now)
    if task is None:
        return error_response(404, "not_found", "no task with this id")
    return json_response(task)


async def list_actions(request: web.Request) -> web.Response:
    q = list_query(request, "rule_id", "status", choices={"status": trigger_store.RUN_STATUSES})
    async with request_engine(request).connect() as conn:
        page = await trigger_store.list_actions(
            conn, rule_id=q.get("rule_id"), status=q.get("status"), cursor=q.get("cursor"), limit=request_limit(request)
        )
    for item in page.items:
        item.pop("event", None)  # the event's data stays internal; its id and type are listed
    return page_response(page)


async def retry_action(request: web.Request) -> web.Response:
    """`POST /api/actions/{id}/retry`: a failed run back to pending, due now (the scheduler looks every second)."""
    action_id = path_id(request)
    clock = request.app[DEPS].clock
    now = clock.now() if clock is not None else datetime.now(UTC)
    async with request_engine(request).begin() as conn:
        requeued = await trigger_store.requeue_failed(conn, [action_id], now)
        item = await trigger_store.get_action(conn, action_id)
    if item is None:
        return error_response(404, "not_found", "no trigger run with this id")
    if not requeued:
        return error_response(409, "not_failed", f"the run is {item['status']}; only failed runs are retried")
    item.pop("event", None)
    log.info("failed trigger run re-queued", action_id=action_id, rule=item["rule_id"], action=item["action_type"])
    return json_response(item)


def routes() -> list[web.RouteDef]:
    from leadhub.hub.http import pages

    return [
        web.get("/api/tasks", list_tasks),
        web.patch("/api/tasks/{id}", update_task),
        web.get("/api/actions", list_actions),
        web.post("/api/actions/{id}/retry", retry_action),
        *pages.routes(),
    ]
