"""CLI commands on a database whose schema is not this release's: one line saying what to do, no traceback."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from leadhub.store.db import MIGRATION_HEADS, create_engine, redacted_url, upgrade
from tests.conftest import PG_ADMIN_URL
from tests.fresh_interpreter import applied_revisions
from tests.helpers import directory_of_another_user, run_leadhub
from tests.store.orphans import OLD_REVISION, old_database_with_an_orphan


async def _migrated_by_a_newer_release(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '0099' WHERE version_num = '0006'"))
    finally:
        await engine.dispose()


async def _touch(url: str) -> None:
    """Connect once: an empty SQLite file exists afterwards (a PostgreSQL database exists already)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


def _last_line(run) -> str:  # type: ignore[no-untyped-def]
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    return run.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("command", [["db", "upgrade"], ["dead", "list"], ["rules", "trace", "r"]])
async def test_a_database_from_a_newer_release_is_named_as_such(
    tmp_path: Path, database_url: str, command: list[str]
) -> None:
    await _migrated_by_a_newer_release(database_url)
    run = run_leadhub(*command, cwd=tmp_path, env={"LEADHUB_DATABASE_URL": database_url})
    assert _last_line(run) == (
        f"leadhub: cannot use the database {redacted_url(database_url)}: database schema 0099 is newer than this "
        f"release ({', '.join(sorted(MIGRATION_HEADS))}): a newer leadhub migrated it; run that release, or restore "
        "a backup taken before it migrated the database"
    )


@pytest.mark.parametrize("command", [["rules", "trace", "r"], ["rules", "backtest"], ["dead", "list"]])
async def test_read_only_commands_on_an_empty_database_say_to_migrate(
    tmp_path: Path, database_url: str, command: list[str]
) -> None:
    """They only read, so they do not migrate: `rules` said `no such table: rule_trace` (or `outbox_event`),
    `dead list` created every table in whatever database it was pointed at."""
    (tmp_path / "rules").mkdir()
    await _touch(database_url)
    env = {"LEADHUB_DATABASE_URL": database_url, "LEADHUB_RULES_DIR": str(tmp_path / "rules")}
    run = run_leadhub(*command, cwd=tmp_path, env=env)
    assert _last_line(run) == (
        f"leadhub: cannot use the database {redacted_url(database_url)}: "
        "the database has no leadhub tables yet: run `leadhub db upgrade`"
    )
    assert await applied_revisions(database_url) == frozenset()


@pytest.mark.skipif(bool(PG_ADMIN_URL), reason="a SQLite file; a PostgreSQL database is never created by a command")
@pytest.mark.parametrize(
    "command",
    [
        ["rules", "trace", "r"],
        ["rules", "backtest"],
        ["dead", "list"],
        ["dead", "show", "x"],
        ["actions", "retry", "--all"],
        ["db", "status"],
    ],
)
async def test_read_only_commands_leave_no_sqlite_file_where_none_was(tmp_path: Path, command: list[str]) -> None:
    """Run from the wrong directory, they left an empty `data/leadhub.db` (and its directory) behind."""
    (tmp_path / "rules").mkdir()
    missing = tmp_path / "elsewhere" / "leadhub.db"
    env = {"LEADHUB_DATABASE_URL": f"sqlite+aiosqlite:///{missing}", "LEADHUB_RULES_DIR": str(tmp_path / "rules")}
    run = run_leadhub(*command, cwd=tmp_path, env=env)
    assert run.returncode == (4 if command == ["db", "status"] else 1), run.stdout + run.stderr
    assert "no such file yet: `leadhub run` or `leadhub db upgrade` creates it" in run.stderr
    if command == ["db", "status"]:  # the revisions it would create are named, as when tables are missing
        assert run.stderr.strip().endswith(f"creates it at revisions {', '.join(sorted(MIGRATION_HEADS))}")
    assert not missing.parent.exists()


@pytest.mark.parametrize(
    "command",
    [
        ["dead", "replay", "--all"],
        ["dead", "replay", "x"],
        ["contacts", "unmerge", "x"],
        ["contacts", "merge", "a", "--into", "b"],
    ],
)
def test_commands_that_write_but_do_not_migrate_create_no_database_in_an_empty_directory(
    tmp_path: Path, command: list[str]
) -> None:
    """`dead replay` and `contacts unmerge`, run from the wrong directory, created and migrated `data/leadhub.db`
    there (and replayed nothing into it, or found no merge in it)."""
    run = run_leadhub(*command, cwd=tmp_path)
    database = tmp_path / "data" / "leadhub.db"
    assert _last_line(run) == (
        f"leadhub: cannot use the database sqlite+aiosqlite:///{database}: "
        "no such file yet: `leadhub run` or `leadhub db upgrade` creates it"
    )
    assert run.stderr.count("\n") == 1 and not run.stdout
    assert list(tmp_path.iterdir()) == []


async def test_db_status_says_whether_an_upgrade_is_due_without_changing_anything(
    tmp_path: Path, database_url: str
) -> None:
    env = {"LEADHUB_DATABASE_URL": database_url}
    shown = redacted_url(database_url)
    release = ", ".join(sorted(MIGRATION_HEADS))
    await _touch(database_url)
    empty = run_leadhub("db", "status", cwd=tmp_path, env=env)
    assert empty.returncode == 4 and empty.stderr.strip() == (
        f"{shown}: no leadhub tables yet; `leadhub db upgrade` (or `leadhub run`) creates them at revisions {release}"
    )
    assert await applied_revisions(database_url) == frozenset()

    engine = create_engine(database_url)
    try:
        await upgrade(engine, "0004")  # an older release's database: the other branches are due
        behind = run_leadhub("db", "status", cwd=tmp_path, env=env)
        assert behind.returncode == 4, behind.stdout + behind.stderr
        assert behind.stderr.strip() == (
            f"{shown}: at revisions 0004, this release is at {release}; "
            "`leadhub db upgrade` (or `leadhub run`) applies 0002, 0003, 0006, 0007, 0009, 0010"
        )
        assert await applied_revisions(database_url) == frozenset({"0004"})
        await upgrade(engine)
        current = run_leadhub("db", "status", cwd=tmp_path, env=env)
        assert current.returncode == 0 and current.stdout.strip() == f"{shown}: up to date (revisions {release})"
    finally:
        await engine.dispose()

    await _migrated_by_a_newer_release(database_url)
    newer = run_leadhub("db", "status", cwd=tmp_path, env=env)
    assert newer.returncode == 3 and "database schema 0099 is newer than this release" in newer.stderr


@pytest.mark.skipif(PG_ADMIN_URL is not None, reason="SQLite's foreign keys can be off; PostgreSQL's cannot")
async def test_db_upgrade_warns_about_an_orphan_row_it_found_and_refuses_one_it_would_make(
    tmp_path: Path, database_url: str
) -> None:
    """A row broken before the upgrade failed every upgrade (with a traceback); now only one the upgrade would
    break does, in one line, and the warning about the other goes to stderr."""
    env = {"LEADHUB_DATABASE_URL": database_url}
    await old_database_with_an_orphan(database_url, upgrade_adds_an_orphan=True)
    refused = run_leadhub("db", "upgrade", cwd=tmp_path, env=env)
    assert _last_line(refused) == (
        f"leadhub: cannot upgrade the database {redacted_url(database_url)}: upgrade to heads would leave rows whose "
        "foreign key points nowhere: 1 in contact_identifier (to contact); nothing changed"
    )
    assert await applied_revisions(database_url) == {OLD_REVISION}

    with sqlite3.connect(make_url(database_url).database) as conn:
        conn.execute("DROP TRIGGER orphan_maker")
    conn.close()
    upgraded = run_leadhub("db", "upgrade", cwd=tmp_path, env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    shown, release = redacted_url(database_url), ", ".join(sorted(MIGRATION_HEADS))
    assert upgraded.stdout.strip() == f"{shown}: migrated from revisions {OLD_REVISION} to {release}"
    (warning,) = [line for line in upgraded.stderr.splitlines() if "foreign key points nowhere" in line]
    assert "table=contact_identifier" in warning and "rows=1" in warning, warning
    assert await applied_revisions(database_url) == MIGRATION_HEADS


@pytest.mark.skipif(PG_ADMIN_URL is not None, reason="a SQLite file's bytes")
def test_db_status_on_a_backup_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    """README: `db status` tells beforehand whether a backup needs a migration. It opened the file as the daemon
    does, turning the backup into a WAL database (its header rewritten) and failing on a read-only disk with
    `attempt to write a readonly database`."""
    env = {"LEADHUB_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'leadhub.db'}"}
    assert run_leadhub("db", "upgrade", cwd=tmp_path, env=env).returncode == 0
    backups = tmp_path / "backups"
    backups.mkdir()
    backup = backups / "leadhub-2026-12-01.db"
    made = run_leadhub("db", "backup", str(backup), cwd=tmp_path, env=env)
    assert made.returncode == 0, made.stderr
    before = backup.read_bytes()
    assert before[18:20] == b"\x01\x01"  # a rollback-journal database

    run = run_leadhub("db", "status", cwd=tmp_path, env={"LEADHUB_DATABASE_URL": f"sqlite+aiosqlite:///{backup}"})
    assert run.returncode == 0 and "up to date" in run.stdout, run.stdout + run.stderr
    assert backup.read_bytes() == before
    assert [p.name for p in backups.iterdir()] == [backup.name]


async def test_db_upgrade_says_from_which_revisions_to_which_it_migrated(tmp_path: Path, database_url: str) -> None:
    """It said "database is up to date" whatever it did: after creating every table, after a migration, and when
    there was nothing to do."""
    release = ", ".join(sorted(MIGRATION_HEADS))
    new_file = f"sqlite+aiosqlite:///{tmp_path / 'new' / 'leadhub.db'}"
    created = run_leadhub("db", "upgrade", cwd=tmp_path, env={"LEADHUB_DATABASE_URL": new_file})
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == f"{redacted_url(new_file)}: created the leadhub tables at revisions {release}"

    env, shown = {"LEADHUB_DATABASE_URL": database_url}, redacted_url(database_url)
    engine = create_engine(database_url)
    try:
        await upgrade(engine, "0004")  # an older release's schema
    finally:
        await engine.dispose()
    migrated = run_leadhub("db", "upgrade", cwd=tmp_path, env=env)
    assert migrated.stdout.strip() == f"{shown}: migrated from revisions 0004 to {release}"
    assert await applied_revisions(database_url) == MIGRATION_HEADS
    again = run_leadhub("db", "upgrade", cwd=tmp_path, env=env)
    assert again.stdout.strip() == f"{shown}: up to date (revisions {release}); nothing to do"


@pytest.mark.skipif(PG_ADMIN_URL is not None, reason="a SQLite file and its directory")
@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_db_upgrade_run_as_root_on_a_new_machine_leaves_the_database_to_the_owner_of_its_directory(
    tmp_path: Path,
) -> None:
    """`sudo leadhub db upgrade` with no database yet made `data/` and `leadhub.db` root's (0700, 0600): the daemon's
    user, who owns the directory leadhub runs in, could not open its database."""
    home, uid, gid = directory_of_another_user(tmp_path)
    database = home / "data" / "leadhub.db"
    run = run_leadhub("db", "upgrade", cwd=tmp_path, env={"LEADHUB_DATABASE_URL": f"sqlite+aiosqlite:///{database}"})
    assert run.returncode == 0, run.stderr
    left = sorted(path.name for path in database.parent.iterdir())
    for made in (database.parent, *database.parent.iterdir()):
        assert (made.stat().st_uid, made.stat().st_gid) == (uid, gid), (made, left)
    assert database.parent.stat().st_mode & 0o777 == 0o700 and database.stat().st_mode & 0o777 == 0o600
