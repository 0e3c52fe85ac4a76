"""Logging with structlog: key=value or JSON lines, with e-mail addresses and phone numbers redacted."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

from leadhub.url_redaction import redact_urls

# Tried only where a run of local-part characters begins (the look-behind): tried at every character, it scanned the
# rest of the run for an '@' from each, and a 40 kB token without one took 2 s, a 1 MiB line about 20 minutes.
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_PHONE = re.compile(r"(?<![\w.:/])\+?\d[\d\s()-]{8,}\d(?![\w.:])")
SECRET_KEYS = {"password", "token", "secret", "secrets", "api_token", "authorization", "smtp_url"}


def redact_text(text: str) -> str:
    """`ivan.petrov@mail.ru` -> `i***@mail.ru`; long digit runs that look like phones -> `+***1234`; credentials
    in URLs (a password, a lone user such as a NATS token, a secret query value, a Telegram bot's token)."""
    text = redact_urls(text)
    text = _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    return _PHONE.sub(_mask_phone, text)


def _mask_phone(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return "***" + digits[-2:] if len(digits) >= 10 else match.group(0)


def _redact(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in list(event.items()):
        if key != "timestamp":
            event[key] = _redacted(key, value, 0)
    return event


NESTING_SHOWN = 6  # levels of lists and mappings redacted item by item; deeper ones are logged as redacted text


def _redacted(key: object, value: Any, depth: int) -> Any:
    """A field's value redacted whatever it is. Only strings were: a list of rule problems, a dict of headers, an
    exception or a path passed as a field reached the log as the renderer wrote them, addresses and URLs' passwords
    included."""
    if isinstance(key, str) and key.lower() in SECRET_KEYS:
        return "***"
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth < NESTING_SHOWN and isinstance(value, dict):
        return {k: _redacted(k, v, depth + 1) for k, v in value.items()}
    if depth < NESTING_SHOWN and isinstance(value, list | tuple | set | frozenset):
        return [_redacted(None, item, depth + 1) for item in value]
    return redact_text(str(value))


class _ClientProtocolErrors(logging.Filter):
    """aiohttp logs a request it cannot parse (a line over 8190 bytes, a bad header byte, a body that is not the
    gzip it claims) at ERROR, with a traceback whose message quotes the raw line: a URL's `?token=`, an
    Authorization header. Such a request is the client's mistake and aiohttp has answered it 400, so the record
    becomes one INFO line naming the error's type, without the quoted bytes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        # Imported here: only aiohttp's server logs through this filter, and CLI commands that configure logging
        # (`dead list`, `db upgrade`) would otherwise import aiohttp for nothing (~110 ms).
        from aiohttp.http_exceptions import HttpProcessingError
        from aiohttp.web_protocol import RequestPayloadError

        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError | RequestPayloadError):
            return True
        record.msg, record.args = "bad HTTP request refused: %s", (type(exc).__name__,)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return logging.getLogger().isEnabledFor(logging.INFO)


_CLIENT_PROTOCOL_ERRORS = _ClientProtocolErrors()


def configure(level: str = "info", fmt: str = "console") -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    # Tracebacks become text first, so the redaction sees them: exceptions quote URLs and addresses.
    rendering = [structlog.processors.format_exc_info, _redact, renderer]
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    logging.basicConfig(stream=sys.stderr, level=level.upper(), force=True)
    # Other libraries' records (asyncio, aiohttp's server, NATS, SQLAlchemy) go through the same redaction and
    # renderer: one JSON line each in a JSON log, not bare text with a traceback over many lines.
    foreign = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, structlog.stdlib.add_log_level, stamp],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
    )
    for handler in logging.getLogger().handlers:
        handler.setFormatter(foreign)
    # At debug, aiosqlite and SQLAlchemy's engine log every statement with its parameters (addresses, payloads,
    # the link signing key, which no redaction recognises), so they never go below WARNING.
    for noisy in ("aiohttp.access", "nats", "faststream", "alembic", "aiosqlite", "sqlalchemy", "asyncpg"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    server = logging.getLogger("aiohttp.server")
    if _CLIENT_PROTOCOL_ERRORS not in server.filters:
        server.addFilter(_CLIENT_PROTOCOL_ERRORS)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            *rendering,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
