"""What every connector shares: its config base, the publish callback, and HTTP errors for webhooks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Annotated, Any, ClassVar, Protocol

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ByteSize, ConfigDict, ValidationInfo, field_validator

from leadhub.config_values import refuse_a_boolean_number
from leadhub.envelope import Envelope, EnvelopeError
from leadhub.queue_errors import QueueBusy, QueueUnavailable  # noqa: F401 - connectors and the hub import them here


@dataclass(frozen=True, slots=True)
class PublishResult:
    """The queue's answer: the item's id and whether the queue already had it."""

    id: str
    duplicate: bool


Publish = Callable[[Envelope], Awaitable[PublishResult]]
Stop = Callable[[], Awaitable[None]]


@dataclass
class ConnectorContext:
    """What the hub gives every connector: where to publish, the store (for checkpoints), liveness."""

    publish: Publish
    engine: Any = None  # AsyncEngine; pull connectors keep checkpoints in store.connector_state
    public_url: str | None = None
    data_dir: Any = None  # pathlib.Path
    # report(connector_name, {"ok": bool, ...}): shown under /readyz "detail" and in metrics
    report: Callable[[str, dict[str, Any]], None] = lambda name, status: None
    # failed(connector_name, reason): one failed attempt (connect, sync, poll, lease), reason from
    # connectors/failure_reason.py; counted in leadhub_connector_failures_total
    failed: Callable[[str, str], None] = lambda name, reason: None
    # the queue's limit for one message (headers and payload, bytes) as its server announced it; None: unknown
    max_payload: Callable[[], int | None] = lambda: None


class ConnectorConfig(BaseModel):
    """Keys every connector has; a type adds its own, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: str

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_a_boolean_number(value, cls.model_fields[str(info.field_name)].annotation)


MIN_BODY_LIMIT = 1024  # bytes; a smaller limit refuses ordinary requests (0: every one) and is a typo, not a choice


def _at_least_min_body(value: ByteSize) -> ByteSize:
    if value < MIN_BODY_LIMIT:
        raise ValueError(
            f"{int(value)} bytes would answer nearly every request 413; max_body is the largest body taken, "
            f"at least {MIN_BODY_LIMIT} bytes (a number of bytes, or e.g. 256KiB, 1MiB)"
        )
    return value


BodyLimit = Annotated[ByteSize, AfterValidator(_at_least_min_body)]


@dataclass(frozen=True)
class CheckResult:
    """One line of `leadhub connectors check`: a pull connector reached its source (or why not)."""

    ok: bool
    text: str


class HookError(Exception):
    """A webhook request answered with a 4xx; `reason` is a short code used in metrics."""

    def __init__(self, status: int, reason: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = headers or {}


class Connector(Protocol):
    """One channel type. Webhook connectors implement `handle`; pull connectors `start`."""

    type: ClassVar[str]
    channel: ClassVar[str]
    Config: ClassVar[type[ConnectorConfig]]

    def __init__(self, config: Any, context: ConnectorContext) -> None: ...

    async def start(self) -> Stop: ...


class WebhookConnector(Connector, Protocol):
    """A connector that receives items at `POST /hooks/<name>`."""

    async def handle(self, request: Any) -> Any: ...


DUPLICATE = web.ResponseKey("duplicate", bool)
JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


def accepted(
    result: PublishResult, headers: dict[str, str] | None = None, *, provider_fields: bytes = b""
) -> web.Response:
    """The answer once an item is durable: `202 {"id", "duplicate"}`, marked for the hub's metrics.
    `provider_fields`: what a provider asks its receiver to answer, first (`b'"result":"ok",'` for Jivo).

    Written with the json module's C string escaper rather than json.dumps: every accepted webhook
    pays for this answer, and the encoder's Python machinery was ~4% of an accept's CPU. The Content-Type
    goes in as a header: aiohttp's content_type/charset arguments parse and rebuild it (5.0 -> 2.9 µs).
    """
    body = b'{%s"id":%s,"duplicate":%s}' % (
        provider_fields,
        encode_basestring_ascii(result.id).encode(),
        b"true" if result.duplicate else b"false",
    )
    response = web.Response(body=body, status=202, headers={**headers, **JSON_HEADERS} if headers else JSON_HEADERS)
    response[DUPLICATE] = result.duplicate
    return response


async def read_body(request: Any, limit: int) -> bytes:
    """Read at most `limit` bytes of the request body; 413 beyond it, without buffering the rest.

    A client that goes away before its body is complete gets a 400 (which it will not read): a rejection
    in the log and metrics, not an unhandled error and a 500. So does a body aiohttp cannot decode
    (a `Content-Encoding` that is not what it says). With a `Content-Encoding`, aiohttp hands over the
    decoded body while Content-Length counts the encoded bytes: that body is read to its end and
    counted against `limit` as it arrives, never cut at the encoded length.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise HookError(413, "too_large", f"body of {declared} bytes exceeds the limit of {limit} bytes")
    if declared == 0:
        return b""  # aiohttp's empty payload fails readexactly(0) as if the client had gone away
    try:
        if declared is not None and "Content-Encoding" not in request.headers:
            return await request.content.readexactly(declared)  # the usual case: one read, no chunk iterator
        return await _read_chunked(request, limit)
    except (ConnectionResetError, asyncio.IncompleteReadError):
        raise HookError(400, "malformed", "the connection closed before the body was complete") from None
    except web.RequestPayloadError as exc:
        cause = exc.__cause__ or exc
        reason = getattr(cause, "message", None) or type(cause).__name__
        raise HookError(400, "malformed", f"the body cannot be read: {reason}") from None


def queueable(envelope: Envelope) -> Envelope:
    """`envelope` when the pipeline will read its message back (`Envelope.check`); else a 400 naming why.

    Its key and content type come from the request: one the pipeline refuses (longer than its column, say)
    was answered 202 and then dead-lettered, and no replay could ever store it.
    """
    try:
        envelope.check(content_type_name="Content-Type")  # the request's, sent on as the envelope's
    except EnvelopeError as exc:
        raise HookError(400, "malformed", f"the request cannot be queued: {exc}") from None
    return envelope


def header_text(value: str) -> str:
    """`value` as text that can be encoded: bytes that were not UTF-8 (aiohttp keeps them as surrogates) or a
    lone surrogate from a JSON escape become `\\udcff`-style escapes; the same input always gives the same text.
    """
    if value.isascii():
        return value
    try:
        value.encode()
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode()
    return value


async def _read_chunked(request: Any, limit: int) -> bytes:
    """A body without Content-Length, counted against `limit` as it arrives."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise HookError(413, "too_large", f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
