"""Public pages linked from emails: the survey (`/s/<token>`) and one-click unsubscribe (`/u/<token>`), no JS."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import structlog
from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from leadhub.hub.http.api import StoreStarting, request_engine
from leadhub.hub.http.state import DEPS
from leadhub.triggers import survey
from leadhub.triggers.sandbox import Templates

STATUS = {"form": 200, "thanks": 200, "answered": 200, "confirm": 200, "done": 200, "invalid": 404, "expired": 410}
STATUS["unavailable"] = 503
# A score and a comment of at most 5,000 characters (4 bytes each in UTF-8, percent-encoded at worst 12): the app's
# own limit is sized for webhooks (tens of MB), which anyone with a survey link could otherwise make a page buffer.
MAX_ANSWER_BYTES = 64 * 1024
log = structlog.get_logger("leadhub.pages")
Handler = Callable[[web.Request], Awaitable[web.Response]]


def _store_away_is_a_page(name: str) -> Callable[[Handler], Handler]:
    """A customer who clicks a link while the database is away, or not open yet, gets the page saying so (503),
    not the API's JSON error."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def page(request: web.Request) -> web.Response:
            try:
                return await handler(request)
            except (SQLAlchemyError, OSError, StoreStarting) as exc:
                log.warning("store unavailable for a page", page=name, error=f"{type(exc).__name__}: {exc}"[:300])
                request.app[DEPS].metrics.store_errors.labels("pages", "unavailable").inc()
                response = _page(request, name, "unavailable", error=None, address=None)
                response.headers["Retry-After"] = "60"
                return response

        return page

    return wrap


@functools.cache
def _templates(directory: Path | None) -> Templates:
    return Templates(directory)


def _now(request: web.Request) -> datetime:
    clock = request.app[DEPS].clock
    return clock.now() if clock is not None else datetime.now(UTC)


def _page(request: web.Request, name: str, state: str, status: int | None = None, **values: object) -> web.Response:
    template = _templates(request.app[DEPS].settings.templates_dir).html.get_template(f"pages/{name}.html")
    html = template.render(state=state, action=_own_url(request), title="Your opinion", **values)
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"}
    return web.Response(text=html, content_type="text/html", status=status or STATUS[state], headers=headers)


def _own_url(request: web.Request) -> str:
    """The page's own URL relative to itself, for an admin's page template written with `action="{{ action }}"`
    (the shipped ones post back by having no action). request.path lacks the prefix of LEADHUB_PUBLIC_URL
    that a proxy strips (https://shop.example/crm), so a form posting there sent the answer outside the hub."""
    return "./" + request.rel_url.raw_path.rpartition("/")[2]


@_store_away_is_a_page("survey")
async def survey_page(request: web.Request) -> web.Response:
    state, _ = await survey.open_link(request_engine(request), request.match_info["token"], _now(request))
    return _page(request, "survey", state, error=None)


@_store_away_is_a_page("survey")
async def survey_answer(request: web.Request) -> web.Response:
    now = _now(request)
    engine = request_engine(request)
    state, link = await survey.open_link(engine, request.match_info["token"], now)
    if link is None or state != "form":
        return _page(request, "survey", state, error=None)
    if request.content_length is None or request.content_length > MAX_ANSWER_BYTES:
        message = f"The answer is too long; please keep the comment under {survey.MAX_COMMENT} characters."
        return _page(request, "survey", "form", status=413, error=message)
    try:
        form = await request.post()
    except (ValueError, LookupError, web.RequestPayloadError):
        # multipart without its boundary, an unknown charset, a Content-Encoding that is not what it says
        return _page(request, "survey", "form", status=400, error="The answer could not be read; please send it again.")
    try:
        score, comment = survey.parse_answer(_text(form.get("score")), _text(form.get("comment")))
    except survey.BadAnswer as exc:
        return _page(request, "survey", "form", status=400, error=str(exc))
    stored = await survey.submit(engine, link, score, comment, now)
    return _page(request, "survey", "thanks" if stored else "answered")


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


@_store_away_is_a_page("unsubscribe")
async def unsubscribe_page(request: web.Request) -> web.Response:
    state, address = await survey.unsubscribe(
        request_engine(request), request.match_info["token"], _now(request), confirm=False
    )
    return _page(request, "unsubscribe", state, address=address)


@_store_away_is_a_page("unsubscribe")
async def unsubscribe_post(request: web.Request) -> web.Response:
    """The confirm button and RFC 8058 one-click (`List-Unsubscribe=One-Click` from the mail client) alike."""
    state, address = await survey.unsubscribe(
        request_engine(request), request.match_info["token"], _now(request), confirm=True
    )
    return _page(request, "unsubscribe", state, address=address)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/s/{token}", survey_page),
        web.post("/s/{token}", survey_answer),
        web.get("/u/{token}", unsubscribe_page),
        web.post("/u/{token}", unsubscribe_post),
    ]
