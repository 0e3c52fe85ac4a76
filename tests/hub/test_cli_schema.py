"""CLI commands on a database whose schema is not this release's: one line saying what to do, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from leadhub.store.db import MIGRATION_HEADS, create_engine, redacted_url, upgrade
from tests.fresh_interpreter import applied_revisions
from tests.helpers import run_leadhub


async def _migrated_by_a_newer_release(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '0099' WHERE version_num = '0005'"))
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
    env = {"LEADHUB_DATABASE_URL": database_url, "LEADHUB_RULES_DIR": str(tmp_path / "rules")}
    run = run_leadhub(*command, cwd=tmp_path, env=env)
    assert _last_line(run) == (
        f"leadhub: cannot use the database {redacted_url(database_url)}: "
        "the database has no leadhub tables yet: run `leadhub db upgrade`"
    )
    assert await applied_revisions(database_url) == frozenset()
