"""CLI arguments no store can take are usage errors (exit 2, naming the argument), not a traceback nor a claim
that the database cannot be used."""

from __future__ import annotations

from pathlib import Path

import pytest

from leadhub.store.db import create_engine, upgrade
from tests.helpers import run_leadhub


async def _migrated(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


def _usage_error(run, *words: str) -> None:  # type: ignore[no-untyped-def]
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr and "cannot use the database" not in run.stderr, run.stderr
    for word in words:
        assert word in run.stderr, run.stderr


@pytest.mark.parametrize("command", [["dead", "list"], ["rules", "trace", "r"]])
@pytest.mark.parametrize("limit", ["0", "-1", "100000000000000000000"])
async def test_a_limit_out_of_range_is_a_usage_error(
    tmp_path: Path, database_url: str, command: list[str], limit: str
) -> None:
    """`rules trace r --limit -1` raised IndexError on SQLite; PostgreSQL's "LIMIT must not be negative" was said
    as "cannot use the database"; a limit past 64 bits was an OverflowError traceback on SQLite; `dead list
    --limit 0` said "no dead letters" whatever there was, and `--limit -1` listed all on SQLite only."""
    await _migrated(database_url)
    run = run_leadhub(*command, "--limit", limit, cwd=tmp_path, env={"LEADHUB_DATABASE_URL": database_url})
    _usage_error(run, "--limit")


@pytest.mark.parametrize(
    "command",
    [
        ["dead", "show", "\udcff"],
        ["dead", "replay", "\udcff"],
        ["actions", "retry", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "\udcff"],
        ["actions", "retry", "--all", "--rule", "r\udcff"],
        ["contacts", "unmerge", "\udcff"],
        ["contacts", "merge", "\udcff", "--into", "b"],
        ["contacts", "merge", "a", "--into", "\udcff"],
        ["contacts", "keep-apart", "\udcff"],
        ["rules", "trace", "\udcff"],
    ],
)
async def test_an_id_that_is_not_utf8_is_a_usage_error(tmp_path: Path, database_url: str, command: list[str]) -> None:
    """An id pasted with a byte that is not UTF-8 (a terminal in another encoding) reached the driver: a
    UnicodeEncodeError traceback on SQLite, "cannot use the database" on PostgreSQL."""
    await _migrated(database_url)
    (tmp_path / "rules").mkdir()
    env = {"LEADHUB_DATABASE_URL": database_url, "LEADHUB_RULES_DIR": str(tmp_path / "rules"), "COLUMNS": "200"}
    run = run_leadhub(*command, cwd=tmp_path, env=env)
    _usage_error(run, "is not UTF-8 text: ids and rule names must be UTF-8")
