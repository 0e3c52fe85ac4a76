"""Connector `form`: website forms posted as JSON, urlencoded or multipart to `POST /hooks/<name>`."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import ByteSize, Field, SecretStr, field_validator

from leadhub.connectors.base import (
    BodyLimit,
    ConnectorConfig,
    ConnectorContext,
    HookError,
    PublishResult,
    Stop,
    accepted,
    header_text,
    queueable,
    read_body,
)
from leadhub.connectors.ratelimit import RateLimiter, parse_rate
from leadhub.connectors.webhook import require_method
from leadhub.durations import parse_duration
from leadhub.envelope import Envelope
from leadhub.form_keys import DEFAULT_DEDUPE_WINDOW, body_key
from leadhub.formdata import (
    NO_VALUE,
    FormData,
    FormDecodeError,
    UnsupportedContentType,
    checked_field_mapping,
    decode_form,
    has_a_value,
    media_type,
    unstorable_field,
)

TOKEN_HEADER = "X-Leadhub-Token"  # noqa: S105 - a header name, not a secret
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode's Cc: the queue changes CR/LF; none names a submission


ORIGIN = re.compile(r"(https?)://([^/?#@:\[\]\s]+|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?", re.IGNORECASE)
DEFAULT_PORTS = {"http": 80, "https": 443}


def browser_origin(value: str) -> str:
    """`value` as a browser writes it in the Origin header, which is compared as text: scheme and host in lower case,
    no default port. A path or a trailing slash would never match, so CORS would refuse the site without a word."""
    if value == "*":
        return value
    match = ORIGIN.fullmatch(value)
    scheme, host = (match[1].lower(), _ascii_host(match[2])) if match else ("", None)
    port = int(match[3]) if match and match[3] else DEFAULT_PORTS.get(scheme)
    if host is None or not 0 < (port or 0) < 65536:
        raise ValueError(
            f"{value[:100]!r} is not an origin; write scheme://host[:port] with no path, not even a trailing "
            '/ (https://www.example.com, http://localhost:3000), as browsers send it, or "*" for any site'
        )
    return f"{scheme}://{host}" + (f":{port}" if port != DEFAULT_PORTS[scheme] else "")


def _ascii_host(host: str) -> str | None:
    """The host in lower case, a non-ASCII name in the punycode browsers send (пример.рф is xn--e1afmkfd.xn--p1ai)."""
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None


def is_redirect_target(value: str) -> bool:
    """An absolute http(s) URL, or a path on the host the form posted to (`/thanks`; `//host` is another host)."""
    if not value or any(c.isspace() or not c.isprintable() for c in value):
        return False
    if value.startswith("/"):
        return not value.startswith("//")
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises for a port that is not a number
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


class FormConfig(ConnectorConfig):
    type: Literal["form"] = "form"
    token: SecretStr | None = None
    fields: dict[str, str] = Field(
        default_factory=dict, description="their field name -> leadhub field (name, phone, email, message, company)"
    )
    honeypot: str | None = Field(None, description="a hidden field that only bots fill in")
    rate_limit: str | None = Field("120/m", description="per client IP, e.g. 60/m; null turns it off")
    max_body: BodyLimit = ByteSize(256 * 1024)
    cors_origins: list[str] = Field(default_factory=list)
    redirect_url: str | None = Field(None, description="303 target after a plain HTML form post")
    idempotency_field: str | None = Field(None, description="a body field that identifies the submission, e.g. tranid")
    dedupe_window: timedelta = DEFAULT_DEDUPE_WINDOW
    trust_forwarded_for: bool = False

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        return checked_field_mapping(value)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        return [browser_origin(origin) for origin in value]

    @field_validator("redirect_url")
    @classmethod
    def _redirect_target(cls, value: str | None) -> str | None:
        if value is not None and not is_redirect_target(value):
            raise ValueError(
                f"{value[:100]!r} is not a page to send the browser to; write an absolute http(s) URL "
                "(https://www.example.com/thanks) or a path on the host the form posts to (/thanks)"
            )
        return value

    @field_validator("rate_limit")
    @classmethod
    def _rate_is_valid(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rate(value)
        return value

    @field_validator("dedupe_window", mode="before")
    @classmethod
    def _window(cls, value: Any) -> timedelta:
        window = parse_duration(value)
        if window.total_seconds() <= 0:
            raise ValueError("dedupe_window must be positive")
        return window


class FirstSeen:
    """When each body digest was first seen in the last dedupe window: a repeat keeps the first copy's bucket, so a
    double-click one second apart across a bucket edge is still one key, answered `"duplicate": true`.

    Per process and bounded, the oldest forgotten first: what it does not know (a copy another replica took, one
    from before a restart, one forgotten under load) the store still recognises by the neighbouring bucket's key.
    10,000 entries (1.7 MB measured) hold a double-click's second or so even at the intake's full rate; more
    would only add to the daemon's memory what the store already catches.
    """

    def __init__(self, window: timedelta, max_entries: int = 10_000) -> None:
        self.window = window.total_seconds()
        self.max_entries = max_entries
        self._first: OrderedDict[str, float] = OrderedDict()  # digest -> first seen, in the order first seen

    def first_seen(self, digest: str, now: float) -> float:
        """When this body was first seen within the window before `now`; `now` when not."""
        first = self._first.get(digest)
        if first is not None and now - first < self.window:
            return first
        self._first.pop(digest, None)
        self._first[digest] = now
        while len(self._first) > self.max_entries or now - next(iter(self._first.values())) >= self.window:
            self._first.popitem(last=False)
        return now


class FormConnector:
    """Authenticates, bounds and decodes a form post, then publishes it exactly as received."""

    type: ClassVar[str] = "form"
    channel: ClassVar[str] = "form"
    Config: ClassVar[type[FormConfig]] = FormConfig

    def __init__(self, config: FormConfig, context: ConnectorContext, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.publish = context.publish
        self.limiter = RateLimiter(*parse_rate(config.rate_limit)) if config.rate_limit else None
        self._token = config.token.get_secret_value().encode() if config.token else None
        self.clock = clock  # wall-clock seconds: the received time and the body key's bucket
        self._bodies = FirstSeen(config.dedupe_window)

    async def start(self) -> Stop:
        async def stop() -> None:
            return None

        return stop

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return self._preflight(request)
        require_method(request, "POST", "OPTIONS")  # OPTIONS: the CORS preflight, answered above
        self._check_rate(request)
        self._check_token(request)
        body = await read_body(request, int(self.config.max_body))
        content_type = request.headers.get("Content-Type", "")
        try:
            form = decode_form(content_type, body)
        except UnsupportedContentType as exc:
            raise HookError(415, "content_type", str(exc)) from None
        except FormDecodeError as exc:
            raise HookError(400, "malformed", str(exc)) from None
        if not has_a_value(form):
            raise HookError(400, "empty", NO_VALUE)
        if problem := unstorable_field(form):  # as the /api refuses it: the site can send text without it
            raise HookError(400, "malformed", problem)
        now = self.clock()
        envelope = Envelope(
            key=self._key(request, form, now),
            channel=self.channel,
            connector=self.config.name,
            payload=body,
            received_at=datetime.fromtimestamp(now, UTC),
            content_type=header_text(content_type).strip(),
            meta={k: header_text(v) for k, v in self._meta(request, form.fields).items()},
        )
        result = await self.publish(queueable(envelope))
        return self._answer(request, result)

    def _client_ip(self, request: web.Request) -> str:
        if self.config.trust_forwarded_for and (forwarded := request.headers.getall("X-Forwarded-For", [])):
            # the last entry is what the one proxy appended; those before it are whatever the client sent
            return forwarded[-1].rsplit(",", 1)[-1].strip()
        return request.remote or "unknown"

    def _check_rate(self, request: web.Request) -> None:
        if self.limiter and (wait := self.limiter.acquire(self._client_ip(request))):
            raise HookError(
                429,
                "rate_limited",
                "too many submissions from this address; try again later",
                headers={"Retry-After": str(max(1, round(wait)))},
            )

    def _check_token(self, request: web.Request) -> None:
        if self._token is None:
            return
        given = request.headers.get(TOKEN_HEADER) or request.query.get("token") or ""
        if not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), self._token):
            reason = "missing token" if not given else "wrong token"
            raise HookError(401, "bad_token", f"{reason}: send the connector's token in {TOKEN_HEADER} or ?token=")

    def _key(self, request: web.Request, form: FormData, now: float) -> str:
        """The idempotency key: the client's, a configured body field, or the body's hash in a window.

        Lengths are counted after header_text: a byte that is not UTF-8 travels as a 6-character escape.
        """
        fields = form.fields
        prefix = f"form:{self.config.name}"
        if given := _idempotency_value(request.headers.get(IDEMPOTENCY_HEADER) or "", IDEMPOTENCY_HEADER):
            if len(given) > MAX_KEY_LENGTH:
                raise HookError(
                    400,
                    "malformed",
                    f"{IDEMPOTENCY_HEADER} is longer than {MAX_KEY_LENGTH} characters "
                    "(a byte that is not UTF-8 counts as 6)",
                )
            return f"{prefix}:idem:{given}"
        field = self.config.idempotency_field
        if (
            field
            and isinstance(value := fields.get(field), str | int)
            and (given := _idempotency_value(str(value), f"idempotency_field {field!r}", MAX_KEY_LENGTH))
        ):
            return f"{prefix}:field:{given}"
        # surrogatepass: an uploaded file's name may keep bytes that were not UTF-8 as surrogates (a field holding
        # one is refused before this)
        # Uploaded files count too: two file-only posts are two submissions, not one and a "duplicate".
        content: Any = fields if not form.files else [fields, [(f.field, f.filename, f.sha256) for f in form.files]]
        text = json.dumps(content, sort_keys=True, ensure_ascii=False, default=str)
        canonical = text.encode("utf-8", "surrogatepass")
        digest = hashlib.sha256(canonical).hexdigest()[:32]
        first_seen = self._bodies.first_seen(digest, now)
        return body_key(self.config.name, digest, first_seen, self.config.dedupe_window)

    def _meta(self, request: web.Request, fields: dict[str, Any]) -> dict[str, str]:
        meta = {"remote_ip": self._client_ip(request)}
        for header, key in (("User-Agent", "user_agent"), ("Referer", "referer"), ("Origin", "origin")):
            if value := request.headers.get(header):
                meta[key] = value[:500]
        if self.config.honeypot and fields.get(self.config.honeypot):
            meta["spam"] = "honeypot"
        return meta

    def _cors_headers(self, request: web.Request) -> dict[str, str]:
        origin = request.headers.get("Origin")
        if origin and (origin in self.config.cors_origins or "*" in self.config.cors_origins):
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        return {}

    def error_headers(self, request: web.Request) -> dict[str, str]:
        """Headers for an error answer (4xx, 503): for an allowed site the CORS headers and Retry-After exposed, so
        its script can read the status, the reason and when to retry rather than only "Failed to fetch"."""
        headers = self._cors_headers(request)
        if headers:
            headers["Access-Control-Expose-Headers"] = "Retry-After"
        return headers

    def _preflight(self, request: web.Request) -> web.Response:
        headers = self._cors_headers(request)
        if not headers:
            raise HookError(403, "cors", "origin not in this connector's cors_origins")
        headers |= {
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": f"Content-Type, {TOKEN_HEADER}, {IDEMPOTENCY_HEADER}",
            "Access-Control-Max-Age": "600",
        }
        return web.Response(status=204, headers=headers)

    def _answer(self, request: web.Request, result: PublishResult) -> web.Response:
        is_html_form = media_type(request.headers.get("Content-Type", "")) != "application/json"
        if self.config.redirect_url and is_html_form and "text/html" in request.headers.get("Accept", ""):
            raise web.HTTPSeeOther(location=self.config.redirect_url)
        return accepted(result, self._cors_headers(request))


def _idempotency_value(value: str, where: str, limit: int | None = None) -> str:
    """`value` as it will be stored: trimmed (the queue trims header values), its first `limit` characters, and a 400
    for a control character.

    The queue turns a line break into a space: the key stored, and the id derived from it, would not be the id
    answered, and "a\\nb" would be the same submission as "a b". Trimmed, " t-1 " is the same submission as "t-1".
    """
    value = header_text(value).strip()
    if limit is not None:
        value = value[:limit].rstrip()
    if bad := _CONTROL.search(value):
        raise HookError(400, "malformed", f"{where} holds a control character ({bad.group()!r}), such as a line break")
    return value
