"""A person's decision on contacts flagged for review (`GET /api/contacts?review=true`): merge by hand, or keep
them apart (store/contact_review.py). `POST /api/contacts/{id}/unmerge` takes a merge by hand back as any other."""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from aiohttp import web

from leadhub.hub.http.api import json_body, path_id, request_engine
from leadhub.hub.http.jsonio import error_response, json_response
from leadhub.hub.http.state import DEPS
from leadhub.ids import typed_id
from leadhub.store import contact_review

log = structlog.get_logger("leadhub.api")
MAX_BODY = 4096


async def merge_contact(request: web.Request) -> web.Response:
    """`POST /api/contacts/{id}/merge` with `{"into": "<contact id>"}`: contact `id` merges into that one."""
    body = await json_body(request, MAX_BODY)
    survivor_id = body.get("into") if isinstance(body, dict) else None
    if not isinstance(survivor_id, str) or not survivor_id:
        return error_response(400, "bad_body", 'send {"into": "<id of the contact that stays>"} as JSON')
    survivor_id = typed_id(survivor_id)
    merged_id = path_id(request)
    settings = request.app[DEPS].settings
    try:
        async with request_engine(request).begin() as conn:
            merge = await contact_review.merge_by_hand(
                conn, merged_id, survivor_id, datetime.now(UTC), settings.identity_policy
            )
    except contact_review.ReviewError as exc:
        return error_response(404 if exc.missing else 409, "cannot_merge", str(exc))
    log.info("contacts merged by hand", **merge)
    return json_response({"merge_id": merge["merge_id"], "contact_id": survivor_id, "merged_id": merge["merged_id"]})


async def keep_apart(request: web.Request) -> web.Response:
    """`POST /api/contacts/{id}/keep-apart`: they are different people; the review flags are cleared."""
    contact_id = path_id(request)
    try:
        async with request_engine(request).begin() as conn:
            cleared = await contact_review.keep_apart(conn, contact_id, datetime.now(UTC))
    except contact_review.ReviewError as exc:
        return error_response(404 if exc.missing else 409, "cannot_keep_apart", str(exc))
    log.info("contacts kept apart", cleared=cleared)
    return json_response({"cleared": cleared})


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/contacts/{id}/merge", merge_contact),
        web.post("/api/contacts/{id}/keep-apart", keep_apart),
    ]
