"""`leadhub db upgrade` stopped part-way by Ctrl-C, SIGTERM (`timeout`, a service manager) or SIGHUP (a closed
terminal): its transaction rolled back, its files handed over, one line saying so, exit 130 for all three."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from leadhub.store.db import MIGRATION_LOCK_ID, create_engine, redacted_url
from tests.conftest import PG_ADMIN_URL
from tests.fresh_interpreter import applied_revisions
from tests.helpers import directory_of_another_user, wait_for

STOPS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
INTERRUPTED = 130  # what typer makes of Ctrl-C

# `leadhub db upgrade` whose migration, once alembic has made every table in its transaction, waits (in the event
# loop, as for a slow statement) until it is stopped: a point mid-migration a signal can be sure to reach.
PAUSED_BEFORE_COMMIT = """
import asyncio, sys
from pathlib import Path
from sqlalchemy.util import await_only
from leadhub.store import db

marker = Path(sys.argv.pop())
migrate = db._run_alembic

def paused(connection, direction, revision):
    found = migrate(connection, direction, revision)
    marker.write_text("migrated, not committed")
    await_only(asyncio.sleep(3600))  # noqa: sleep-ok - paused here until the test signals the command
    return found

db._run_alembic = paused
sys.argv[1:] = ["db", "upgrade"]
from leadhub.hub.cli import main
main()
"""


def _leadhub(url: str, cwd: Path, *args: str) -> subprocess.Popen[str]:
    """A `leadhub` process as a user starts it, on the database `url`: `args` are what follows `python`.

    With Ctrl-C's SIGINT as a terminal gives it: a test run started in the background of a script (`.ci/run` runs
    the PostgreSQL suite so) has SIGINT ignored, and its children inherit that, so the SIGINT case waited forever."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("LEADHUB_")}
    return subprocess.Popen(
        [sys.executable, "-c", SIGINT_AS_IN_A_TERMINAL, *args],
        env={**env, "LEADHUB_DATABASE_URL": url},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# Python keeps an ignored SIGINT ignored; set to the default before exec, the command takes it as Ctrl-C.
SIGINT_AS_IN_A_TERMINAL = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


def _stopped_line(url: str) -> str:
    return (
        f"leadhub: db upgrade interrupted; its migration is one transaction, so {redacted_url(url)} is either as it "
        "was or fully migrated: `leadhub db status` says which"
    )


@pytest.mark.skipif(PG_ADMIN_URL is not None, reason="a SQLite file and its directory")
@pytest.mark.parametrize("number", STOPS, ids=lambda number: number.name)
async def test_a_db_upgrade_stopped_mid_migration_rolls_back_and_leaves_the_new_database_to_its_owner(
    tmp_path: Path, number: signal.Signals
) -> None:
    """SIGTERM ended Python at once: run as root on a new machine, `data/`, `leadhub.db`, `-wal` and `-shm` stayed
    root's and the daemon's user could not open its database; no word said, exit status -15. Ctrl-C said nothing."""
    home, uid, gid = directory_of_another_user(tmp_path) if os.geteuid() == 0 else (tmp_path, os.getuid(), os.getgid())
    database = home / "data" / "leadhub.db"
    url = f"sqlite+aiosqlite:///{database}"
    marker = tmp_path / "paused"
    upgrade = _leadhub(url, tmp_path, "-c", PAUSED_BEFORE_COMMIT, str(marker))

    async def paused() -> bool:
        assert upgrade.poll() is None, upgrade.communicate()
        return marker.exists()

    await wait_for(paused, timeout=60, what="the migration to have made its tables")
    upgrade.send_signal(number)
    stdout, stderr = upgrade.communicate(timeout=60)
    for made in (database.parent, database):
        assert (made.stat().st_uid, made.stat().st_gid) == (uid, gid), (made, upgrade.returncode, stderr)
    assert sorted(path.name for path in database.parent.iterdir()) == ["leadhub.db"]
    assert await applied_revisions(url) == frozenset()  # rolled back: no table made
    assert upgrade.returncode == INTERRUPTED, stderr
    assert stdout == "" and stderr == _stopped_line(url) + "\n"


@pytest.mark.skipif(PG_ADMIN_URL is None, reason="the migration lock a PostgreSQL session waits for")
@pytest.mark.parametrize("number", STOPS, ids=lambda number: number.name)
async def test_a_db_upgrade_stopped_while_it_waits_for_the_migration_lock_leaves_no_session_waiting(
    tmp_path: Path, database_url: str, number: signal.Signals
) -> None:
    """Another leadhub migrating holds the lock: SIGTERM ended the command, but its server session went on waiting
    for the lock (a dead client is not noticed in a lock wait), to take it and run into the next migration's way."""
    waiting_for_the_lock = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = :id "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).bindparams(id=MIGRATION_LOCK_ID)
    engine = create_engine(database_url)
    try:
        async with engine.connect() as holder:
            await holder.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            await holder.commit()
            upgrade = _leadhub(database_url, tmp_path, "-m", "leadhub.hub", "db", "upgrade")

            async def count_waiting() -> int:
                assert upgrade.poll() is None, upgrade.communicate()
                return int((await holder.execute(waiting_for_the_lock)).scalar_one())

            await wait_for(count_waiting, timeout=60, what="`db upgrade` to wait for the migration lock")
            upgrade.send_signal(number)
            stdout, stderr = upgrade.communicate(timeout=60)

            async def none_waiting() -> bool:
                return int((await holder.execute(waiting_for_the_lock)).scalar_one()) == 0

            await wait_for(none_waiting, timeout=10, what="the stopped command's session to stop waiting")
            assert upgrade.returncode == INTERRUPTED, stderr
            assert stdout == "" and stderr == _stopped_line(database_url) + "\n"
            await holder.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
    finally:
        await engine.dispose()
    assert await applied_revisions(database_url) == frozenset()
