"""Logging: what third-party libraries log never carries the store's values (addresses, payloads, secrets)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from sqlalchemy import text

from leadhub.hub.logging import configure, redact_text
from leadhub.store.db import create_engine


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """configure() replaces the root handlers and structlog's setup; give the other tests theirs back."""
    root = logging.getLogger()
    handlers, level, config = root.handlers[:], root.level, structlog.get_config()
    levels = {name: logging.getLogger(name).level for name in ("aiosqlite", "sqlalchemy", "asyncpg")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)
    structlog.configure(**config)


async def test_debug_level_does_not_log_sql_parameters(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], restored_logging: None
) -> None:
    """At LEADHUB_LOG_LEVEL=debug aiosqlite logged every statement with its parameters, unredacted and outside
    the JSON format: the survey link signing key, customers' addresses, raw payloads."""
    configure("debug", "json")
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'log.db'}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (v TEXT)"))
            await conn.execute(text("INSERT INTO t VALUES (:v)"), {"v": "signing-key-0123456789abcdef"})
    finally:
        await engine.dispose()
    captured = capfd.readouterr()
    assert "signing-key-0123456789abcdef" not in captured.err + captured.out


def test_a_logged_traceback_is_redacted_like_the_fields(
    capfd: pytest.CaptureFixture[str], restored_logging: None
) -> None:
    """The traceback was rendered after redaction: an exception quoting a URL's password or a customer's address
    ("action raised unexpectedly", "unhandled error") reached the log as it was."""
    configure("info", "json")
    log = structlog.get_logger("test")
    try:
        raise ConnectionError("smtp://shop:hunter2-pass@mail.example.com failed for ivan.petrov@mail.ru")
    except ConnectionError:
        log.exception("action raised unexpectedly", rule="r")
    err = capfd.readouterr().err
    assert "ConnectionError" in err and "Traceback" in err
    assert "hunter2-pass" not in err and "ivan.petrov" not in err, err


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        # NATS takes a token as the URL's user: nats://TOKEN@host (no colon, no password)
        ("queue connected url=nats://s3cr3t-nats-token@n1:4222,nats://s3cr3t-nats-token@n2:4222", "s3cr3t-nats-token"),
        # the Bot API's URL holds the bot's token in its path
        ("POST https://api.telegram.org/bot123456:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/sendMessage", "AAHdqTcv"),
    ],
)
def test_credentials_in_urls_are_redacted(text: str, secret: str) -> None:
    assert secret not in redact_text(text), redact_text(text)


@pytest.mark.timeout(60)  # a hang guard: it took about 20 minutes
def test_a_megabyte_without_an_address_is_redacted_in_one_pass() -> None:
    """The e-mail pattern was tried from every character of a run of letters, each try scanning the rest of it for an
    '@': a 1 MiB line (the migration child's longest, copied to the daemon's log) held the start for ~20 minutes."""
    assert redact_text("x" * (1 << 20) + " ivan.petrov@mail.ru") == "x" * (1 << 20) + " i***@mail.ru"


def test_other_libraries_log_one_redacted_json_line_per_event(
    capfd: pytest.CaptureFixture[str], restored_logging: None
) -> None:
    """Records of the standard library's loggers (asyncio's "Task exception was never retrieved", aiohttp's server,
    NATS, SQLAlchemy warnings) were printed as bare text: not JSON in a JSON log, a traceback over many lines, and
    nothing redacted."""
    configure("info", "json")
    try:
        raise ValueError("cannot send via smtp://shop:hunter2-pass@mail.example.com to ivan.petrov@mail.ru")
    except ValueError:
        logging.getLogger("asyncio").error("Task exception was never retrieved", exc_info=True)
    logging.getLogger("aiohttp.server").warning("peer %s", "+7 912 345-67-89")
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON event
    assert [(r["logger"], r["level"], r["event"]) for r in records] == [
        ("asyncio", "error", "Task exception was never retrieved"),
        ("aiohttp.server", "warning", "peer ***89"),
    ]
    assert "ValueError" in records[0]["exception"] and "timestamp" in records[0]
    assert "hunter2-pass" not in lines[0] and "ivan.petrov" not in lines[0], lines[0]


def test_fields_that_are_not_text_are_redacted_too(capfd: pytest.CaptureFixture[str], restored_logging: None) -> None:
    """Only string fields were redacted: a list, a mapping or an exception as a field was written as it was."""
    configure("info", "json")
    structlog.get_logger("test").warning(
        "several things",
        problems=["rule r: to ivan.petrov@mail.ru", ("+7 912 345-67-89",)],
        headers={"From": "anna.smirnova@mail.ru", "Authorization": "Bearer abc-secret-token", "n": 3},
        error=ConnectionError("smtp://shop:hunter2-pass@mail.example.com refused"),
        deep=[[[[[[[["olga.k@mail.ru"]]]]]]]],
        count=2,
    )
    line = capfd.readouterr().err.strip()
    record = json.loads(line)
    for secret in ("ivan.petrov", "345-67", "anna.smirnova", "abc-secret-token", "hunter2-pass", "olga.k"):
        assert secret not in line, secret
    assert record["problems"] == ["rule r: to i***@mail.ru", ["***89"]] and record["count"] == 2
    assert record["headers"] == {"From": "a***@mail.ru", "Authorization": "***", "n": 3}
    assert "smtp://" in record["error"] and "refused" in record["error"]
