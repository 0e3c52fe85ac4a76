"""Logging with structlog: key=value or JSON lines, with e-mail addresses and phone numbers redacted."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_PHONE = re.compile(r"(?<![\w.:/])\+?\d[\d\s()-]{8,}\d(?![\w.:])")
# The password in a URL's user info: `nats://user:pass@host` -> `nats://user:***@host`.
_URL_PASSWORD = re.compile(r"\b([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@", re.IGNORECASE)
SECRET_KEYS = {"password", "token", "secret", "secrets", "api_token", "authorization", "smtp_url"}


def redact_text(text: str) -> str:
    """`ivan.petrov@mail.ru` -> `i***@mail.ru`; long digit runs that look like phones -> `+***1234`; URL passwords."""
    text = _URL_PASSWORD.sub(r"\1***@", text)
    text = _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    return _PHONE.sub(_mask_phone, text)


def _mask_phone(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return "***" + digits[-2:] if len(digits) >= 10 else match.group(0)


def _redact(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in list(event.items()):
        if key.lower() in SECRET_KEYS:
            event[key] = "***"
        elif isinstance(value, str) and key != "timestamp":
            event[key] = redact_text(value)
    return event


def configure(level: str = "info", fmt: str = "console") -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format="%(message)s", force=True)
    for noisy in ("aiohttp.access", "nats", "faststream", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
