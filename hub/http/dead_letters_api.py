"""Dead letters over the API: what could not be processed and why, what it held, and a replay once the cause is
fixed (the CLI's `dead list`, `dead show` and `dead replay` for dashboards and scripts)."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from leadhub.hub.dead_letter_replay import replay_one, replay_pipeline
from leadhub.hub.http.api import (
    list_query,
    page_response,
    path_id,
    request_engine,
    request_flag,
    request_limit,
)
from leadhub.hub.http.jsonio import error_response, json_response
from leadhub.hub.http.state import DEPS
from leadhub.store import dead_letters

log = structlog.get_logger("leadhub.api")
TEXT_INLINE = 64 * 1024  # a payload up to this size that is UTF-8 is given as `payload_text`; all of it: /payload


async def list_dead_letters(request: web.Request) -> web.Response:
    q = list_query(request, "resolved")
    async with request_engine(request).connect() as conn:
        page = await dead_letters.list_page(
            conn, resolved=request_flag(request, "resolved"), cursor=q.get("cursor"), limit=request_limit(request)
        )
    return page_response(page)


async def _row(request: web.Request) -> Any:
    dead_id = path_id(request)
    async with request_engine(request).connect() as conn:
        return await dead_letters.get(conn, dead_id)


async def get_dead_letter(request: web.Request) -> web.Response:
    row = await _row(request)
    if row is None:
        return error_response(404, "not_found", "no dead letter with that id")
    item = {k: v for k, v in row._mapping.items() if k != "payload"}
    item["payload_size"] = len(row.payload)
    item["payload_text"] = _text(row.payload)
    return json_response(item)


def _text(payload: bytes) -> str | None:
    if len(payload) > TEXT_INLINE:
        return None
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return None


async def get_dead_letter_payload(request: web.Request) -> web.Response:
    """The exact bytes, as a download: a sender's HTML must never render as a page of this origin."""
    row = await _row(request)
    if row is None:
        return error_response(404, "not_found", "no dead letter with that id")
    headers = {"Content-Disposition": f'attachment; filename="{row.id}.bin"', "X-Content-Type-Options": "nosniff"}
    return web.Response(body=row.payload, content_type="application/octet-stream", headers=headers)


async def replay_dead_letter(request: web.Request) -> web.Response:
    """`200` once stored, `422` with the reason when it fails again (recorded on it), `409` when already resolved."""
    row = await _row(request)
    if row is None:
        return error_response(404, "not_found", "no dead letter with that id")
    if row.resolved_at is not None:
        return error_response(409, "already_resolved", "this dead letter was replayed with success already")
    deps = request.app[DEPS]
    engine = request_engine(request)
    pipeline = replay_pipeline(engine, deps.settings, [c.config for c in deps.connectors.values()])
    outcome = await replay_one(engine, pipeline, row)
    log.info("dead letter replayed", id=row.id, resolved=outcome.resolved, reason=outcome.reason)
    if not outcome.resolved:
        return error_response(422, "replay_failed", outcome.reason or "failed again")
    return json_response({"id": row.id, "resolved": True})


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/dead-letters", list_dead_letters),
        web.get("/api/dead-letters/{id}", get_dead_letter),
        web.get("/api/dead-letters/{id}/payload", get_dead_letter_payload),
        web.post("/api/dead-letters/{id}/replay", replay_dead_letter),
    ]
