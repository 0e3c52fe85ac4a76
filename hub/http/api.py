"""The read API: leads, contacts, inquiries as JSON lists with cursors, behind a bearer token."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus, unquote_to_bytes

import structlog
from aiohttp import web
from multidict import MultiDict, MultiDictProxy
from sqlalchemy.exc import SQLAlchemyError

from leadhub.envelope import CHANNELS
from leadhub.hub.config import MIN_TOKEN_LENGTH, Settings
from leadhub.hub.http import access
from leadhub.hub.http.jsonio import error_response, json_response
from leadhub.hub.http.state import DEPS
from leadhub.ids import typed_id
from leadhub.json_errors import loads
from leadhub.pipelines.normalize import fold_email, normalize_email, normalize_phone, phone_digits
from leadhub.storable_text import first_unstorable, unstorable
from leadhub.store import identity, leads, queries
from leadhub.store.orders import ORDER_STATUSES

log = structlog.get_logger("leadhub.api")
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadParameter(ValueError):
    pass


class BodyRefused(Exception):
    """A request body that is not the JSON asked for: answered with `status`, `code` and `detail` (api_guard)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


async def json_body(request: web.Request, max_bytes: int) -> Any:
    """The request's JSON body, read up to `max_bytes`: 415 unless it is sent as JSON, 413 when larger, 400 when
    it does not parse (nested too deeply included) or a string in it holds what no store can."""
    if request.content_type != "application/json":
        raise BodyRefused(415, "unsupported_media_type", "send the body as application/json")
    too_large = BodyRefused(413, "too_large", f"the body may be at most {max_bytes} bytes")
    if (request.content_length or 0) > max_bytes:
        raise too_large
    raw = await _read_at_most(request, max_bytes + 1)
    if len(raw) > max_bytes:  # a chunked body says no length beforehand
        raise too_large
    try:
        body = loads(raw)
    except ValueError as exc:  # also an integer of 4,300+ digits, which int() refuses, and JSON nested too deeply
        raise BodyRefused(400, "bad_json", f"the body is not JSON: {exc}") from None
    # Refused before anything is committed: a `"\ud800"` tag was stored as `?`, its events emitted, and only then
    # the answer failed (500).
    problem = first_unstorable(body)
    if problem is not None:
        raise BodyRefused(400, "bad_json", f"a string in the body holds {problem}; send text without it")
    return body


async def _read_at_most(request: web.Request, limit: int) -> bytes:
    """The body up to its end or `limit` bytes, whichever comes first.

    `content.read(n)` answers with what has arrived so far: a body in two TCP segments was cut after the first and
    refused as bad JSON.
    """
    raw = bytearray()
    while len(raw) < limit and (chunk := await request.content.read(limit - len(raw))):
        raw += chunk
    return bytes(raw)


PAGING = ("cursor", "limit")
ID_FILTERS = frozenset({"contact_id", "lead_id"})  # ids leadhub made (`typed_id`); a rule's id is the admin's text


def list_query(
    request: web.Request, *filters: str, choices: Mapping[str, Sequence[str]] | None = None
) -> MultiDictProxy[str]:
    """The query of a list request, refused when it names a parameter the list does not take, gives one twice, gives
    a filter no value (`?phone=`, or only spaces), or gives a filter of a closed set (`choices`: a status, a channel)
    a value outside it.

    A misspelt filter (`?stauts=new`) or value (`?status=Won`) would otherwise match nothing or be ignored, of a
    repeated one only the first would count, and an empty one (a script's unset variable) would list every item: a
    script would act on the wrong items without a word.
    """
    query = request.query
    taken = (*filters, *PAGING)
    unknown = sorted({name for name in query if name not in taken})
    if unknown:
        names = ", ".join(repr(name[:40]) for name in unknown[:5])
        raise BadParameter(f"unknown parameter {names}: this list takes {', '.join(sorted(taken))}")
    repeated = sorted({name for name in query if len(query.getall(name)) > 1})
    if repeated:
        raise BadParameter(f"parameter {', '.join(map(repr, repeated))} given more than once")
    empty = [name for name in filters if name in query and not query[name].strip()]
    if empty:
        raise BadParameter(
            f"parameter {', '.join(map(repr, empty))} is empty: give a value, or leave it out to list every item"
        )
    for name, value in query.items():
        problem = unstorable(value)
        if problem is not None:
            raise BadParameter(f"{name} holds {problem}, which no value of it can")
    for name, allowed in (choices or {}).items():
        value = query.get(name)
        if value is not None and value not in allowed:
            raise BadParameter(f"{name} {value[:40]!r} is not one of {', '.join(allowed)}")
    if ID_FILTERS.isdisjoint(query):
        return query
    return MultiDictProxy(MultiDict((name, typed_id(v) if name in ID_FILTERS else v) for name, v in query.items()))


def path_id(request: web.Request) -> str:
    """The `{id}` of an /api path: an id leadhub made, in any case (`typed_id`)."""
    return typed_id(request.match_info["id"])


def _check_path_id(request: web.Request) -> None:
    """Refuse an `{id}` in the path that holds what no id can, for every /api route at once: the store would fail on
    it (PostgreSQL refuses NUL) and the request be answered, and counted, as a store outage."""
    value = request.match_info.get("id")
    problem = unstorable(value) if value is not None else None
    if problem is not None:
        raise BadParameter(f"the id in the path holds {problem}, which no id can")


def _check_query_bytes(request: web.Request) -> None:
    """Refuse a query whose percent-escapes are not UTF-8 (`contact_id=%ED%A0%80`), for every /api route at once:
    aiohttp reads such bytes as U+FFFD, so a filter matched nothing and a list answered 200 with no items."""
    raw = request.rel_url.raw_query_string
    if "%" not in raw:
        return
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise BadParameter("the query holds percent-escaped bytes that are not UTF-8, which no value can") from None


def warn_of_weak_access(settings: Settings) -> None:
    """Logged once at start: a hub with a public URL is likely behind a proxy, which the API trusts only so far;
    a short token can be guessed."""
    token = settings.api_token
    if token is None and settings.public_url is not None:
        log.warning("the API answers loopback clients without a token; behind a proxy set LEADHUB_API_TOKEN")
    elif token is not None and len(token.get_secret_value()) < MIN_TOKEN_LENGTH:
        log.warning(f"LEADHUB_API_TOKEN is shorter than {MIN_TOKEN_LENGTH} characters; set a long random value")


def _refusal(request: web.Request) -> web.Response | None:
    """The 401 for a request the API does not serve (access.py says which); None when it is served."""
    reason = access.refusal(request)
    if reason is None:
        return None
    # a wrong or missing token is asked for again; without a token configured none would help
    asks = {"WWW-Authenticate": "Bearer"} if request.app[DEPS].settings.api_token is not None else None
    return error_response(401, "unauthorized", reason, headers=asks)


async def api_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer token on /api (hub/http/guard.py runs this for every path under /api/, routed or not)."""
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    try:
        _check_path_id(request)
        _check_query_bytes(request)
        return await handler(request)
    except (BadParameter, queries.BadCursor) as exc:
        return error_response(400, "bad_parameter", str(exc))
    except BodyRefused as exc:
        return error_response(exc.status, exc.code, exc.detail)
    except Exception as exc:
        if not _store_away(exc):
            raise  # guard.py logs it with its traceback and answers 500
        log.warning("store unavailable for the API", path=request.path, error=f"{type(exc).__name__}: {exc}"[:300])
        request.app[DEPS].metrics.store_errors.labels("api", "unavailable").inc()
        return error_response(503, "store_unavailable", "the store is unavailable; retry later")


def _store_away(exc: Exception) -> bool:
    """A store error, or what asyncpg raises unwrapped while connecting: ConnectionRefusedError or a reset (OSError,
    TimeoutError too) with PostgreSQL unreachable, its own errors while the server starts up. They were a 500."""
    return isinstance(exc, SQLAlchemyError | OSError) or type(exc).__module__.startswith("asyncpg")


def request_limit(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    # isascii: str.isdigit() also takes '²' and other digits int() refuses; len: int() refuses 4,300+ digits
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9 and 1 <= int(raw) <= MAX_LIMIT):
        raise BadParameter(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


class StoreStarting(web.HTTPServiceUnavailable):
    """The store is not open yet (the daemon is starting): the API's JSON 503; a customer's page shows its own."""

    def __init__(self) -> None:
        super().__init__(text='{"error":"store_unavailable","detail":"starting"}', content_type="application/json")


def request_engine(request: web.Request) -> Any:
    engine = request.app[DEPS].engine()
    if engine is None:
        raise StoreStarting
    return engine


def request_flag(request: web.Request, name: str) -> bool | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if raw.lower() not in ("true", "false", "1", "0"):
        raise BadParameter(f"{name} must be true or false")
    return raw.lower() in ("true", "1")


def page_response(page: queries.Page) -> web.Response:
    return json_response({"items": page.items, "next_cursor": page.next_cursor})


async def list_leads(request: web.Request) -> web.Response:
    choices = {"status": leads.LEAD_STATUSES, "channel": CHANNELS}
    q = list_query(request, "contact_id", "channel", "status", "merged", choices=choices)
    async with request_engine(request).connect() as conn:
        page = await queries.list_leads(
            conn,
            contact_id=q.get("contact_id"),
            channel=q.get("channel"),
            status=q.get("status"),
            cursor=q.get("cursor"),
            limit=request_limit(request),
            merged=bool(request_flag(request, "merged")),
        )
    return page_response(page)


async def get_lead(request: web.Request) -> web.Response:
    lead_id = path_id(request)
    async with request_engine(request).connect() as conn:
        lead = await queries.get_lead(conn, lead_id)
    if lead is None:
        return error_response(404, "not_found", "no lead with that id")
    return json_response(lead)


MAX_PATCH_BYTES = 64 * 1024
MAX_TAGS = 50
MAX_TAG_LENGTH = 64


def _lead_changes(body: Any) -> dict[str, Any]:
    """The fields a PATCH may set, checked; BadParameter names the first problem."""
    if not isinstance(body, dict):
        raise BadParameter("the body must be a JSON object with status, owner and/or tags")
    unknown = sorted(set(body) - {"status", "owner", "tags"})
    if unknown:
        raise BadParameter(f"unknown field(s) {', '.join(unknown)}; a lead's status, owner and tags can be changed")
    if not body:
        raise BadParameter("nothing to change: send status, owner and/or tags")
    changes: dict[str, Any] = {}
    if "status" in body:
        if body["status"] not in leads.LEAD_STATUSES:
            raise BadParameter(f"status must be one of {', '.join(leads.LEAD_STATUSES)}")
        changes["status"] = body["status"]
    if "owner" in body:
        owner = body["owner"].strip() if isinstance(body["owner"], str) else body["owner"]
        if owner is not None and (not isinstance(owner, str) or len(owner) > 200):
            raise BadParameter("owner must be a string of at most 200 characters, or null")
        changes["owner"] = owner or None
    if "tags" in body:
        tags = body["tags"]
        if not isinstance(tags, list) or len(tags) > MAX_TAGS:
            raise BadParameter(f"tags must be a list of at most {MAX_TAGS} strings")
        if not all(isinstance(t, str) and 0 < len(t.strip()) <= MAX_TAG_LENGTH for t in tags):
            raise BadParameter(f"each tag must be a non-empty string of at most {MAX_TAG_LENGTH} characters")
        changes["tags"] = list(dict.fromkeys(t.strip() for t in tags))
    return changes


async def patch_lead(request: web.Request) -> web.Response:
    """Changes from outside (the sales team's CRM): status, owner, tags; each emits `lead.*` events for rules."""
    body = await json_body(request, MAX_PATCH_BYTES)
    changes = _lead_changes(body)
    lead_id = path_id(request)
    try:
        async with request_engine(request).begin() as conn:
            lead, diff = await leads.change_lead(conn, lead_id, changes, utcnow())
    except leads.LeadChangeError as exc:
        return error_response(exc.status, exc.code, exc.detail)
    log.info("lead changed through the API", lead_id=lead["id"], changes=sorted(diff))
    return json_response(lead | {"changed": sorted(diff)})


async def get_contact(request: web.Request) -> web.Response:
    contact_id = path_id(request)
    async with request_engine(request).connect() as conn:
        contact = await queries.get_contact(conn, contact_id)
    if contact is None:
        return error_response(404, "not_found", "no contact with that id")
    return json_response(contact)


async def unmerge_contact(request: web.Request) -> web.Response:
    """Take back the merge that absorbed this contact (or the merge with this id); later changes are kept."""
    contact_or_merge_id = path_id(request)
    try:
        async with request_engine(request).begin() as conn:
            merge = await identity.unmerge(conn, contact_or_merge_id, utcnow())
    except identity.UnmergeError as exc:
        return error_response(404 if exc.missing else 409, "cannot_unmerge", str(exc))
    log.info("contact unmerged", survivor_id=merge["survivor_id"], restored_id=merge["merged_id"], merge_id=merge["id"])
    return json_response(
        {"merge_id": merge["id"], "contact_id": merge["survivor_id"], "restored_id": merge["merged_id"]}
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


async def list_contacts(request: web.Request) -> web.Response:
    q = list_query(request, "email", "phone", "review", "merged")
    settings = request.app[DEPS].settings
    region = settings.default_region
    email = email_alias = phone = None
    phone_kind = "phone"
    if q.get("email"):
        email = normalize_email(q["email"]) or q["email"].strip().lower()
        if settings.email_folding and (folded := fold_email(email)) != email:
            email, email_alias = folded, email
    if q.get("phone"):
        written = _phone_as_sent(request, q["phone"])
        phone = normalize_phone(written, region)
        if phone is None and (phone := phone_digits(written)) is not None:
            phone_kind = "phone_digits"  # an invalid number names its sender by its digits (pipelines/normalize.py)
        elif phone is None:
            raise BadParameter(f"phone {written!r} is not a valid number (default region: {region or 'none'})")
    async with request_engine(request).connect() as conn:
        page = await queries.list_contacts(
            conn,
            email=email,
            email_alias=email_alias,
            phone=phone,
            phone_kind=phone_kind,
            cursor=q.get("cursor"),
            limit=request_limit(request),
            review=request_flag(request, "review"),
            merged=bool(request_flag(request, "merged")),
        )
        identifiers = await queries.contact_identifiers(conn, [c["id"] for c in page.items])
    for contact in page.items:
        contact["identifiers"] = identifiers.get(contact["id"], [])
    return page_response(page)


def _phone_as_sent(request: web.Request, value: str) -> str:
    """The phone with its leading plus: `?phone=+4930123456` typed as is (a browser, curl without --data-urlencode)
    decodes to ` 4930123456`, a `+` in a query being a space, which the default region then read as a national
    number of its own (another contact, or none). A plus sent encoded (`%2B`) is already one."""
    for part in request.rel_url.raw_query_string.split("&"):
        name, _, raw = part.partition("=")
        if unquote_plus(name) == "phone" and raw.startswith("+"):
            return "+" + value.lstrip()
    return value


async def list_inquiries(request: web.Request) -> web.Response:
    q = list_query(request, "contact_id", "lead_id", "channel", "dropped", choices={"channel": CHANNELS})
    dropped = request_flag(request, "dropped")
    async with request_engine(request).connect() as conn:
        page = await queries.list_inquiries(
            conn,
            contact_id=q.get("contact_id"),
            lead_id=q.get("lead_id"),
            channel=q.get("channel"),
            dropped=dropped,
            cursor=q.get("cursor"),
            limit=request_limit(request),
        )
    return page_response(page)


async def get_inquiry(request: web.Request) -> web.Response:
    inquiry_id = path_id(request)
    async with request_engine(request).connect() as conn:
        inquiry = await queries.get_inquiry(conn, inquiry_id)
    if inquiry is None:
        return error_response(404, "not_found", "no inquiry with that id")
    return json_response(inquiry)


async def list_orders(request: web.Request) -> web.Response:
    q = list_query(request, "contact_id", "status", "connector", choices={"status": ORDER_STATUSES})
    async with request_engine(request).connect() as conn:
        page = await queries.list_orders(
            conn,
            contact_id=q.get("contact_id"),
            status=q.get("status"),
            connector=q.get("connector"),
            cursor=q.get("cursor"),
            limit=request_limit(request),
        )
    return page_response(page)


async def get_order(request: web.Request) -> web.Response:
    order_id = path_id(request)
    async with request_engine(request).connect() as conn:
        order = await queries.get_order(conn, order_id)
    if order is None:
        return error_response(404, "not_found", "no order with that id")
    return json_response(order)


def routes() -> list[web.RouteDef]:
    from leadhub.hub.http import contact_review_api, dead_letters_api, rules_api  # they import helpers from here

    return [
        web.get("/api/leads", list_leads),
        web.get("/api/leads/{id}", get_lead),
        web.patch("/api/leads/{id}", patch_lead),
        web.get("/api/contacts", list_contacts),
        web.get("/api/contacts/{id}", get_contact),
        web.post("/api/contacts/{id}/unmerge", unmerge_contact),
        web.get("/api/inquiries", list_inquiries),
        web.get("/api/inquiries/{id}", get_inquiry),
        web.get("/api/orders", list_orders),
        web.get("/api/orders/{id}", get_order),
        *rules_api.routes(),
        *dead_letters_api.routes(),
        *contact_review_api.routes(),
    ]
