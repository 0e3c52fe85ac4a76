"""`leadhub run` migrates in a child process: the database reaches the heads, the daemon never imports alembic."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from leadhub.hub.migrate_child import LINE_LIMIT, MigrationFailed, upgrade_in_child
from leadhub.store.db import MIGRATION_HEADS, SchemaNewerThanCode, create_engine, upgrade
from tests.conftest import PG_ADMIN_URL
from tests.fresh_interpreter import applied_revisions, migrate_and_report
from tests.helpers import wait_for
from tests.store.orphans import OLD_REVISION, old_database_with_an_orphan


async def test_an_empty_database_is_migrated_by_a_child_and_alembic_stays_out(database_url: str) -> None:
    assert (
        await migrate_and_report(database_url, "leadhub.hub.migrate_child:upgrade_in_child") == "alembic not imported"
    )
    assert await applied_revisions(database_url) == MIGRATION_HEADS


async def test_a_database_at_the_heads_starts_no_child(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        monkeypatch.setattr(sys, "executable", "/nonexistent/python")  # a child would fail to start
        await upgrade_in_child(engine)
    finally:
        await engine.dispose()


async def test_a_database_from_a_newer_release_is_refused_without_a_child(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A revision this release lacks is no reason to retry: the daemon stops with exit status 3 (hub/cli.py)."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
            await conn.execute(text("INSERT INTO alembic_version VALUES ('9999')"))
        monkeypatch.setattr(sys, "executable", "/nonexistent/python")  # a child would fail to start
        with pytest.raises(SchemaNewerThanCode, match="9999") as raised:
            await upgrade_in_child(engine)
    finally:
        await engine.dispose()
    assert raised.value.revisions == {"9999"}


async def test_a_stop_during_the_migration_kills_the_child(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon cancels the migration when it is told to stop: the child must not outlive it."""
    pid_file = tmp_path / "child.pid"
    slow_python = tmp_path / "slow-python"
    slow_python.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 60\n")  # stands in for a long migration
    slow_python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(slow_python))
    engine = create_engine(database_url)
    try:
        migrating = asyncio.create_task(upgrade_in_child(engine))

        async def child_started() -> bool:
            return pid_file.exists() and pid_file.read_text().strip().isdigit()

        await wait_for(child_started, timeout=10, what="the migration child to start")
        pid = int(pid_file.read_text())
        migrating.cancel()
        with pytest.raises(asyncio.CancelledError):
            await migrating
        with pytest.raises(ProcessLookupError):  # killed and reaped: no such process any more
            os.kill(pid, 0)
    finally:
        await engine.dispose()


@pytest.mark.skipif(PG_ADMIN_URL is not None, reason="SQLite's foreign keys can be off; PostgreSQL's cannot")
async def test_the_childs_warning_about_an_orphan_row_reaches_the_daemons_stderr(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`leadhub run` migrates as `db upgrade` does: a row broken before no longer fails every start, and the
    child's log line is not lost with its stdout."""
    await old_database_with_an_orphan(database_url)
    engine = create_engine(database_url)
    try:
        await upgrade_in_child(engine, log_format="json")
    finally:
        await engine.dispose()
    assert await applied_revisions(database_url) == MIGRATION_HEADS
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    (warning,) = [entry for entry in logged if "foreign key points nowhere" in entry["event"]]
    assert (warning["table"], warning["rows"]) == ("contact_identifier", 1)


@pytest.mark.skipif(PG_ADMIN_URL is not None, reason="SQLite's foreign keys can be off; PostgreSQL's cannot")
async def test_a_child_refusing_to_make_an_orphan_row_says_why_in_one_line(database_url: str) -> None:
    await old_database_with_an_orphan(database_url, upgrade_adds_an_orphan=True)
    engine = create_engine(database_url)
    try:
        with pytest.raises(MigrationFailed) as failed:
            await upgrade_in_child(engine)
    finally:
        await engine.dispose()
    assert str(failed.value) == (
        "the migration process exited with 1: MigrationError: upgrade to heads would leave rows whose foreign key "
        "points nowhere: 1 in contact_identifier (to contact); nothing changed"
    )


async def test_a_line_over_the_limit_is_cut_and_the_migration_goes_on(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A child printing more than LINE_LIMIT bytes in one line made asyncio's line reader raise ValueError
    ("Separator is found, but chunk is longer than limit"): the migration was taken for failed and tried again,
    the child that printed it neither killed nor waited for, migrating beside the next."""
    chatty_python = tmp_path / "chatty-python"  # one long line, then the real child
    chatty_python.write_text(
        f'#!/bin/sh\n{sys.executable} -c \'import sys; sys.stderr.write("x" * {LINE_LIMIT + 5000} + " end\\n")\'\n'
        f'exec {sys.executable} "$@"\n'
    )
    chatty_python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(chatty_python))
    engine = create_engine(database_url)
    try:
        await upgrade_in_child(engine)
    finally:
        await engine.dispose()
    assert await applied_revisions(database_url) == MIGRATION_HEADS
    lines = capsys.readouterr().err.splitlines()
    assert "x" * LINE_LIMIT + " [5004 more bytes of this line left out]" in lines


@pytest.mark.skipif(PG_ADMIN_URL is not None, reason="a SQLite trigger makes the migration fail")
async def test_what_the_child_prints_reaches_the_daemons_log_redacted(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reason the child exits with quotes the driver's error, which quotes what the failing statement met: it
    was copied as it was, a URL's password and a customer's address into the daemon's log and its error."""
    engine = create_engine(database_url)
    try:
        await upgrade(engine, OLD_REVISION)
    finally:
        await engine.dispose()
    with sqlite3.connect(make_url(database_url).database) as conn:
        conn.execute(
            "CREATE TRIGGER leaky AFTER UPDATE ON alembic_version BEGIN SELECT RAISE(ABORT, "
            "'cannot reach postgresql://leadhub:s3cret-pw@db.internal/crm for ivan.petrov@mail.ru'); END"
        )
    conn.close()
    engine = create_engine(database_url)
    try:
        with pytest.raises(MigrationFailed) as failed:
            await upgrade_in_child(engine)
    finally:
        await engine.dispose()
    err = capsys.readouterr().err
    assert "postgresql://leadhub:***@db.internal/crm for i***@mail.ru" in err, err
    for said in (err, str(failed.value)):
        assert "s3cret-pw" not in said and "ivan.petrov" not in said, said
