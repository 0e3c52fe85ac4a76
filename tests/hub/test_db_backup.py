"""`leadhub db backup FILE`: a whole, checked copy of the SQLite database while the daemon writes to it."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import pwd
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leadhub import no_replace
from leadhub.hub.db_backup import BackupError, backup_sqlite
from leadhub.hub.db_restore import restore_sqlite
from leadhub.store.db import MIGRATION_HEADS
from tests.conftest import PG_ADMIN_URL, HubFactory, RunningHub
from tests.helpers import directory_of_another_user, run_leadhub

sqlite_only = pytest.mark.skipif(bool(PG_ADMIN_URL), reason="copies a SQLite file; PostgreSQL has pg_dump")
# Backups of databases the tests make themselves, beside the hub's: none starts from the migrated copy.
pytestmark = pytest.mark.empty_database


def _db(command: str, file: Path, url: str, cwd: Path):  # type: ignore[no-untyped-def]
    """`leadhub db backup|restore FILE` on the database `url`."""
    return run_leadhub("db", command, str(file), cwd=cwd, env={"LEADHUB_DATABASE_URL": url})


@sqlite_only
async def test_a_backup_taken_while_forms_arrive_is_whole_checked_and_usable(
    form_hub: RunningHub, database_url: str, tmp_path: Path
) -> None:
    for n in range(50):
        async with form_hub.session.post(form_hub.url("/hooks/site-form"), json={"phone": f"+7916000{n:04d}"}) as r:
            assert r.status == 202
    await form_hub.wait_items("/api/inquiries", 50)
    accepted = 50
    stop = asyncio.Event()

    async def keep_posting() -> None:
        nonlocal accepted
        while not stop.is_set():
            async with form_hub.session.post(
                form_hub.url("/hooks/site-form"), json={"phone": f"+7916100{accepted:04d}"}
            ) as response:
                accepted += response.status == 202

    writer = asyncio.create_task(keep_posting())  # the daemon writes while the CLI copies
    backups = tmp_path / "backups"
    backups.mkdir()
    target = backups / "leadhub-1.db"
    try:
        done = await asyncio.to_thread(_db, "backup", target, database_url, tmp_path)
    finally:
        stop.set()
        await writer
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"backed up {database_url.removeprefix('sqlite+aiosqlite:///')} to {target}: ")
    assert f"schema {', '.join(sorted(MIGRATION_HEADS))}, integrity checked" in done.stdout
    assert [p.name for p in backups.iterdir()] == ["leadhub-1.db"]  # no partial file left

    copy = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        inquiries = copy.execute("SELECT count(*) FROM inquiry").fetchone()[0]
    finally:
        copy.close()
    # everything committed before the copy began is in it, from the WAL too (which a `cp` of leadhub.db misses)
    assert 50 <= inquiries <= accepted
    assert target.stat().st_mode & 0o777 == 0o600  # whatever the umask and the database's mode
    status = run_leadhub("db", "status", cwd=tmp_path, env={"LEADHUB_DATABASE_URL": f"sqlite+aiosqlite:///{target}"})
    assert status.returncode == 0 and "up to date" in status.stdout

    before = hashlib.sha256(target.read_bytes()).hexdigest()
    again = await asyncio.to_thread(_db, "backup", target, database_url, tmp_path)
    assert again.returncode == 1 and f"{target} exists; a backup never overwrites a file" in again.stderr
    assert hashlib.sha256(target.read_bytes()).hexdigest() == before


@sqlite_only
def test_nothing_to_back_up_or_nowhere_to_put_it_is_one_line(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'none' / 'leadhub.db'}"
    missing = _db("backup", tmp_path / "b.db", url, tmp_path)
    assert missing.returncode == 1 and "none/leadhub.db: no such file yet" in missing.stderr
    assert not (tmp_path / "none").exists() and not (tmp_path / "b.db").exists()
    sqlite3.connect(tmp_path / "real.db").close()
    nowhere = _db("backup", tmp_path / "no-dir" / "b.db", f"sqlite+aiosqlite:///{tmp_path / 'real.db'}", tmp_path)
    assert nowhere.returncode == 1 and "no-dir is not a directory" in nowhere.stderr
    assert "Traceback" not in missing.stderr + nowhere.stderr


async def test_a_postgresql_database_is_pointed_to_pg_dump(database_url: str, tmp_path: Path) -> None:
    """And to pg_restore, with the same exit status 2 (not the 1 of a refused restore)."""
    url = database_url if PG_ADMIN_URL else "postgresql+asyncpg://leadhub:pw@127.0.0.1:5432/leadhub"
    run = await asyncio.to_thread(_db, "backup", tmp_path / "b.db", url, tmp_path)
    assert run.returncode == 2 and "is not SQLite; use PostgreSQL's own tools, e.g. `pg_dump" in run.stderr
    assert ":pw@" not in run.stderr and not (tmp_path / "b.db").exists()
    (tmp_path / "b.db").write_bytes(b"")
    restore = await asyncio.to_thread(_db, "restore", tmp_path / "b.db", url, tmp_path)
    assert restore.returncode == 2 and "`pg_restore`" in restore.stderr and ":pw@" not in restore.stderr


def _inquiries(path: Path) -> int:
    connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return connection.execute("SELECT count(*) FROM inquiry").fetchone()[0]
    finally:
        connection.close()


@sqlite_only
async def test_restore_refuses_a_database_in_use_then_puts_the_backup_in_place_and_keeps_the_old_one(
    make_hub: HubFactory, database_url: str, tmp_path: Path
) -> None:
    form = [{"name": "site-form", "type": "form", "rate_limit": None}]
    hub = await make_hub(form)
    for n in range(5):
        if n == 3:
            backed_up = await asyncio.to_thread(_db, "backup", tmp_path / "three.db", database_url, tmp_path)
            assert backed_up.returncode == 0, backed_up.stderr
        async with hub.session.post(hub.url("/hooks/site-form"), json={"phone": f"+7916200{n:04d}"}) as response:
            assert response.status == 202
        await hub.wait_items("/api/inquiries", n + 1)
    database = Path(database_url.removeprefix("sqlite+aiosqlite:///"))

    in_use = await asyncio.to_thread(_db, "restore", tmp_path / "three.db", database_url, tmp_path)
    assert in_use.returncode == 1 and f"{database} is in use" in in_use.stderr, in_use.stderr
    assert "nothing changed" in in_use.stderr
    assert len((await hub.api("/api/inquiries"))["items"]) == 5
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    junk = await asyncio.to_thread(_db, "restore", tmp_path / "junk.db", database_url, tmp_path)
    assert junk.returncode == 1 and "junk.db is not a SQLite database leadhub can restore" in junk.stderr
    await hub.hub.stop()

    restored = await asyncio.to_thread(_db, "restore", tmp_path / "three.db", database_url, tmp_path)
    assert restored.returncode == 0, restored.stderr
    kept = next(database.parent.glob(f"{database.name}.before-restore-*"))
    assert f"the database it replaced is kept as {kept}" in restored.stdout
    assert _inquiries(database) == 3
    assert _inquiries(kept) == 5  # the commits that were still in its WAL were folded in before it was moved
    leftovers = sorted(p.name for p in database.parent.iterdir() if p.name.startswith(f".{database.name}"))
    assert leftovers == [] and not Path(f"{database}-wal").exists()

    again = await make_hub(form)  # the daemon starts on the restored database and goes on from it
    await again.wait_items("/api/inquiries", 3)
    async with again.session.post(again.url("/hooks/site-form"), json={"phone": "+79163000000"}) as response:
        assert response.status == 202
    await again.wait_items("/api/inquiries", 4)


@sqlite_only
def test_a_backup_from_a_newer_release_is_not_restored(tmp_path: Path) -> None:
    newer = tmp_path / "newer.db"
    connection = sqlite3.connect(newer)
    connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
    connection.execute("INSERT INTO alembic_version VALUES ('0099')")
    connection.commit()
    connection.close()
    url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'leadhub.db'}"
    run = _db("restore", newer, url, tmp_path)
    assert run.returncode == 3 and "database schema 0099 is newer than this release" in run.stderr
    assert not (tmp_path / "data").exists()


@sqlite_only
def test_restore_keeps_the_commits_a_crashed_daemon_left_in_the_wal(tmp_path: Path) -> None:
    """A daemon killed hard leaves commits in `leadhub.db-wal` only; moved aside without them they would be lost."""
    live = tmp_path / "live"
    live.mkdir()
    writer = sqlite3.connect(live / "leadhub.db")
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")  # every commit stays in the WAL
    writer.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
    writer.executemany("INSERT INTO alembic_version VALUES (?)", [(r,) for r in sorted(MIGRATION_HEADS)])
    writer.execute("CREATE TABLE inquiry (id TEXT)")
    writer.executemany("INSERT INTO inquiry VALUES (?)", [(str(n),) for n in range(7)])
    writer.commit()
    crashed = tmp_path / "data"
    crashed.mkdir()
    for suffix in ("", "-wal"):  # the files as a SIGKILL leaves them: the commits are in the WAL only
        (crashed / f"leadhub.db{suffix}").write_bytes((live / f"leadhub.db{suffix}").read_bytes())
    writer.close()
    assert (crashed / "leadhub.db-wal").stat().st_size > 0
    backup = tmp_path / "backup.db"
    copy = sqlite3.connect(backup)
    copy.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
    copy.executemany("INSERT INTO alembic_version VALUES (?)", [(r,) for r in sorted(MIGRATION_HEADS)])
    copy.execute("CREATE TABLE inquiry (id TEXT)")
    copy.commit()
    copy.close()

    run = _db("restore", backup, f"sqlite+aiosqlite:///{crashed / 'leadhub.db'}", tmp_path)
    assert run.returncode == 0, run.stderr
    [kept] = crashed.glob("leadhub.db.before-restore-*")
    assert sorted(p.name for p in crashed.iterdir()) == ["leadhub.db", kept.name]  # no WAL left, of either
    assert _inquiries(kept) == 7 and _inquiries(crashed / "leadhub.db") == 0


def _small_database(path: Path, inquiries: int) -> Path:
    """A SQLite file at this release's schema revisions holding `inquiries` rows (only the tables counted here)."""
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
    connection.executemany("INSERT INTO alembic_version VALUES (?)", [(r,) for r in sorted(MIGRATION_HEADS)])
    connection.execute("CREATE TABLE inquiry (id TEXT)")
    connection.executemany("INSERT INTO inquiry VALUES (?)", [(str(n),) for n in range(inquiries)])
    connection.commit()
    connection.close()
    return path


@sqlite_only
def test_names_with_hash_question_mark_and_percent_are_the_files_named(tmp_path: Path) -> None:
    """SQLite reads `file:NAME?mode=ro` as a URI: a `#` or `?` ended the name there and `%41` became `A`."""
    backups = tmp_path / "backups"
    backups.mkdir()
    source = _small_database(tmp_path / "leadhub.db", 4)
    target = backups / "b#1?%41.db"
    done = _db("backup", target, f"sqlite+aiosqlite:///{source}", tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"schema {', '.join(sorted(MIGRATION_HEADS))}, integrity checked" in done.stdout
    assert [p.name for p in backups.iterdir()] == [target.name]  # the check opened no stray `.b` beside it
    assert _inquiries(target) == 4

    _small_database(backups / "x.db", 1)  # what a name cut at `#` or `?`, or with %41 decoded, would open
    _small_database(backups / "xA.db", 2)
    for name, rows in (("x.db#after", 5), ("x.db?mode=rw", 6), ("x%41.db", 7)):
        database = tmp_path / f"data-{rows}" / "leadhub.db"
        restored = _db("restore", _small_database(backups / name, rows), f"sqlite+aiosqlite:///{database}", tmp_path)
        assert restored.returncode == 0, restored.stderr
        assert _inquiries(database) == rows, name


@sqlite_only
@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_a_restore_run_as_root_leaves_the_database_to_its_owner(tmp_path: Path) -> None:
    """Restored by root, the file was root's: the daemon's user could not open its own database any more."""
    nobody = pwd.getpwnam("nobody")
    data = tmp_path / "data"
    data.mkdir()
    database = _small_database(data / "leadhub.db", 1)
    os.chown(database, nobody.pw_uid, nobody.pw_gid)
    run = _db("restore", _small_database(tmp_path / "backup.db", 2), f"sqlite+aiosqlite:///{database}", tmp_path)
    assert run.returncode == 0, run.stderr
    restored = database.stat()
    assert (restored.st_uid, restored.st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert _inquiries(database) == 2


def _no_hard_links(made_meanwhile: Path | None = None):  # type: ignore[no-untyped-def]
    """os.link as on exFAT: EPERM; first creating `made_meanwhile`, as another writer choosing that name would."""

    def link(source: object, target: object) -> None:
        if made_meanwhile is not None:
            made_meanwhile.write_bytes(b"someone else's")
        raise OSError(errno.EPERM, os.strerror(errno.EPERM), str(source), None, str(target))

    return link


@sqlite_only
@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "check-then-rename"])
def test_a_filesystem_without_hard_links_gets_its_backup_and_keeps_a_file_made_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, renameat2: bool
) -> None:
    """exFAT, FAT and CIFS refuse os.link (EPERM, ENOTSUP): every backup to a USB disk or a share failed."""
    if not renameat2:
        monkeypatch.setattr(no_replace, "_renameat2", None)
    url = f"sqlite+aiosqlite:///{_small_database(tmp_path / 'leadhub.db', 3)}"
    backups = tmp_path / "backups"
    backups.mkdir()
    monkeypatch.setattr(os, "link", _no_hard_links())
    done = backup_sqlite(url, backups / "b.db")
    assert done.revisions == tuple(sorted(MIGRATION_HEADS)) and _inquiries(backups / "b.db") == 3
    assert (backups / "b.db").stat().st_mode & 0o777 == 0o600

    monkeypatch.setattr(os, "link", _no_hard_links(made_meanwhile=backups / "c.db"))
    with pytest.raises(BackupError, match=r"c\.db was created while the backup ran; it is left as it is"):
        backup_sqlite(url, backups / "c.db")
    assert (backups / "c.db").read_bytes() == b"someone else's"
    assert sorted(p.name for p in backups.iterdir()) == ["b.db", "c.db"]  # no partial file left


@sqlite_only
def test_a_backup_or_restore_that_cannot_write_says_so_in_one_line(tmp_path: Path) -> None:
    """Tests run as root: /sys is what no user can write to (a read-only mount, or no files but the kernel's)."""
    url = f"sqlite+aiosqlite:///{_small_database(tmp_path / 'leadhub.db', 1)}"
    backup = _db("backup", Path("/sys/leadhub-backup.db"), url, tmp_path)
    assert backup.returncode == 1, backup.stderr
    assert backup.stderr.startswith("leadhub: cannot write the backup /sys/leadhub-backup.db: ")
    assert backup.stderr.endswith("; nothing changed\n") and len(backup.stderr.splitlines()) == 1, backup.stderr
    restore = _db("restore", tmp_path / "leadhub.db", "sqlite+aiosqlite:////sys/leadhub/leadhub.db", tmp_path)
    assert restore.returncode == 1, restore.stderr
    assert restore.stderr.startswith(f"leadhub: cannot restore {tmp_path / 'leadhub.db'} to /sys/leadhub/leadhub.db:")
    assert restore.stderr.endswith("; nothing changed\n") and len(restore.stderr.splitlines()) == 1, restore.stderr


@sqlite_only
def test_a_restore_onto_a_new_machine_makes_the_data_private_whatever_the_umask(tmp_path: Path) -> None:
    """With no database to take the mode from, the backup's was taken (0644, 0755 from exFAT), the directory 0755."""
    backup = _small_database(tmp_path / "backup.db", 2)
    backup.chmod(0o644)
    database = tmp_path / "srv" / "data" / "leadhub.db"
    umask = os.umask(0o022)
    try:
        run = _db("restore", backup, f"sqlite+aiosqlite:///{database}", tmp_path)
    finally:
        os.umask(umask)
    assert run.returncode == 0, run.stderr
    assert database.parent.stat().st_mode & 0o777 == 0o700
    assert database.stat().st_mode & 0o777 == 0o600
    assert _inquiries(database) == 2


@sqlite_only
def test_a_wal_left_beside_a_removed_database_is_not_read_into_the_restored_one(tmp_path: Path) -> None:
    """A daemon killed hard leaves `leadhub.db-wal`; an admin who then removes `leadhub.db` and restores got a
    restored file SQLite read that WAL into: `database disk image is malformed`, or another database's rows."""
    data = tmp_path / "data"
    data.mkdir()
    writer = sqlite3.connect(_small_database(data / "leadhub.db", 0))
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")  # every commit stays in the WAL
    writer.execute("CREATE TABLE scratch (n INTEGER)")
    writer.executemany("INSERT INTO inquiry VALUES (?)", [(str(n),) for n in range(300)])
    writer.commit()
    crashed = {suffix: (data / f"leadhub.db{suffix}").read_bytes() for suffix in ("-wal", "-shm")}
    writer.close()
    (data / "leadhub.db").unlink()
    for suffix, content in crashed.items():  # as a SIGKILL leaves them: the database's commits in its WAL
        (data / f"leadhub.db{suffix}").write_bytes(content)
    backup = _small_database(tmp_path / "backup.db", 2)

    run = _db("restore", backup, f"sqlite+aiosqlite:///{data / 'leadhub.db'}", tmp_path)
    assert run.returncode == 0, run.stderr
    [kept] = data.glob("leadhub.db-wal.before-restore-*")
    assert f"a WAL left beside no database is kept as {kept}" in run.stdout
    assert kept.read_bytes() == crashed["-wal"]
    assert sorted(p.name for p in data.iterdir()) == ["leadhub.db", kept.name]
    restored = sqlite3.connect(data / "leadhub.db")
    try:
        assert restored.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert restored.execute("SELECT count(*) FROM inquiry").fetchone()[0] == 2
    finally:
        restored.close()


@sqlite_only
def test_a_database_named_by_a_symlink_is_restored_where_the_link_points(tmp_path: Path) -> None:
    """`leadhub.db` a symlink to a data volume: the restore renamed the link away and put a plain file in its place,
    so the daemon left the volume for the link's disk and the database 'kept' was only the link."""
    volume = tmp_path / "volume"
    volume.mkdir()
    real = _small_database(volume / "leadhub.db", 5)
    config = tmp_path / "etc"
    config.mkdir()
    (config / "leadhub.db").symlink_to(real)

    run = _db(
        "restore", _small_database(tmp_path / "backup.db", 2), f"sqlite+aiosqlite:///{config / 'leadhub.db'}", tmp_path
    )
    assert run.returncode == 0, run.stderr
    assert (config / "leadhub.db").is_symlink() and (config / "leadhub.db").resolve() == real.resolve()
    assert _inquiries(real) == 2
    [kept] = volume.glob("leadhub.db.before-restore-*")
    assert not kept.is_symlink() and _inquiries(kept) == 5
    assert f"the database it replaced is kept as {kept.resolve()}" in run.stdout
    assert sorted(p.name for p in config.iterdir()) == ["leadhub.db"]


@sqlite_only
def test_a_symlink_into_a_directory_that_is_not_there_is_refused(tmp_path: Path) -> None:
    """`leadhub.db` a symlink into a volume not mounted yet: the restore made the volume's directory on the disk
    below and put the data there, where the volume hid it once mounted."""
    mount_point = tmp_path / "mnt" / "data"
    config = tmp_path / "etc"
    config.mkdir()
    (config / "leadhub.db").symlink_to(mount_point / "leadhub.db")

    run = _db(
        "restore", _small_database(tmp_path / "backup.db", 2), f"sqlite+aiosqlite:///{config / 'leadhub.db'}", tmp_path
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"whose directory {mount_point} does not exist (a volume not mounted?); nothing changed" in run.stderr
    assert not (tmp_path / "mnt").exists()
    assert (config / "leadhub.db").is_symlink()


@sqlite_only
def test_a_restore_interrupted_while_it_swaps_the_files_leaves_a_database_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replaced database was renamed away, then the backup renamed in: a Ctrl-C (or a crash) between the two
    left no `leadhub.db`, and the next `leadhub run` created an empty one and went on with it."""
    data = tmp_path / "data"
    data.mkdir()
    database = _small_database(data / "leadhub.db", 5)
    backup = _small_database(tmp_path / "backup.db", 2)

    def interrupted_after(operation):  # type: ignore[no-untyped-def]
        def step(source: object, target: object) -> None:
            operation(source, target)
            if Path(os.fspath(source)) == database:  # the replaced database given its kept name
                raise KeyboardInterrupt

        return step

    for name in ("rename", "replace", "link"):
        monkeypatch.setattr(os, name, interrupted_after(getattr(os, name)))
    with pytest.raises(KeyboardInterrupt):
        restore_sqlite(f"sqlite+aiosqlite:///{database}", backup)
    monkeypatch.undo()
    assert database.is_file() and _inquiries(database) == 5  # as it was: the restore had not happened yet

    again = restore_sqlite(f"sqlite+aiosqlite:///{database}", backup)  # and it can be run again
    assert _inquiries(database) == 2 and again.kept is not None and _inquiries(again.kept) == 5


@sqlite_only
def test_a_restore_on_a_filesystem_without_hard_links_swaps_by_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    database = _small_database(data / "leadhub.db", 5)
    monkeypatch.setattr(os, "link", _no_hard_links())
    done = restore_sqlite(f"sqlite+aiosqlite:///{database}", _small_database(tmp_path / "backup.db", 2))
    assert _inquiries(database) == 2 and done.kept is not None and _inquiries(done.kept) == 5


@sqlite_only
@pytest.mark.parametrize("damage", ["not a database", "cut short"])
def test_a_damaged_database_is_replaced_and_kept_with_its_wal(tmp_path: Path, damage: str) -> None:
    """A damaged database is what a restore is for, yet SQLite could not lock it to check that it was unused: the
    restore failed with 'cannot copy backup.db beside leadhub.db: file is not a database' (blaming the backup)."""
    data = tmp_path / "data"
    data.mkdir()
    whole = _small_database(tmp_path / "whole.db", 300).read_bytes()
    damaged = b"not a database " * 2000 if damage == "not a database" else whole[: len(whole) // 2]
    (data / "leadhub.db").write_bytes(damaged)
    (data / "leadhub.db-wal").write_bytes(b"its last commits")  # what a WAL of the damaged file would hold
    (data / "leadhub.db-shm").write_bytes(b"\0" * 32768)

    run = _db(
        "restore", _small_database(tmp_path / "backup.db", 2), f"sqlite+aiosqlite:///{data / 'leadhub.db'}", tmp_path
    )
    assert run.returncode == 0, run.stderr
    [kept] = data.glob("leadhub.db.before-restore-*[0-9Z]")
    assert f"the database it replaced is kept as {kept}" in run.stdout
    assert kept.read_bytes() == damaged
    assert Path(f"{kept}-wal").read_bytes() == b"its last commits"  # beside the file it belongs to
    assert sorted(p.name for p in data.iterdir()) == ["leadhub.db", kept.name, f"{kept.name}-wal"]
    assert _inquiries(data / "leadhub.db") == 2


@sqlite_only
def test_a_damaged_database_that_a_process_has_open_is_not_replaced(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    database = _small_database(data / "leadhub.db", 3)
    holder = subprocess.Popen(  # a daemon's connection: in WAL mode its shared lock lasts as long as it is open
        [sys.executable, "-c", HOLDER, str(database)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        with open(database, "r+b") as file:  # damaged under it: the header no longer says SQLite
            file.write(b"\0" * 16)
        before = database.read_bytes()
        run = _db("restore", _small_database(tmp_path / "backup.db", 2), f"sqlite+aiosqlite:///{database}", tmp_path)
    finally:
        holder.communicate("")
    assert run.returncode == 1, run.stderr
    assert f"{database} is in use (another process holds a lock on it)" in run.stderr
    assert "nothing changed" in run.stderr
    assert database.read_bytes() == before
    assert not list(data.glob("*before-restore*"))


HOLDER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1])
connection.execute("PRAGMA journal_mode=WAL")
connection.execute("SELECT count(*) FROM inquiry").fetchone()
print("open", flush=True)
sys.stdin.read()
"""


def _files_up_to(size: int):  # type: ignore[no-untyped-def]
    """A child's files limited to `size` bytes: its writes beyond fail as on a full disk (EFBIG, SIGXFSZ ignored)."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


@sqlite_only
def test_a_backup_onto_a_full_disk_says_so_in_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    """README: a full disk is one line ending `nothing changed`; the copy's error said only `cannot back up
    leadhub.db: disk I/O error` (or `database or disk is full`), naming the database, not the backup."""
    source = _small_database(tmp_path / "leadhub.db", 2000)
    backups = tmp_path / "backups"
    backups.mkdir()
    target = backups / "b.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADHUB_")}
    run = subprocess.run(
        [sys.executable, "-m", "leadhub.hub", "db", "backup", str(target)],
        env={**env, "LEADHUB_DATABASE_URL": f"sqlite+aiosqlite:///{source}"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_files_up_to(8192),
        check=False,
    )
    assert run.returncode == 1, run.stderr
    assert run.stderr.startswith(f"leadhub: cannot back up {source} to {target}: "), run.stderr
    assert run.stderr.endswith("; nothing changed\n") and len(run.stderr.splitlines()) == 1, run.stderr
    assert list(backups.iterdir()) == []


@sqlite_only
@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_a_restore_run_as_root_onto_a_new_machine_leaves_the_data_to_the_owner_of_its_directory(
    tmp_path: Path,
) -> None:
    """`sudo leadhub db restore` with no database yet made `data/` and `leadhub.db` root's (0700, 0600): the daemon's
    user, who owns the directory leadhub runs in, could not open its database."""
    home, uid, gid = directory_of_another_user(tmp_path)
    database = home / "data" / "leadhub.db"
    run = _db("restore", _small_database(tmp_path / "backup.db", 2), f"sqlite+aiosqlite:///{database}", tmp_path)
    assert run.returncode == 0, run.stderr
    for made in (database.parent, database):
        assert (made.stat().st_uid, made.stat().st_gid) == (uid, gid), made
    assert database.parent.stat().st_mode & 0o777 == 0o700 and database.stat().st_mode & 0o777 == 0o600
    assert _inquiries(database) == 2


LOCKER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")  # a rollback-journal database: no reader gets in until it ends
print("locked", flush=True)
sys.stdin.read()
"""


def _ignoring(number: signal.Signals | None):  # type: ignore[no-untyped-def]
    """A child started with `number` ignored, as `nohup` starts a command with SIGHUP ignored (None: none)."""

    def ignore() -> None:
        if number is not None:
            signal.signal(number, signal.SIG_IGN)

    return ignore


def _backup_signalled(tmp_path: Path, number: signal.Signals, *, ignored: bool) -> tuple[int, list[str]]:
    """`db backup` sent `number` while its copy waits for a lock (after the partial file is made), then let go on;
    its exit status and the files in the backup directory. `ignored`: started with the signal ignored (`nohup`)."""
    source = _small_database(tmp_path / "leadhub.db", 3)  # not WAL: an exclusive lock keeps the copy waiting
    backups = tmp_path / "backups"
    backups.mkdir()
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(source)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline() == "locked\n"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEADHUB_")}
        backup = subprocess.Popen(
            [sys.executable, "-m", "leadhub.hub", "db", "backup", str(backups / "b.db")],
            env={**env, "LEADHUB_DATABASE_URL": f"sqlite+aiosqlite:///{source}"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_ignoring(number if ignored else None),  # noqa: PLW1509 - as nohup starts it
        )
        deadline = time.monotonic() + 30
        while not list(backups.iterdir()):  # the partial file: the copy has begun and waits for the lock
            assert time.monotonic() < deadline and backup.poll() is None
            time.sleep(0.01)  # noqa: sleep-ok - polls for a file another process creates, under a deadline
        backup.send_signal(number)
    finally:
        locker.communicate("")
    backup.communicate(timeout=30)
    return backup.returncode, sorted(p.name for p in backups.iterdir())


@sqlite_only
def test_a_backup_stopped_by_sigterm_leaves_no_partial_file(tmp_path: Path) -> None:
    """`timeout 1h leadhub db backup` from cron, a service manager: SIGTERM ended Python without its clean-up, and
    each such run left a hidden `.FILE.partial-PID` as large as the database beside the backups."""
    returncode, files = _backup_signalled(tmp_path, signal.SIGTERM, ignored=False)
    assert returncode != 0 and files == []


@sqlite_only
def test_a_backup_run_under_nohup_is_not_stopped_by_a_hangup(tmp_path: Path) -> None:
    returncode, files = _backup_signalled(tmp_path, signal.SIGHUP, ignored=True)
    assert returncode == 0 and files == ["b.db"]


@sqlite_only
def test_a_restore_interrupted_after_moving_a_damaged_databases_wal_keeps_the_two_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The damaged database's WAL was renamed to go with the kept name before that name existed: a Ctrl-C there
    left the WAL beside no database, parted from the file it belongs to."""
    data = tmp_path / "data"
    data.mkdir()
    database = data / "leadhub.db"
    database.write_bytes(b"not a database " * 2000)
    wal = data / "leadhub.db-wal"
    wal.write_bytes(b"its last commits")
    rename = os.rename

    def interrupted_after_the_wal(source: object, target: object) -> None:
        rename(source, target)  # type: ignore[arg-type]
        if Path(os.fspath(source)) == wal:  # type: ignore[arg-type]
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "rename", interrupted_after_the_wal)
    with pytest.raises(KeyboardInterrupt):
        restore_sqlite(f"sqlite+aiosqlite:///{database}", _small_database(tmp_path / "backup.db", 2))
    monkeypatch.undo()
    pairs = [(p, Path(f"{p}-wal")) for p in data.iterdir() if Path(f"{p}-wal").exists()]
    assert [(file.read_bytes()[:15], wal_file.read_bytes()) for file, wal_file in pairs] == [
        (b"not a database ", b"its last commits")
    ]
