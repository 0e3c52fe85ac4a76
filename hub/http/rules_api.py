"""Rule-engine API: tasks rules created (`/api/tasks`) and trigger runs (`/api/actions`), behind the API token."""

from __future__ import annotations

from aiohttp import web

from leadhub.hub.http.api import page_response, request_engine, request_limit
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


async def list_actions(request: web.Request) -> web.Response:
    q = request.query
    async with request_engine(request).connect() as conn:
        page = await trigger_store.list_actions(
            conn, rule_id=q.get("rule_id"), status=q.get("status"), cursor=q.get("cursor"), limit=request_limit(request)
        )
    for item in page.items:
        item.pop("event", None)  # the event's data stays internal; its id and type are listed
    return page_response(page)


def add_routes(app: web.Application) -> None:
    from leadhub.hub.http import pages

    app.router.add_get("/api/tasks", list_tasks)
    app.router.add_get("/api/actions", list_actions)
    pages.add_routes(app)
