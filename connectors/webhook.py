"""Webhook mechanics every provider connector shares: secrets with rotation, constant-time checks, replay window.

A provider module knows its own scheme (what is signed, which header); this module only supplies the
pieces that must be done the same way everywhere: the raw body read with a limit before any parsing,
`secret` or `secrets: [new, old]`, comparisons with `hmac.compare_digest` against every secret, and a
replay window for providers that sign a timestamp.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, ClassVar, Self

from aiohttp import web
from pydantic import ByteSize, Field, SecretStr, field_validator, model_validator

from leadhub.connectors.base import (
    BodyLimit,
    ConnectorConfig,
    ConnectorContext,
    HookError,
    PublishResult,
    Stop,
    header_text,
    queueable,
    read_body,
)
from leadhub.durations import parse_duration
from leadhub.envelope import Envelope
from leadhub.formdata import FormDecodeError, urlencoded_pairs
from leadhub.json_errors import encoding_note, json_error_text, loads, read_in

DEFAULT_MAX_BODY = ByteSize(1024 * 1024)
DEFAULT_REPLAY_WINDOW = timedelta(hours=1)
_NOT_IN_KEY_PART = re.compile(r"[\s:\x00-\x1f\x7f-\x9f]")

Clock = Callable[[], float]


class WebhookConfig(ConnectorConfig):
    """`secret`, or `secrets: [new, old]` during a rotation; a body limit; a replay window (null turns it off)."""

    secret: SecretStr | None = None
    secrets: list[SecretStr] = Field(default_factory=list)
    max_body: BodyLimit = DEFAULT_MAX_BODY
    replay_window: timedelta | None = DEFAULT_REPLAY_WINDOW

    @field_validator("replay_window", mode="before")
    @classmethod
    def _window(cls, value: Any) -> timedelta | None:
        if value is None:
            return None
        window = parse_duration(value)
        if window.total_seconds() <= 0:
            raise ValueError("replay_window must be positive (or null to turn it off)")
        return window

    @model_validator(mode="after")
    def _one_source_of_secrets(self) -> Self:
        if self.secret is not None and self.secrets:
            raise ValueError("give either secret or secrets (secrets: [new, old] during a rotation), not both")
        if self.secret is None and not self.secrets:
            raise ValueError("secret is required (or secrets: [new, old] during a rotation)")
        if any(not s.get_secret_value() for s in self.all_secrets()):
            raise ValueError("a secret must not be empty")
        return self

    def all_secrets(self) -> list[SecretStr]:
        return [self.secret] if self.secret is not None else list(self.secrets)

    def secret_values(self) -> list[bytes]:
        """Every accepted secret as bytes, the newest first."""
        return [s.get_secret_value().encode() for s in self.all_secrets()]


async def raw_body(request: web.Request, limit: int) -> bytes:
    """The body exactly as received, at most `limit` bytes (413 beyond); signatures are checked on this."""
    return await read_body(request, limit)


def matches_any(given: str | bytes | None, expected: Callable[[bytes], str | bytes], secrets: Iterable[bytes]) -> bool:
    """True when `given` equals `expected(secret)` for one of `secrets`; every secret is compared, in constant time."""
    if not given:
        return False
    # surrogatepass: a header's bytes that were not UTF-8 arrive as surrogates; they must not match, nor raise
    candidate = given.encode("utf-8", "surrogatepass") if isinstance(given, str) else given
    matched = False
    for secret in secrets:
        value = expected(secret)
        matched |= hmac.compare_digest(candidate, value.encode() if isinstance(value, str) else value)
    return matched


def require_signature(
    given: str | None, expected: Callable[[bytes], str | bytes], secrets: Iterable[bytes], where: str
) -> None:
    """401 `bad_signature` unless `given` is the signature under one of `secrets`; `where` names the header."""
    if not given:
        raise HookError(401, "bad_signature", f"missing {where}: the request is not signed")
    if not matches_any(given.strip(), expected, secrets):
        raise HookError(401, "bad_signature", f"{where} does not match the request signed with the connector secret")


def require_token(given: str | None, secrets: Iterable[bytes], where: str) -> None:
    """401 `bad_signature` unless `given` equals one of `secrets` (constant time); `where` says where to put it."""
    if not given:
        raise HookError(401, "bad_signature", f"missing token: put the connector's secret in {where}")
    if not matches_any(given, lambda secret: secret, secrets):
        raise HookError(401, "bad_signature", f"wrong token in {where}")


def hmac_hex(secret: bytes, message: bytes, digest: str = "sha256") -> str:
    return hmac.new(secret, message, getattr(hashlib, digest)).hexdigest()


def check_replay(sent_at: datetime | float | None, window: timedelta | None, clock: Clock = time.time) -> None:
    """401 `stale` when a signed timestamp is further than `window` from now (either way); None skips the check."""
    if sent_at is None or window is None:
        return
    seconds = sent_at.timestamp() if isinstance(sent_at, datetime) else _float(sent_at)
    if not math.isfinite(seconds):  # 1e999 in JSON is infinity: round() of it below would raise
        raise HookError(400, "malformed", "the signed timestamp is not a finite number")
    skew = abs(clock() - seconds)
    if skew > window.total_seconds():
        raise HookError(
            401,
            "stale",
            f"the signed timestamp is {round(skew)}s away from now, outside the replay window of "
            f"{round(window.total_seconds())}s; a replayed or badly delayed delivery",
        )


def _float(value: float) -> float:
    """`value` as a float; a whole number too large for one (JSON's 1 and 400 zeros) is infinite, as 1e999 is."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def form_pairs(body: bytes, what: str, content_type: str) -> list[tuple[str, str]]:
    """A urlencoded body's (name, value) pairs, in the charset its Content-Type declares (else UTF-8, strictly);
    400 naming the problem (formdata.urlencoded_pairs, the pipeline's reading too)."""
    try:
        return urlencoded_pairs(content_type, body, what)
    except FormDecodeError as exc:
        raise HookError(400, "malformed", str(exc)) from None


def form_fields(body: bytes, what: str, content_type: str) -> dict[str, str]:
    """A urlencoded body as a dict (the last value of a repeated name wins); 400 naming the problem."""
    return dict(form_pairs(body, what, content_type))


def query_fields(request: web.Request, what: str) -> dict[str, str]:
    """The URL's query parameters but `token`, read as strictly as a form body (UTF-8: a query declares no
    charset). aiohttp's `request.query` puts U+FFFD where the bytes are not UTF-8: `number=%FF...` was answered
    202 with the caller's number lost."""
    pairs = form_pairs(request.rel_url.raw_query_string.encode("utf-8"), what, "")
    return {name: value for name, value in pairs if name != "token"}


def json_object(body: bytes, what: str) -> dict[str, Any]:
    """The body as a JSON object, or a 400 naming the problem (`what` is e.g. "a Telegram update"); JSON nested
    deeper than json_errors.MAX_JSON_DEPTH included, which the pipeline could not store."""
    try:
        data = loads(body)
    except UnicodeDecodeError as exc:
        problem = f"body is not {read_in(body)} JSON: invalid byte at {exc.start}{encoding_note(body)}"
        raise HookError(400, "malformed", problem) from None
    except json.JSONDecodeError as exc:
        where = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        raise HookError(400, "malformed", f"malformed JSON{encoding_note(body)}: {where}") from None
    except ValueError as exc:
        raise HookError(400, "malformed", f"malformed JSON: {json_error_text(exc)}") from None
    if not isinstance(data, dict):
        raise HookError(400, "malformed", f"{what} is a JSON object, not {type(data).__name__}")
    return data


METHOD_NOT_ALLOWED = "method_not_allowed"  # the router's code for a 405 elsewhere (hub/http/guard.py): one code


def require_method(request: web.Request, *methods: str) -> None:
    """405 naming the methods this connector takes, in the Allow header too, unless the request uses one of them."""
    if request.method not in methods:
        allowed = ", ".join(methods)
        raise HookError(405, METHOD_NOT_ALLOWED, f"this webhook takes {allowed}", headers={"Allow": allowed})


def body_digest(*parts: bytes | str) -> str:
    """A short stable hash of a delivery, for keys when the provider sends no delivery id."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\n")
    return digest.hexdigest()[:40]


def key_part(value: Any, limit: int = 120) -> str:
    """A provider id made safe for a key: text, no whitespace or colons that would blur the key's parts.

    Any whitespace or control character, not only a space: the queue turns a line break into a space and trims a
    key's ends, so the key stored, and the id derived from it, would not be the one answered.
    """
    return _NOT_IN_KEY_PART.sub("_", str(value).strip())[:limit]


async def no_background_work() -> Stop:
    async def stop() -> None:
        return None

    return stop


class ProviderWebhook:
    """Plumbing a provider connector shares: its secrets, an injectable clock, and publishing an envelope."""

    type: ClassVar[str]
    channel: ClassVar[str]

    def __init__(self, config: WebhookConfig, context: ConnectorContext) -> None:
        self.config = config
        self.context = context
        self.secrets = config.secret_values()
        self.clock: Clock = time.time  # tests set it to check the replay window without waiting

    async def start(self) -> Stop:
        return await no_background_work()

    def check_replay(self, sent_at: datetime | float | None) -> None:
        check_replay(sent_at, self.config.replay_window, self.clock)

    async def publish(
        self,
        key: str,
        body: bytes,
        content_type: str,
        meta: dict[str, str] | None = None,
        channel: str | None = None,
    ) -> PublishResult:
        """Publish the raw body under `<type>:<connector>:<key>`; returns once the queue has it durably.

        A key or content type the pipeline would refuse is a 400 (`queueable`); the content type is never cut,
        as a parser reads a multipart boundary from it.
        """
        # Keys, content types and meta come from headers and bodies: header_text keeps them encodable.
        envelope = Envelope(
            key=header_text(f"{self.type}:{self.config.name}:{key}"),
            channel=channel or self.channel,
            connector=self.config.name,
            payload=body,
            content_type=header_text(content_type).strip() or "application/octet-stream",
            meta={k: header_text(v[:500]) for k, v in (meta or {}).items() if v},
        )
        return await self.context.publish(queueable(envelope))
