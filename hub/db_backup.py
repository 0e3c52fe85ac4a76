"""`leadhub db backup FILE`: a consistent copy of the SQLite database while the daemon runs.

Copying `leadhub.db` with `cp` while the daemon writes gives a torn file, and without its `-wal` file one that
lacks the latest commits. `VACUUM INTO` reads one snapshot (WAL readers do not block the writer, nor it them)
and writes a compact, self-contained database. It is written under a temporary name, checked, and only then
linked to FILE (renamed, refusing to replace, where the filesystem has no hard links: exFAT, CIFS), so FILE is
either a whole, checked backup or absent; an existing FILE is never overwritten.
PostgreSQL has its own tool for this (`pg_dump`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from leadhub.no_replace import name_without_replacing
from leadhub.private_files import PRIVATE_FILE
from leadhub.store.db import SQLITE_BUSY_TIMEOUT_MS, redacted_url


class BackupError(Exception):
    """Why no backup was written; the message is the whole story (no traceback needed)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Backup:
    source: Path
    target: Path
    size: int
    revisions: tuple[str, ...]


def backup_sqlite(url: str, target: Path) -> Backup:
    source = sqlite_file(url)
    if target.exists():
        raise BackupError(f"{target} exists; a backup never overwrites a file: give a new name")
    if not target.parent.is_dir():
        raise BackupError(f"{target.parent} is not a directory")
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        _vacuum_into(source, partial)
        revisions = _check(partial)
        name_without_replacing(partial, target)  # refuses a FILE created meanwhile
    except FileExistsError:
        raise BackupError(f"{target} was created while the backup ran; it is left as it is") from None
    except sqlite3.Error as exc:  # the database's (damaged), or the copy's (a full disk: `disk I/O error`)
        raise BackupError(f"cannot back up {source} to {target}: {exc}; nothing changed") from None
    except OSError as exc:  # a directory this user cannot write to, a full disk
        raise BackupError(f"cannot write the backup {target}: {os_reason(exc)}; nothing changed") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return Backup(source, target, target.stat().st_size, revisions)


def os_reason(exc: OSError) -> str:
    """An OSError in a line: its reason and the file it names, without the `[Errno N]`."""
    if not exc.strerror:
        return str(exc)
    return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror


def sqlite_file(url: str, *, must_exist: bool = True) -> Path:
    """The file of a SQLite URL; BackupError (exit 2) for PostgreSQL, which has its own tools."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        raise BackupError(
            f"the database {redacted_url(url)} is not SQLite; use PostgreSQL's own tools, e.g. "
            "`pg_dump --format=custom --file=leadhub.dump DATABASE` and `pg_restore`",
            exit_code=2,
        )
    if not parsed.database or parsed.database == ":memory:":
        raise BackupError("the database is in memory; there is no file", exit_code=2)
    source = Path(parsed.database)
    if must_exist and not source.is_file():
        raise BackupError(f"{source}: no such file yet: `leadhub run` or `leadhub db upgrade` creates it")
    return source


def read_only_uri(path: Path) -> str:
    """A URI opening `path` read-only whatever its name holds. In `f"file:{path}"` SQLite ends the path at a `#` or
    `?` and decodes a `%XX` in it: a restore checked and copied another file than the one named, and a backup's
    check opened (and created) an empty file beside it."""
    return f"{path.resolve().as_uri()}?mode=ro"


def _vacuum_into(source: Path, partial: Path) -> None:
    # Created empty first (VACUUM INTO takes an empty file) for this user only, whatever the database's mode: a
    # backup holds every contact and the links' signing key, and a database from an older release may be 0644.
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    connection = sqlite3.connect(source, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
    try:
        connection.execute("VACUUM INTO ?", (str(partial),))
    finally:
        connection.close()
    with open(partial, "rb") as written:  # on disk before FILE names it
        os.fsync(written.fileno())


def _check(partial: Path) -> tuple[str, ...]:
    """The copy's integrity (`quick_check`) and its schema revisions; a copy that fails is not kept."""
    connection = sqlite3.connect(read_only_uri(partial), uri=True)
    try:
        verdict = connection.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            raise BackupError(f"the copy failed its integrity check ({verdict}); nothing was written")
        try:
            rows = connection.execute("SELECT version_num FROM alembic_version").fetchall()
        except sqlite3.OperationalError:
            rows = []
    finally:
        connection.close()
    return tuple(sorted(row[0] for row in rows))
