"""Rule-engine API: tasks rules created (`/api/tasks`) and trigger runs (`/api/actions`), behind the API token."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from aiohttp import web

from leadhub.hub.http.api import page_response, request_engine, request_limit
from leadhub.hub.http.jsonio import error_response, json_response
from leadhub.hub.http.state import DEPS
from leadhub.store import trigger_data
from leadhub.store import triggers as trigger_store


async def list_tasks(request: web.Request) -> web.Response:
    q = request.query
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


TASK_STATUSES = ("open", "done")


async def update_task(request: web.Request) -> web.Response:
    """`PATCH /api/tasks/{id}` with `{"status": "done"}`: a manager closes the task (emits `task.status_changed`)."""
    try:
        body = json.loads(await request.read())
    except (ValueError, RecursionError):
        return error_response(400, "malformed", 'the body must be JSON, e.g. {"status": "done"}')
    status = body.get("status") if isinstance(body, dict) else None
    if status not in TASK_STATUSES:
        return error_response(400, "invalid", f"status must be one of {', '.join(TASK_STATUSES)}")
    clock = request.app[DEPS].clock
    now = clock.now() if clock is not None else datetime.now(UTC)
    async with request_engine(request).begin() as conn:
        task = await trigger_data.set_task_status(conn, request.match_info["id"], status, now)
    if task is None:
        return error_response(404, "not_found", "no task with this id")
    return json_response(task)


async def list_actions(request: web.Request) -> web.Response:
    q = request.query
    async with request_engine(request).connect() as conn:
        page = await trigger_store.list_actions(
            conn, rule_id=q.get("rule_id"), status=q.get("status"), cursor=q.get("cursor"), limit=request_limit(request)
        )
    for item in page.items:
        item.pop("event", None)  # the event's data stays internal; its id and type are listed
    return page_response(page)


def routes() -> list[web.RouteDef]:
    from leadhub.hub.http import pages

    return [
        web.get("/api/tasks", list_tasks),
        web.patch("/api/tasks/{id}", update_task),
        web.get("/api/actions", list_actions),
        *pages.routes(),
    ]
