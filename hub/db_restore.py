"""`leadhub db restore BACKUP`: put a backup in place of the SQLite database, safely, with the daemon stopped.

By hand this goes wrong in quiet ways: a copy over the file of a running daemon, a stale `-wal` file left
beside the restored one, a file that is no backup at all, or the only copy of the current data overwritten.
Here the backup is checked first (a SQLite database, intact, with a schema this release knows); the database
is refused while any process has it open (an exclusive lock in WAL mode needs every other connection closed);
its WAL is folded in, and it is kept beside the restored one as `<name>.before-restore-<time>`. A `-wal` with no
database beside it (a daemon killed hard, then `leadhub.db` removed by hand) is moved aside too: SQLite would read
its pages into the restored file.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from leadhub.hub.db_backup import BackupError, os_reason, read_only_uri, sqlite_file
from leadhub.hub.db_exclusive import lock_unused
from leadhub.hub.exit_codes import SCHEMA_NEWER
from leadhub.no_replace import NO_HARD_LINKS
from leadhub.private_files import PRIVATE_FILE, make_private_dir, owner_of_nearest_directory
from leadhub.store.db import KNOWN_REVISIONS, newer_schema_message


@dataclass(frozen=True)
class Restore:
    database: Path
    revisions: tuple[str, ...]
    kept: Path | None  # the database it replaced
    kept_wal: Path | None = None  # a WAL found beside no database, moved aside


def restore_sqlite(url: str, backup: Path) -> Restore:
    database = _linked_file(sqlite_file(url, must_exist=False))
    revisions = _checked_backup(backup)
    incoming = database.with_name(f".{database.name}.restoring-{os.getpid()}")
    try:
        kept, kept_wal = _put_in_place(backup, database, incoming)
    except OSError as exc:  # a directory this user cannot write to, a disk that filled up
        raise BackupError(f"cannot restore {backup} to {database}: {os_reason(exc)}; nothing changed") from None
    except sqlite3.Error as exc:  # the copy's, a full disk say
        raise BackupError(f"cannot copy {backup} beside {database}: {exc}; nothing changed") from None
    finally:
        incoming.unlink(missing_ok=True)
    return Restore(database, revisions, kept, kept_wal)


def _linked_file(database: Path) -> Path:
    """The file a symlinked database name points to (a data volume, say): renaming the link itself put the restored
    database in the link's directory and kept only the link as the replaced database.

    A link into a directory that is not there (a volume not mounted yet) is refused: the restore made that directory
    on the disk below the mount point and put the data there, for the volume to hide once mounted.
    """
    if not database.is_symlink():
        return database
    target = database.resolve()
    if not target.parent.is_dir():
        raise BackupError(
            f"{database} is a symlink to {target}, whose directory {target.parent} does not exist "
            "(a volume not mounted?); nothing changed"
        )
    return target


def _put_in_place(backup: Path, database: Path, incoming: Path) -> tuple[Path | None, Path | None]:
    """The backup copied to `incoming`, then renamed to `database`; the names the replaced database, or a WAL found
    beside no database, are kept under. When it raises, the database is as it was."""
    owner = owner_of_nearest_directory(database.parent)
    made = make_private_dir(database.parent)  # a new machine's: this user's only, as `leadhub run` makes it
    replaced = _stat(database)
    # The replaced database's permissions; with none, this user's only: the backup's own (0644 after a copy with
    # the umask's, 0755 from exFAT) would open every contact to the other local users.
    mode = replaced.st_mode & 0o777 if replaced is not None else PRIVATE_FILE
    _copy(backup, incoming, mode)
    if replaced is not None and replaced.st_uid != os.geteuid():
        _owned_as(incoming, replaced, database)
    elif replaced is None and os.geteuid() == 0 and owner.st_uid != 0:
        # Root restoring onto a new machine: the daemon's user owns the directory it runs in, not root.
        os.chown(incoming, owner.st_uid, owner.st_gid)
        if made:
            os.chown(database.parent, owner.st_uid, owner.st_gid)
    stamp = f"before-restore-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    if not database.exists():
        kept_wal = _orphan_journal_aside(database, stamp)
        os.rename(incoming, database)
        return None, kept_wal
    kept = _free_name(database.with_name(f"{database.name}.{stamp}"))
    holder = lock_unused(database)
    try:  # under the exclusive lock: no other process reads or writes it meanwhile
        _swap(incoming, database, kept)
    finally:
        holder.close()
    return kept, None


def _journal_with(database: Path, kept: Path) -> None:
    """The database's -wal renamed to go with its kept name, its -shm (an index SQLite rebuilds) removed: beside the
    restored file SQLite would read them as its own. A whole database's WAL is folded in already; a damaged one's
    may hold its last commits."""
    Path(f"{database}-shm").unlink(missing_ok=True)
    wal = Path(f"{database}-wal")
    if wal.exists():
        os.rename(wal, f"{kept}-wal")


def _swap(incoming: Path, database: Path, kept: Path) -> None:
    """`database` named `kept` (its WAL going with it) and `incoming` named `database`, with no moment when
    `database` is missing, nor its WAL beside no file: after a Ctrl-C or a crash between two renames there was no
    database, and the next `leadhub run` made an empty one. A hard link keeps the old file under both names until
    one rename puts the backup in its place."""
    try:
        os.link(database, kept)
    except OSError as exc:
        if exc.errno not in NO_HARD_LINKS:
            raise
        _swap_by_renames(incoming, database, kept)
        return
    try:
        _journal_with(database, kept)
        os.replace(incoming, database)
    except OSError:
        _journal_with(kept, database)  # the database is as it was
        kept.unlink()
        raise


def _swap_by_renames(incoming: Path, database: Path, kept: Path) -> None:
    """Where the filesystem has no hard links: two renames, undone when the second fails."""
    os.rename(database, kept)
    try:
        _journal_with(database, kept)
        os.rename(incoming, database)
    except OSError:
        _journal_with(kept, database)
        os.rename(kept, database)  # back where it was
        raise


def _orphan_journal_aside(database: Path, stamp: str) -> Path | None:
    """A `-wal` left where no database is moved aside, its `-shm` removed (an index SQLite rebuilds from the WAL);
    the name the WAL is kept under. The WAL holds another database's last commits: left in place, opening the
    restored file reads its pages as the restored database's (other rows, or `database disk image is malformed`)."""
    wal, shm = Path(f"{database}-wal"), Path(f"{database}-shm")
    kept = None
    if wal.exists():
        kept = _free_name(wal.with_name(f"{wal.name}.{stamp}"))
        os.rename(wal, kept)
    shm.unlink(missing_ok=True)
    return kept


def _checked_backup(backup: Path) -> tuple[str, ...]:
    if not backup.is_file():
        raise BackupError(f"{backup}: no such file")
    try:
        connection = sqlite3.connect(read_only_uri(backup), uri=True)
        try:
            verdict = connection.execute("PRAGMA quick_check").fetchone()[0]
            has_schema = connection.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
            ).fetchone()
            rows = connection.execute("SELECT version_num FROM alembic_version").fetchall() if has_schema else []
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{backup} is not a SQLite database leadhub can restore ({exc}); nothing changed") from None
    if verdict != "ok":
        raise BackupError(f"{backup} fails its integrity check ({verdict}); nothing changed")
    revisions = frozenset(row[0] for row in rows)
    if not revisions:
        raise BackupError(f"{backup} holds no leadhub tables; nothing changed")
    if unknown := revisions - KNOWN_REVISIONS:
        raise BackupError(f"{backup}: {newer_schema_message(unknown)}; nothing changed", exit_code=SCHEMA_NEWER)
    return tuple(sorted(revisions))


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def _owned_as(incoming: Path, replaced: os.stat_result, database: Path) -> None:
    """The restored file given the owner and group of the database it replaces: restored by root, it was root's and
    the daemon's user could not open it."""
    try:
        os.chown(incoming, replaced.st_uid, replaced.st_gid)
    except PermissionError:
        raise BackupError(
            f"{database} belongs to user id {replaced.st_uid} and only root can give the restored file to another "
            "user: restore as that user (or as root); nothing changed"
        ) from None


def _free_name(path: Path) -> Path:
    """`path`, or `path-2`, `path-3`...: a second restore within the same second keeps both replaced databases."""
    candidate, n = path, 1
    while candidate.exists() or Path(f"{candidate}-wal").exists():  # the WAL that goes with it is not replaced
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def _copy(backup: Path, incoming: Path, mode: int) -> None:
    """SQLite's backup API reads the backup as one consistent database (its own WAL too, if it has one), into a
    file made with `mode` (the permissions of the database it replaces: a restore never opens it to more users)."""
    os.close(os.open(incoming, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
    source = sqlite3.connect(read_only_uri(backup), uri=True)
    target = sqlite3.connect(incoming)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    with open(incoming, "rb") as written:
        os.fsync(written.fileno())
